//! The development edge: a configuration written next to the development
//! PKI, for `keyless-edge --dev` and `keyless-tool dev`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the development setup listens.
#[derive(Debug, Clone)]
pub struct Ports {
    pub edge: u16,
    pub metrics: u16,
    /// The key server the edge signs with.
    pub key_server: u16,
}

/// Make the development PKI in `dir` if it is not there, write the edge's
/// configuration into it, and return that file's path.
pub fn prepare(dir: &Path, ports: &Ports) -> Result<PathBuf, String> {
    let pki = keyless_pki::DevPki::ensure(dir, ports.key_server).map_err(|e| e.to_string())?;
    let path = pki.dir.join("edge.yaml");
    std::fs::write(&path, config(&pki, ports)).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn config(pki: &keyless_pki::DevPki, ports: &Ports) -> String {
    format!(
        "# Development edge written by --dev. Not for production.\n\
         listen: 127.0.0.1:{}\n\
         metrics_listen: 127.0.0.1:{}\n\
         workers: 1\n\
         handshake_threads: 64\n\
         certificates:\n  - cert: {}\n    default: true\n  - cert: {}\n    names: [rsa.localhost]\n\
         key_servers: [\"127.0.0.1:{}\"]\n\
         key_server_name: localhost\n\
         key_server_ca: {}\n\
         client_cert: {}\n\
         client_key: {}\n",
        ports.edge,
        ports.metrics,
        pki.sites_dir.join("p256.pem").display(),
        pki.sites_dir.join("rsa2048.pem").display(),
        ports.key_server,
        pki.ca_cert.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    )
}

/// What to try against a running development edge (its metrics on
/// `metrics`, when it serves them).
pub fn help(dir: &Path, addr: SocketAddr, metrics: Option<SocketAddr>) -> String {
    let d = dir.display();
    format!(
        "\nDevelopment edge on {addr} (certificates only; signatures come from the key server)\n\
         The Keyless SSL check: one full handshake, five resumed, one signature on the key server:\n  \
         openssl s_client -connect {addr} -tls1_2 -reconnect -CAfile {d}/ca.pem </dev/null | grep -E '^(New|Reused)'\n\
         A page:\n  curl --cacert {d}/ca.pem https://localhost:{}/\n\
         Edge metrics: {}\n",
        addr.port(),
        metrics.map_or("(none)".into(), |m| format!("http://{m}/metrics")),
    )
}
