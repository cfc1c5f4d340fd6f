//! Dialing out (`dial`): the key server connects to its edges and serves
//! their requests over those connections, so the key owner's network needs
//! no inbound port (what Cloudflare Tunnel does beside gokeyless).
//!
//! The TLS roles swap, the protocol does not: the key server is the TLS
//! client, proving itself with `auth_cert`/`auth_key` and accepting only an
//! edge whose certificate chains to `cloudflare_ca_cert` and names the host
//! dialed (or `dial_server_name`); the edge then sends requests and the key
//! server answers, exactly as on an accepted connection
//! ([`connection::serve_with`]). The key server also pings the edge with its
//! hello (instance and key-set version), which is how the edge groups its
//! connections and learns of a key reload.
//!
//! Each edge address gets `dial_connections` connections (default: one per
//! core), spread over the cores. A connection that fails or drops is
//! re-dialed after a backoff (100 ms doubling to 5 s, jittered), logged
//! once per outage. Through an HTTP CONNECT proxy when one is configured
//! (`dial_proxy`, else `HTTPS_PROXY`/`https_proxy` minus `NO_PROXY`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyless_client::core::Backoff;
use keyless_engine::core::Core;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::connection::{self, Dialed, Limits};

/// How often a dialed connection pings its edge.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// What the configuration says about dialing out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialSettings {
    /// `HOST:PORT` of each edge.
    pub edges: Vec<String>,
    /// Connections per edge address (default: one per core).
    pub connections: Option<usize>,
    /// `http://[user:password@]host:port`, or `None` for direct connections.
    pub proxy: Option<String>,
    /// Hosts (and domain suffixes) reached directly even with a proxy.
    pub no_proxy: Vec<String>,
    /// The name the edges' certificates must carry (default: each HOST).
    pub server_name: Option<String>,
}

impl DialSettings {
    /// The proxy from `dial_proxy`, which wins (`direct` for none), else
    /// from the environment, as curl reads it.
    pub fn with_proxy_from(mut self, setting: Option<String>, env: impl Fn(&str) -> Option<String>) -> DialSettings {
        let from_env = |names: &[&str]| names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()));
        self.proxy = match setting {
            Some(p) if p == "direct" || p.is_empty() => None,
            Some(p) => Some(p),
            None => from_env(&["HTTPS_PROXY", "https_proxy"]),
        };
        self.no_proxy = from_env(&["NO_PROXY", "no_proxy"])
            .map(|v| {
                v.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        self
    }
}

/// A proxy's address and credentials, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl Proxy {
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let parsed = url::Url::parse(&with_scheme).map_err(|e| format!("dial_proxy {url:?}: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "dial_proxy {url:?}: only http:// proxies (HTTP CONNECT) are supported"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("dial_proxy {url:?}: no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let decode = |s: &str| {
            url::form_urlencoded::parse(s.as_bytes())
                .next()
                .map_or_else(String::new, |(k, _)| k.into_owned())
        };
        let credentials = (!parsed.username().is_empty())
            .then(|| (decode(parsed.username()), decode(parsed.password().unwrap_or(""))));
        Ok(Proxy {
            host,
            port: parsed.port_or_known_default().unwrap_or(80),
            credentials,
        })
    }
}

/// Whether `host` is exempt from the proxy by `NO_PROXY` (`*`, a host, or a
/// domain suffix with or without its leading dot).
pub fn bypasses_proxy(host: &str, no_proxy: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy.iter().any(|entry| {
        let entry = entry.trim_start_matches('.');
        entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
    })
}

/// How one connection reaches its edge.
#[derive(Debug, Clone)]
pub enum Route {
    Direct(SocketAddr),
    /// Through a proxy, which resolves the edge's name itself.
    Proxied {
        proxy: Proxy,
        host: String,
        port: u16,
    },
}

impl Route {
    /// How logs say the way: nothing, or ` through proxy HOST:PORT`.
    pub fn via(&self) -> String {
        match self {
            Route::Direct(_) => String::new(),
            Route::Proxied { proxy, .. } => format!(" through proxy {}:{}", proxy.host, proxy.port),
        }
    }
}

/// One edge to keep connections to.
#[derive(Debug, Clone)]
pub struct Target {
    /// As configured, for logs and metrics.
    pub entry: String,
    pub route: Route,
    /// The name its certificate must carry.
    pub name: String,
    pub stats: Arc<LinkStats>,
}

/// One edge's connections, for metrics.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub up: AtomicUsize,
    /// Connections that were up and ended.
    pub lost: AtomicU64,
    pub requests: Arc<AtomicU64>,
    /// The current outage was logged.
    down_logged: std::sync::atomic::AtomicBool,
}

/// The edges to dial: a name with several addresses is several edges (a
/// proxied name is one: the proxy resolves it).
pub fn targets(settings: &DialSettings) -> Result<Vec<Target>, String> {
    let proxy = settings.proxy.as_deref().map(Proxy::parse).transpose()?;
    let mut targets = Vec::new();
    for entry in &settings.edges {
        let (host, port) = entry
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("dial: {entry:?}: expected HOST:PORT"))?;
        let name = settings.server_name.clone().unwrap_or_else(|| host.clone());
        let target = |route| Target {
            entry: entry.clone(),
            route,
            name: name.clone(),
            stats: Arc::default(),
        };
        match &proxy {
            Some(proxy) if !bypasses_proxy(&host, &settings.no_proxy) => targets.push(target(Route::Proxied {
                proxy: proxy.clone(),
                host: host.clone(),
                port,
            })),
            _ => {
                let addrs: Vec<SocketAddr> = (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| format!("dial: {entry:?}: {e}"))?
                    .collect();
                if addrs.is_empty() {
                    return Err(format!("dial: {entry:?}: no address"));
                }
                targets.extend(addrs.into_iter().map(|a| target(Route::Direct(a))));
            }
        }
    }
    Ok(targets)
}

/// How many of an edge's `connections` core `core` of `cores` keeps.
pub fn share(connections: usize, core: usize, cores: usize) -> usize {
    (0..connections).filter(|j| j % cores.max(1) == core).count()
}

/// Everything a core needs to keep its dialed connections.
#[derive(Clone)]
pub struct Dialer {
    pub targets: Vec<Target>,
    pub connections: usize,
    pub tls: Arc<rustls::ClientConfig>,
    /// This process, as its pings name it.
    pub instance: u64,
}

/// Keep this core's share of connections to every edge, until the core
/// drains.
pub fn spawn_all(dialer: &Dialer, core: &Rc<Core>, limits: &Rc<Limits>, cores: usize) {
    for target in &dialer.targets {
        for _ in 0..share(dialer.connections, core.id(), cores) {
            glommio::spawn_local(keep_dialing(
                target.clone(),
                dialer.clone(),
                core.clone(),
                limits.clone(),
            ))
            .detach();
        }
    }
}

/// One connection slot: dial, serve until the link ends, back off, again.
async fn keep_dialing(target: Target, dialer: Dialer, core: Rc<Core>, limits: Rc<Limits>) {
    let mut backoff = Backoff::new();
    while !core.drain().is_set() {
        let attempt = glommio::timer::timeout(limits.handshake_timeout, async {
            dial(&target, &dialer).await.map_err(glommio::GlommioError::IoError)
        });
        let stream = match crate::listener::until_drain(&core, attempt).await {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                let reason = match e {
                    glommio::GlommioError::TimedOut(_) => {
                        format!("not connected within {:?}", limits.handshake_timeout)
                    }
                    glommio::GlommioError::IoError(e) => e.to_string(),
                    e => e.to_string(),
                };
                // Once per outage of the edge, not per connection slot.
                if target.stats.up.load(Ordering::Relaxed) == 0
                    && !target.stats.down_logged.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!("dial {}{}: {reason}; retrying", target.entry, target.route.via());
                }
                let wait = jittered(backoff.failed());
                if crate::listener::until_drain(&core, glommio::timer::sleep(wait))
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
        };
        if target.stats.up.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::info!("dial {}{}: connected", target.entry, target.route.via());
        }
        target.stats.down_logged.store(false, Ordering::Relaxed);
        let up_since = Instant::now();
        let dialed = Dialed {
            interval: PING_INTERVAL,
            instance: dialer.instance,
            requests: target.stats.requests.clone(),
        };
        let closed = connection::serve_with(stream, core.clone(), &limits, Some(dialed)).await;
        target.stats.lost.fetch_add(1, Ordering::Relaxed);
        let reason = match closed {
            Ok(connection::Closed::Idle) => "the edge went silent".to_string(),
            Ok(_) => "closed by the edge".to_string(),
            Err(e) => e.to_string(),
        };
        if target.stats.up.fetch_sub(1, Ordering::Relaxed) == 1 && !core.drain().is_set() {
            tracing::warn!("dial {}: no connection left ({reason}); reconnecting", target.entry);
        }
        // A link that held is no outage: dial again soon.
        if up_since.elapsed() > Backoff::MAX {
            backoff.succeeded();
        }
        let wait = jittered(backoff.failed());
        if crate::listener::until_drain(&core, glommio::timer::sleep(wait))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Half to all of `wait`, at random: key servers that lost their edge at
/// the same moment do not all come back at the same moment.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(0.5 + fastrand::f64() / 2.0)
}

type Stream = futures_rustls::client::TlsStream<glommio::net::TcpStream>;

/// TCP (through the proxy, if any), then TLS with our certificate.
async fn dial(target: &Target, dialer: &Dialer) -> std::io::Result<Stream> {
    let tcp = match &target.route {
        Route::Direct(addr) => glommio::net::TcpStream::connect(*addr)
            .await
            .map_err(std::io::Error::from)?,
        Route::Proxied { proxy, host, port } => {
            let tcp = glommio::net::TcpStream::connect((proxy.host.as_str(), proxy.port))
                .await
                .map_err(|e| std::io::Error::other(format!("proxy: {}", std::io::Error::from(e))))?;
            let mut compat = tcp.compat();
            let connected = match &proxy.credentials {
                Some((user, password)) => {
                    async_http_proxy::http_connect_tokio_with_basic_auth(&mut compat, host, *port, user, password).await
                }
                None => async_http_proxy::http_connect_tokio(&mut compat, host, *port).await,
            };
            connected.map_err(|e| std::io::Error::other(proxy_refusal(proxy, host, *port, &e)))?;
            compat.into_inner()
        }
    };
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from(target.name.clone())
        .map_err(|e| std::io::Error::other(format!("edge name {:?}: {e}", target.name)))?;
    let tls = futures_rustls::TlsConnector::from(dialer.tls.clone())
        .connect(name, tcp)
        .await?;
    if let Some(chain) = tls.get_ref().1.peer_certificates() {
        crate::certmetrics::observe(&format!("dial: {}", target.entry), chain);
    }
    Ok(tls)
}

/// What a proxy's refusal of `CONNECT host:port` means, in our words:
/// what it answered and what to check.
fn proxy_refusal(proxy: &Proxy, host: &str, port: u16, e: &async_http_proxy::HttpError) -> String {
    use async_http_proxy::HttpError;
    let at = format!("the proxy {}:{} ", proxy.host, proxy.port);
    let check = match e {
        HttpError::HttpCode200(407) => match proxy.credentials {
            Some(_) => "it refused dial_proxy's credentials: check the user and password",
            None => "it wants credentials: give them in dial_proxy (http://user:password@host:port)",
        },
        HttpError::HttpCode200(401) => {
            "it refused the credentials (401 Unauthorized): check dial_proxy's user and password"
        }
        HttpError::HttpCode200(403) => "it forbids this destination: ask its operator to allow CONNECT to it",
        HttpError::HttpCode200(502..=504) => {
            "it could not reach the edge: check the edge's address and that it listens"
        }
        HttpError::HttpCode200(_) => "check the proxy's log for why",
        _ => "it did not answer as an HTTP proxy: check dial_proxy's host and port",
    };
    match e {
        HttpError::HttpCode200(code) => format!("{at}answered {code} to CONNECT {host}:{port}; {check}"),
        other => format!("{at}failed CONNECT {host}:{port} ({other}); {check}"),
    }
}

/// A random instance number for this process.
pub fn new_instance() -> u64 {
    fastrand::u64(..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_setting_wins_over_the_environment_and_no_proxy_exempts_hosts() {
        let env = |name: &str| match name {
            "https_proxy" => Some("http://envproxy:3128".to_string()),
            "NO_PROXY" => Some("localhost, .internal,edge.example".to_string()),
            _ => None,
        };
        let base = DialSettings::default();
        let s = base.clone().with_proxy_from(None, env);
        assert_eq!(s.proxy.as_deref(), Some("http://envproxy:3128"));
        assert_eq!(s.no_proxy, ["localhost", ".internal", "edge.example"]);
        let s = base.clone().with_proxy_from(Some("http://p:8080".into()), env);
        assert_eq!(s.proxy.as_deref(), Some("http://p:8080"));
        assert_eq!(base.clone().with_proxy_from(Some("direct".into()), env).proxy, None);
        assert!(bypasses_proxy("a.internal", &s.no_proxy));
        assert!(bypasses_proxy("EDGE.example", &s.no_proxy));
        assert!(!bypasses_proxy("edge.example.org", &s.no_proxy));
        assert!(bypasses_proxy("anything", &["*".to_string()]));
    }

    #[test]
    fn proxy_urls_give_host_port_and_decoded_credentials() {
        let p = Proxy::parse("http://us%20er:p%40ss@proxy.corp:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert_eq!(p.credentials, Some(("us er".to_string(), "p@ss".to_string())));
        let p = Proxy::parse("127.0.0.1:8888").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.credentials), ("127.0.0.1", 8888, None));
        assert!(Proxy::parse("socks5://x:1").unwrap_err().contains("only http://"));
    }

    #[test]
    fn connections_spread_over_the_cores_and_names_resolve_to_edges() {
        assert_eq!((0..2).map(|c| share(2, c, 2)).collect::<Vec<_>>(), [1, 1]);
        assert_eq!((0..2).map(|c| share(3, c, 2)).collect::<Vec<_>>(), [2, 1]);
        assert_eq!((0..4).map(|c| share(1, c, 4)).sum::<usize>(), 1);
        let settings = DialSettings {
            edges: vec!["127.0.0.1:2408".into(), "[::1]:2409".into()],
            ..Default::default()
        };
        let t = targets(&settings).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "127.0.0.1");
        assert!(matches!(t[1].route, Route::Direct(a) if a.port() == 2409));
        let proxied = DialSettings {
            edges: vec!["edge.example:2408".into()],
            proxy: Some("http://127.0.0.1:3128".into()),
            ..Default::default()
        };
        let t = targets(&proxied).unwrap();
        assert!(matches!(&t[0].route, Route::Proxied { host, port: 2408, .. } if host == "edge.example"));
        assert!(targets(&DialSettings {
            edges: vec!["no-port".into()],
            ..Default::default()
        })
        .unwrap_err()
        .contains("HOST:PORT"));
    }
}
