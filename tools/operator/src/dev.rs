//! `keyless-tool dev`: a key server and an edge in one process, on the
//! development PKI — the Keyless SSL walkthrough with one command.

use std::path::Path;
use std::sync::Arc;

use keyless_edge::dev::Ports;

pub fn run(dir: &Path, ports: &Ports, loglevel: u8) -> Result<(), String> {
    keyless_service::init_logging(loglevel);
    let edge_config = keyless_edge::dev::prepare(dir, ports)?;
    let pki = keyless_pki::DevPki::at(dir);
    // A free port for the key server's metrics (port 0 would turn them off).
    let metrics_port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("a free port for the key server's metrics: {e}"))?
        .port();
    let server_cli = keyless_server::config::Options {
        config_file: Some(pki.config.clone()),
        listen_host: Some([127, 0, 0, 1].into()),
        workers: std::num::NonZeroUsize::new(1),
        port: Some(ports.key_server),
        metrics_port: Some(metrics_port),
        loglevel: Some(loglevel),
        ..Default::default()
    };
    let settings = keyless_server::config::load(&server_cli).map_err(|e| e.to_string())?;
    let server = Arc::new(keyless_server::start(&settings).map_err(|e| format!("key server: {e}"))?);
    eprintln!(
        "key server (holds the keys) on {}; its metrics: {}",
        server.addr,
        server
            .metrics_addr
            .map_or("(none)".into(), |m| format!("http://{m}/metrics"))
    );
    let config = keyless_edge::config::load(&edge_config)?;
    let edge = Arc::new(keyless_edge::start(&config).map_err(|e| format!("edge: {e}"))?);
    eprintln!("{}", keyless_edge::dev::help(dir, edge.addr, edge.metrics_addr));
    let handlers = keyless_service::signals::Handlers {
        reload: {
            let (server, edge) = (server.clone(), edge.clone());
            move || {
                let settings = keyless_server::config::load(&server_cli).map_err(|e| e.to_string())?;
                let keys = keyless_server::reload(&settings, &server).map_err(|e| e.to_string())?;
                let certs = keyless_edge::config::load(&edge_config).and_then(|c| edge.reload(&c))?;
                Ok(format!("serving {keys} keys and {certs} certificates"))
            }
        },
        drain: {
            let (server, edge) = (server.clone(), edge.clone());
            move || {
                edge.start_drain();
                server.shared.start_drain();
            }
        },
        stuck: || 1,
        grace: config.drain_timeout() + std::time::Duration::from_secs(5),
    };
    keyless_service::signals::spawn("keyless-dev", handlers).map_err(|e| format!("signals: {e}"))?;
    let edge_result = edge.wait();
    let server_result = server.wait_by_ref().map_err(|e| e.to_string());
    tracing::info!("stopped");
    edge_result.and(server_result)
}
