//! Key servers found by DNS, continuously: a thread of its own asks
//! hickory-resolver for every `key_servers` name each period (and when
//! asked, on SIGHUP) and hands the key servers to dial to a callback (the
//! edge's directory). What to keep through failures is [`Names`]'.
//!
//! By default the system's configuration (`/etc/resolv.conf`, with its
//! search domains, and `/etc/hosts`), as Kubernetes pods need for short
//! Service names; `nameservers` points it elsewhere (a test's own server
//! on loopback). Answers are cached at most one period, so a period is
//! what a change takes to be seen even when records say to cache longer.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use crate::core::Names;
use crate::ClientError;

/// Where DNS questions go.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// DNS servers to ask (UDP, then TCP for long answers); empty: the
    /// system's configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Time between lookups, and longest any answer is cached.
    pub every: Duration,
}

/// Who answers: hickory, or (when the system's DNS configuration cannot be
/// read, as in a container with no /etc/resolv.conf) the C library's
/// getaddrinfo, as the edge did before it followed DNS.
enum Resolver {
    Hickory(Box<TokioResolver>),
    Libc,
}

impl Resolver {
    async fn lookup(&self, host: &str) -> Result<Vec<std::net::IpAddr>, String> {
        match self {
            Resolver::Hickory(r) => r
                .lookup_ip(host)
                .await
                .map(|found| found.iter().collect())
                .map_err(|e| e.to_string()),
            Resolver::Libc => tokio::net::lookup_host((host, 0))
                .await
                .map(|found| found.map(|a| a.ip()).collect())
                .map_err(|e| e.to_string()),
        }
    }
}

impl Lookup {
    fn resolver(&self) -> Resolver {
        let provider = TokioConnectionProvider::default();
        let mut builder = if self.nameservers.is_empty() {
            match TokioResolver::builder(provider) {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::warn!("the system's DNS configuration: {e}; looking names up with getaddrinfo instead");
                    return Resolver::Libc;
                }
            }
        } else {
            let servers: Vec<NameServerConfig> = self
                .nameservers
                .iter()
                .flat_map(|at| {
                    [
                        NameServerConfig::new(*at, Protocol::Udp),
                        NameServerConfig::new(*at, Protocol::Tcp),
                    ]
                })
                .collect();
            let config = ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(servers));
            TokioResolver::builder_with_config(config, provider)
        };
        let every = self.every.max(Duration::from_secs(1));
        let options = builder.options_mut();
        options.positive_max_ttl = Some(every);
        options.negative_max_ttl = Some(every);
        Resolver::Hickory(Box::new(builder.build()))
    }
}

/// Look every name up once, as [`Names::answered`] takes it. Whether the
/// key servers to dial changed.
async fn lookup_all(resolver: &Resolver, names: &mut Names) -> bool {
    let mut changed = false;
    for (i, host) in names.lookups() {
        changed |= names.answered(i, resolver.lookup(&host).await);
    }
    changed
}

/// Resolve `names` once, now (the edge's start, `--test-config`).
pub fn resolve_once(names: &mut Names, lookup: &Lookup) -> Result<(), ClientError> {
    if names.lookups().is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Config(format!("DNS: {e}")))?;
    runtime.block_on(async { lookup_all(&lookup.resolver(), names).await });
    Ok(())
}

/// The thread that keeps resolving; dropping it stops the thread.
pub struct Resolving {
    now: mpsc::Sender<()>,
}

impl Resolving {
    /// Look every name up now (SIGHUP), not at the end of the period.
    pub fn resolve_now(&self) {
        let _ = self.now.send(());
    }
}

/// Keep resolving `names` every `lookup.every` (and on
/// [`Resolving::resolve_now`]), calling `apply` with the key servers to
/// dial whenever they change.
pub fn spawn(
    mut names: Names,
    lookup: Lookup,
    mut apply: impl FnMut(&[(SocketAddr, String)]) + Send + 'static,
) -> Result<Resolving, ClientError> {
    let (now, asked) = mpsc::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Config(format!("DNS: {e}")))?;
    let resolver = runtime.block_on(async { lookup.resolver() });
    std::thread::Builder::new()
        .name("keyless-dns".into())
        .spawn(move || {
            while let Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) = asked.recv_timeout(lookup.every) {
                if runtime.block_on(lookup_all(&resolver, &mut names)) {
                    apply(&names.wanted());
                }
            }
        })
        .map_err(|e| ClientError::Config(format!("DNS thread: {e}")))?;
    Ok(Resolving { now })
}
