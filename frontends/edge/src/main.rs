//! `keyless-edge`: terminate TLS with keys that live on key servers.
//!
//! `keyless-edge --dev` is the whole Keyless SSL setup on one machine: a
//! development PKI, a key server holding the keys (in this process, on
//! 127.0.0.1:2407) and an edge holding only certificates (127.0.0.1:8443).

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use keyless_edge::config::{self, Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The development edge configuration, written next to the PKI.
fn dev_edge_config(pki: &keyless_pki::DevPki, cli: &Cli) -> String {
    format!(
        "# Development edge written by keyless-edge --dev. Not for production.\n\
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
        cli.dev_port,
        cli.dev_metrics_port,
        pki.sites_dir.join("p256.pem").display(),
        pki.sites_dir.join("rsa2048.pem").display(),
        cli.dev_key_server_port,
        pki.ca_cert.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    )
}

/// Create the PKI if needed, start the key server, write the edge config.
fn dev_setup(cli: &mut Cli) -> Result<(), String> {
    let pki = keyless_pki::DevPki::at(&cli.dev_dir);
    let sites_ready = pki.sites_dir.join("p256.pem").is_file() && pki.sites_dir.join("rsa2048.pem").is_file();
    if pki.is_complete() && sites_ready {
        eprintln!("using the development PKI in {}", pki.dir.display());
    } else {
        keyless_pki::DevPki::generate(&cli.dev_dir, keyless_pki::DEFAULT_KEYS, 2407).map_err(|e| e.to_string())?;
        eprintln!("created a throwaway development PKI in {}", pki.dir.display());
    }
    let server_cli = keyless_server::config::Cli {
        config_file: Some(pki.config.clone()),
        listen_host: Some([127, 0, 0, 1].into()),
        workers: Some(1),
        port: Some(cli.dev_key_server_port),
        metrics_port: Some(0),
        loglevel: cli.loglevel.or(Some(1)),
        ..Default::default()
    };
    let settings = keyless_server::config::load(&server_cli).map_err(|e| e.to_string())?;
    let server = keyless_server::start(&settings).map_err(|e| format!("key server: {e}"))?;
    eprintln!("key server (holds the keys) on {}", server.addr);
    std::mem::forget(server); // serves until the process exits
    let edge_config = pki.dir.join("edge.yaml");
    std::fs::write(&edge_config, dev_edge_config(&pki, cli)).map_err(|e| format!("{}: {e}", edge_config.display()))?;
    cli.config_file = Some(edge_config);
    Ok(())
}

fn print_dev_help(dir: &Path, addr: std::net::SocketAddr) {
    let d = dir.display();
    eprintln!(
        "\nDevelopment edge on {addr} (certificates only; signatures come from the key server)\n\
         The Keyless SSL check: one full handshake, five resumed, one signature on the key server:\n  \
         openssl s_client -connect {addr} -tls1_2 -reconnect -CAfile {d}/ca.pem </dev/null | grep -E '^(New|Reused)'\n\
         A page:\n  curl --cacert {d}/ca.pem https://localhost:{}/\n",
        addr.port()
    );
}

fn main() -> ExitCode {
    let code = run();
    keyless_server::flush_logs();
    code
}

fn run() -> ExitCode {
    let mut cli = Cli::parse();
    keyless_server::init_logging(cli.loglevel.unwrap_or(1));
    if cli.dev {
        if let Err(e) = dev_setup(&mut cli) {
            eprintln!("keyless-edge: development setup: {e}");
            return ExitCode::FAILURE;
        }
    }
    let Some(path) = cli.config_file.clone() else {
        eprintln!("keyless-edge: no configuration: use -c edge.yaml (or --dev)");
        return ExitCode::FAILURE;
    };
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyless-edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match keyless_edge::start(&config) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("keyless-edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.dev {
        print_dev_help(&cli.dev_dir, running.addr);
    }
    // SIGHUP: reload certificates (and ticket keys); SIGTERM/SIGINT: stop
    // accepting, let open connections finish (drain_timeout), exit 0.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let running = std::sync::Arc::new(running);
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        let running = running.clone();
        let drain_timeout = config.drain_timeout();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    let reloaded = config::load(&path).and_then(|c| running.reload(&c));
                    match reloaded {
                        Ok(n) => tracing::info!("SIGHUP: reloaded {n} certificates"),
                        Err(e) => tracing::error!("SIGHUP: reload failed, keeping the current state: {e}"),
                    }
                    continue;
                }
                tracing::info!("signal {sig}: draining (no new connections)");
                running.start_drain();
                std::thread::sleep(drain_timeout + std::time::Duration::from_secs(5));
                tracing::error!("cores did not stop within the drain timeout; exiting");
                keyless_server::flush_logs();
                std::process::exit(1);
            }
        });
    }
    let running = match std::sync::Arc::try_unwrap(running) {
        Ok(r) => r,
        Err(shared) => {
            // The signal thread holds a handle: wait through it.
            while !shared.stopped() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            tracing::info!("stopped");
            return ExitCode::SUCCESS;
        }
    };
    match running.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
