//! `keyless-edge`: terminate TLS with keys that live on key servers.
//!
//! `keyless-edge --dev` is the development edge: certificates from the
//! development PKI (made if missing), on 127.0.0.1:8443, signing with a key
//! server on 127.0.0.1:2407 (`keyless-server --dev`). `keyless-tool dev`
//! runs both in one process.

use std::process::ExitCode;

use clap::Parser;
use keyless_edge::config::{self, Cli};

/// Read when no `-c` is given: where the Debian package installs it.
const DEFAULT_CONFIG: &str = "/etc/keyless/edge.yaml";

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let code = run();
    keyless_service::flush_logs();
    code
}

fn run() -> ExitCode {
    let mut cli = Cli::parse();
    keyless_service::init_logging(cli.loglevel.unwrap_or(1));
    if cli.dev {
        let ports = keyless_edge::dev::Ports {
            edge: cli.dev_port,
            metrics: cli.dev_metrics_port,
            key_server: cli.dev_key_server_port,
        };
        match keyless_edge::dev::prepare(&cli.dev_dir, &ports) {
            Ok(path) => cli.config_file = Some(path),
            Err(e) => {
                eprintln!("keyless-edge: development setup: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(path) = cli.config_file.clone().or_else(|| {
        let installed = std::path::PathBuf::from(DEFAULT_CONFIG);
        installed.exists().then_some(installed)
    }) else {
        eprintln!("keyless-edge: no configuration: use -c edge.yaml (or --dev); {DEFAULT_CONFIG} does not exist");
        return ExitCode::FAILURE;
    };
    let config = match config::load(&path) {
        Ok(c) => {
            for key in &c.unknown_keys {
                tracing::warn!("{}: unknown key `{key}` ignored", path.display());
            }
            c
        }
        Err(e) => {
            eprintln!("keyless-edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = keyless_service::harden::keep_keys_in("session-ticket keys", config.allow_core_dumps) {
        tracing::error!("cannot keep ticket keys out of core files: {e}");
        return ExitCode::FAILURE;
    }
    if cli.test_config {
        // As nginx -t, and one signature per certificate from the key
        // servers, verified: a certificate whose key no key server holds
        // would fail every full handshake.
        let checked = keyless_edge::check(&config)
            .and_then(|what| Ok(format!("{what}; {}", keyless_edge::probe::probe(&config)?)));
        return match checked {
            Ok(what) => {
                println!("keyless-edge: {}: configuration ok ({what})", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keyless-edge: {}: {e}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    let running = match keyless_edge::start(&config) {
        Ok(r) => r,
        Err(e) => {
            // The log goes to stderr already: one line, not two.
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    keyless_service::harden::lock_unless(config.disable_mlock);
    if cli.dev {
        eprintln!(
            "{}",
            keyless_edge::dev::help(&cli.dev_dir, running.addr, running.metrics_addr)
        );
    }
    // SIGHUP: reload certificates (and ticket keys); SIGTERM/SIGINT: stop
    // accepting, let open connections finish (drain_timeout), exit 0.
    let running = std::sync::Arc::new(running);
    let handlers = keyless_service::signals::Handlers {
        reload: {
            let (running, started) = (running.clone(), config.clone());
            move || {
                let next = config::load(&path)?;
                let n = running.reload(&next)?;
                let mut said = format!("serving {}", keyless_service::count(n, "certificate", "certificates"));
                let pending = started.restart_needed(&next);
                if !pending.is_empty() {
                    said += &format!("; changed, and applied only by a restart: {}", pending.join(", "));
                }
                Ok(said)
            }
        },
        drain: {
            let running = running.clone();
            move || running.start_drain()
        },
        stuck: || 1,
        grace: config.drain_timeout() + std::time::Duration::from_secs(5),
    };
    if let Err(e) = keyless_service::signals::spawn("keyless-edge", handlers) {
        tracing::error!("cannot install signal handlers: {e}");
    }
    match running.wait() {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
