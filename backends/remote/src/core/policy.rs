use std::time::Duration;

use keyless_protocol::{ErrorCode, Message, Ski};

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

/// Which servers one request tries, and when it stops.
///
/// - Healthy servers take turns (request `n` starts at server `n`).
/// - A server known to lack the request's key ([`ServerState::lacks`]) is
///   passed over while another can be asked; when every one lacks it, one
///   is asked anyway (keys come and go with reloads) and its answer stands.
/// - A key-not-found answer moves the request on to a server not yet asked
///   that may hold the key (key servers may hold different keys); the last
///   such answer is the request's when none has it.
/// - A request whose connection fails is tried once more elsewhere.
/// - Any other answer from the server, even an error, is final: a
///   signature is never asked twice for a reason the server gave.
///
/// [`ServerState::lacks`]: super::ServerState::lacks
#[derive(Debug)]
pub struct Retry {
    n: usize,
    tried: Vec<bool>,
    connection_failures: usize,
    /// A server answered key-not-found.
    not_found: bool,
    last_error: Option<ClientError>,
}

impl Retry {
    /// Connection failures a request survives, plus one.
    pub const ATTEMPTS: usize = 2;

    pub fn new(n: usize, servers: usize) -> Retry {
        Retry {
            n,
            tried: vec![false; servers],
            connection_failures: 0,
            not_found: false,
            last_error: None,
        }
    }

    /// The next server to ask: `healthy(i)` says server `i` can take a
    /// request now, `lacks(i)` that it is known not to hold the key. `None`
    /// when the request has had its tries or no server is left.
    pub fn next_server(&mut self, healthy: impl Fn(usize) -> bool, lacks: impl Fn(usize) -> bool) -> Option<usize> {
        if self.connection_failures >= Self::ATTEMPTS {
            return None;
        }
        let servers = self.tried.len();
        let untried: Vec<usize> = (0..servers).filter(|&i| !self.tried[i] && healthy(i)).collect();
        // Turns among the servers that may hold the key, so that those
        // which do share its requests evenly.
        let candidates: Vec<usize> = untried.iter().copied().filter(|&i| !lacks(i)).collect();
        let turn = |among: &[usize]| (!among.is_empty()).then(|| among[self.n % among.len()]);
        let pick = turn(&candidates).or_else(|| {
            // Every server left lacks the key: ask one, unless one said so.
            (!self.not_found).then(|| turn(&untried)).flatten()
        })?;
        self.tried[pick] = true;
        Some(pick)
    }

    /// The last server asked does not hold the key.
    pub fn key_not_found(&mut self) {
        self.not_found = true;
    }

    /// The try on the last server returned failed with `error`.
    pub fn failed(&mut self, error: ClientError) {
        self.connection_failures += 1;
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
        let none = |_| false;
        assert_eq!(Retry::new(0, 3).next_server(all, none), Some(0));
        assert_eq!(Retry::new(4, 3).next_server(all, none), Some(1));
        let mut r = Retry::new(0, 3);
        assert_eq!(r.next_server(all, none), Some(0));
        r.failed(ClientError::Closed("reset".into()));
        assert_eq!(
            r.next_server(all, none),
            Some(1),
            "the next one, not the server that failed"
        );
        r.failed(ClientError::Closed("reset".into()));
        assert_eq!(r.next_server(all, none), None, "two connection failures at most");
        assert_eq!(r.error().to_string(), "connection closed: reset");
    }

    #[test]
    fn only_usable_servers_are_tried() {
        let none = |_| false;
        let mut r = Retry::new(0, 3);
        assert_eq!(r.next_server(|i| i == 1, none), Some(1));
        assert_eq!(
            r.next_server(|i| i == 1, none),
            None,
            "the only usable one was asked already"
        );
        let mut down = Retry::new(5, 2);
        assert_eq!(down.next_server(|_| false, none), None);
        assert_eq!(
            down.error().to_string(),
            "connection closed: no key server is reachable"
        );
    }

    #[test]
    fn servers_known_to_lack_the_key_are_passed_over_but_one_is_asked_when_all_lack_it() {
        let all = |_| true;
        let mut r = Retry::new(0, 3);
        assert_eq!(r.next_server(all, |i| i != 2), Some(2), "the one that may hold it");
        // Those that hold it take turns evenly, whoever lacks it.
        let turns: Vec<usize> = (0..6)
            .map(|n| Retry::new(n, 3).next_server(all, |i| i == 1).unwrap())
            .collect();
        assert_eq!(turns, [0, 2, 0, 2, 0, 2]);
        let mut r = Retry::new(1, 3);
        assert_eq!(r.next_server(all, |_| true), Some(1), "all lack it: the turn's server");
        r.key_not_found();
        assert_eq!(r.next_server(all, |_| true), None, "and its answer stands");
        // Key-not-found from the first moves on to those not known to lack it.
        let mut r = Retry::new(0, 3);
        assert_eq!(r.next_server(all, |_| false), Some(0));
        r.key_not_found();
        assert_eq!(r.next_server(all, |i| i == 0), Some(1));
        r.key_not_found();
        assert_eq!(r.next_server(all, |i| i <= 1), Some(2));
        r.key_not_found();
        assert_eq!(r.next_server(all, |_| true), None, "every server was asked");
    }
}

impl Retry {
    /// Run one request under this policy. `call(server)` tries it on that
    /// server (the driver picks a connection and bounds the wait), or gives
    /// `None` when the server has no connection up. `ski` is the request's
    /// key, if it names one. Runtime-free: the drivers' futures do the
    /// waiting.
    pub async fn run<F>(
        mut self,
        ski: Option<&Ski>,
        servers: &[std::sync::Arc<super::ServerState>],
        mut call: impl FnMut(usize) -> Option<F>,
    ) -> Result<Message, ClientError>
    where
        F: std::future::Future<Output = Result<Message, ClientError>>,
    {
        let now = std::time::Instant::now();
        let lacks = |i: usize| ski.is_some_and(|k| servers[i].lacks(k, now));
        // A server gone from the DNS answer is asked only while none of
        // those in it is up (its connections close once one is).
        let current_up = servers.iter().any(|s| !s.retired() && s.healthy());
        let usable = |i: usize| servers[i].healthy() && !(current_up && servers[i].retired());
        let mut not_found: Option<Message> = None;
        while let Some(index) = self.next_server(usable, lacks) {
            let server = &servers[index];
            let Some(answer) = call(index) else {
                self.failed(ClientError::Closed(format!("{}: no connection up", server.addr)));
                continue;
            };
            match answer.await {
                Ok(message) => {
                    server.record_answer(&message);
                    match (ski, message.error_code()) {
                        (Some(ski), Some(Ok(ErrorCode::KeyNotFound))) => {
                            server.learned_missing(*ski, now);
                            self.key_not_found();
                            not_found = Some(message);
                        }
                        _ => return Ok(message),
                    }
                }
                Err(e) => {
                    server.record_failure(&e);
                    self.failed(e);
                }
            }
        }
        match not_found {
            Some(message) => Ok(message),
            None => Err(self.error()),
        }
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
