use std::time::Duration;

use crate::ClientError;

/// How long a reconnect waits: 100 ms, doubling to 5 s while the server
/// stays down, back to 100 ms once a connection is up.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// How long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    pub fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Which servers one request tries: the healthy ones take turns (request
/// `n` starts at server `n`), and a request whose connection fails is tried
/// once more on another server. The server's own answer, even an error, is
/// final: a signature is never asked twice for a reason the server gave.
#[derive(Debug)]
pub struct Retry {
    n: usize,
    servers: usize,
    attempt: usize,
    tried: Option<usize>,
    last_error: Option<ClientError>,
}

impl Retry {
    /// Tries allowed per request.
    pub const ATTEMPTS: usize = 2;

    pub fn new(n: usize, servers: usize) -> Retry {
        Retry {
            n,
            servers,
            attempt: 0,
            tried: None,
            last_error: None,
        }
    }

    /// The next server to try, among those `usable` says can take a request
    /// now; `None` when the request has had its tries or none is usable.
    pub fn next_server(&mut self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.attempt >= Self::ATTEMPTS || self.servers == 0 {
            return None;
        }
        let pick = (0..self.servers)
            .map(|i| (self.n + i + self.attempt) % self.servers)
            .find(|&i| Some(i) != self.tried && usable(i));
        self.attempt += 1;
        self.tried = pick.or(self.tried);
        pick
    }

    /// The try on the last server returned failed with `error`.
    pub fn failed(&mut self, error: ClientError) {
        self.last_error = Some(error);
    }

    /// Why the request failed in the end.
    pub fn error(self) -> ClientError {
        self.last_error
            .unwrap_or_else(|| ClientError::Closed("no key server is reachable".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_seconds_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..8).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }

    #[test]
    fn requests_take_turns_and_a_failed_one_moves_to_another_server() {
        let all = |_| true;
        assert_eq!(Retry::new(0, 3).next_server(all), Some(0));
        assert_eq!(Retry::new(4, 3).next_server(all), Some(1));
        let mut r = Retry::new(0, 3);
        assert_eq!(r.next_server(all), Some(0));
        r.failed(ClientError::Closed("reset".into()));
        assert_eq!(r.next_server(all), Some(1), "the next one, not the server that failed");
        assert_eq!(r.next_server(all), None, "two tries at most");
        assert_eq!(r.error().to_string(), "connection closed: reset");
    }

    #[test]
    fn only_usable_servers_are_tried() {
        let mut r = Retry::new(0, 3);
        assert_eq!(r.next_server(|i| i == 1), Some(1));
        assert_eq!(r.next_server(|i| i == 1), None, "the only usable one failed already");
        let mut none = Retry::new(5, 2);
        assert_eq!(none.next_server(|_| false), None);
        assert_eq!(
            none.error().to_string(),
            "connection closed: no key server is reachable"
        );
    }
}

impl Retry {
    /// Run one request under this policy. `call(server)` tries it on that
    /// server (the driver picks a connection and bounds the wait), or gives
    /// `None` when the server has no connection up. Runtime-free: the
    /// drivers' futures do the waiting.
    pub async fn run<F>(
        mut self,
        servers: &[std::sync::Arc<super::ServerState>],
        mut call: impl FnMut(usize) -> Option<F>,
    ) -> Result<keyless_protocol::Message, ClientError>
    where
        F: std::future::Future<Output = Result<keyless_protocol::Message, ClientError>>,
    {
        while let Some(index) = self.next_server(|i| servers[i].healthy()) {
            let server = &servers[index];
            let Some(answer) = call(index) else {
                self.failed(ClientError::Closed(format!("{}: no connection up", server.addr)));
                continue;
            };
            match answer.await {
                Ok(message) => {
                    server.record_answer(&message);
                    return Ok(message);
                }
                Err(e) => {
                    server.record_failure(&e);
                    self.failed(e);
                }
            }
        }
        Err(self.error())
    }
}

/// One connection slot's life: connect, prove the connection with a ping,
/// keep it while health pings pass, and back off while the server is down.
/// The driver does the I/O and asks this what follows.
#[derive(Debug)]
pub struct Supervision {
    server: std::sync::Arc<super::ServerState>,
    backoff: Backoff,
    down_logged: bool,
}

impl Supervision {
    pub fn new(server: std::sync::Arc<super::ServerState>) -> Supervision {
        Supervision {
            server,
            backoff: Backoff::new(),
            down_logged: false,
        }
    }

    pub fn server(&self) -> &super::ServerState {
        &self.server
    }

    /// Connecting, or the first ping, failed: how long to wait before the
    /// next attempt. Logged once per outage, not once per attempt.
    pub fn attempt_failed(&mut self, error: &dyn std::fmt::Display) -> Duration {
        if !self.down_logged && !self.server.healthy() {
            tracing::warn!("key server {}: {error}; retrying", self.server.addr);
            self.down_logged = true;
        }
        self.backoff.failed()
    }

    /// The connection answered its first ping: it takes requests now.
    pub fn up(&mut self) {
        self.backoff.succeeded();
        self.down_logged = false;
        self.server.link_up();
    }

    /// A connection that was up failed a health check or closed.
    pub fn down(&mut self, reason: &str) {
        self.server.link_down(reason);
    }
}
