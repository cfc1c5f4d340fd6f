//! `keyless-server`: start the key server from gokeyless's configuration.

use std::process::ExitCode;

use clap::Parser;
use keyless_server::config::{self, Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn dev_setup(cli: &mut Cli) -> Result<(), String> {
    let pki = keyless_pki::DevPki::at(&cli.dev_dir);
    if pki.is_complete() {
        eprintln!("using the development PKI in {}", pki.dir.display());
    } else {
        keyless_pki::DevPki::generate(&cli.dev_dir, keyless_pki::DEFAULT_KEYS, 2407).map_err(|e| e.to_string())?;
        eprintln!("created a throwaway development PKI in {}", pki.dir.display());
    }
    cli.config_file.get_or_insert(pki.config.clone());
    cli.listen_host.get_or_insert([127, 0, 0, 1].into());
    Ok(())
}

fn print_dev_help(pki: &keyless_pki::DevPki, addr: std::net::SocketAddr, metrics: Option<std::net::SocketAddr>) {
    let d = pki.dir.display();
    eprintln!(
        "\nDevelopment key server on {addr}\n  CA:          {}\n  client cert: {}\n  client key:  {}\n  keys:        {}\n\n\
         Check it with the conformance suite:\n  cargo run --release --bin keyless-tool -- conformance --server {addr} \
         --ca {d}/ca.pem --cert {d}/client.pem --key {d}/client-key.pem --pubkeys {d}/pubkeys\n\
         or by hand:\n  openssl s_client -connect {addr} -CAfile {d}/ca.pem -cert {d}/client.pem -key {d}/client-key.pem\n\
         Load it:\n  cargo run --release --bin keyless-bench -- run --server {addr}\n\
         Metrics: http://{}/metrics\n",
        pki.ca_cert.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
        pki.keys_dir.display(),
        metrics.map_or("(none)".to_string(), |m| m.to_string()),
    );
}

fn remove_pid_file(pid_file: Option<&std::path::Path>) {
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
}

fn main() -> ExitCode {
    let code = run();
    keyless_server::flush_logs();
    code
}

fn run() -> ExitCode {
    let mut cli = Cli::parse();
    if cli.dev {
        if let Err(e) = dev_setup(&mut cli) {
            eprintln!("keyless-server: development PKI: {e}");
            return ExitCode::FAILURE;
        }
    }
    let settings = match config::load(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyless-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    keyless_server::init_logging(settings.loglevel);
    match &settings.config_file {
        Some(p) => tracing::info!("using configuration {}", p.display()),
        None => {
            tracing::info!("no configuration file found; using flags, environment and defaults")
        }
    }
    let running = match keyless_server::start(&settings) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("keyless-server: {e}");
            keyless_pkcs11::shutdown(std::time::Duration::from_secs(2));
            return ExitCode::FAILURE;
        }
    };
    if let Some(pid_file) = &settings.pid_file {
        if let Err(e) = std::fs::write(pid_file, std::process::id().to_string()) {
            tracing::error!("cannot write pid file {}: {e}", pid_file.display());
        }
    }
    if cli.dev {
        print_dev_help(
            &keyless_pki::DevPki::at(&cli.dev_dir),
            running.addr,
            running.metrics_addr,
        );
    }
    // SIGTERM/SIGINT: stop accepting, answer what was received, exit 0.
    // SIGHUP: reload keys, certificate and client CA from the configuration.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let running = std::sync::Arc::new(running);
    match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(mut signals) => {
            let running = running.clone();
            let cli = cli.clone();
            let drain_timeout = std::time::Duration::from_secs(settings.drain_timeout_s);
            let pid_file = settings.pid_file.clone();
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        let reloaded = config::load(&cli)
                            .map_err(keyless_server::ServerError::from)
                            .and_then(|settings| keyless_server::reload(&settings, &running));
                        match reloaded {
                            Ok(n) => tracing::info!("SIGHUP: reloaded; serving {n} keys"),
                            Err(e) => tracing::error!("SIGHUP: reload failed, keeping the current state: {e}"),
                        }
                        continue;
                    }
                    tracing::info!("signal {sig}: draining (no new connections or requests)");
                    running.shared.start_drain();
                    // Safety net: a core that sleeps through its wake-up (a
                    // glommio lost wake-up seen rarely on this kernel) must not
                    // keep the process alive past the drain timeout.
                    std::thread::sleep(drain_timeout + std::time::Duration::from_secs(5));
                    let idle = running.shared.load_per_core().iter().all(|l| *l == 0);
                    tracing::error!(
                        "cores did not stop within the drain timeout; exiting (work in flight: {})",
                        !idle
                    );
                    remove_pid_file(pid_file.as_deref());
                    keyless_server::flush_logs();
                    std::process::exit(if idle { 0 } else { 1 });
                }
            });
        }
        Err(e) => tracing::error!("cannot install signal handlers: {e}"),
    }
    let result = match std::sync::Arc::try_unwrap(running) {
        Ok(running) => running.wait(),
        Err(shared) => shared.wait_by_ref(),
    };
    remove_pid_file(settings.pid_file.as_deref());
    // HSM sessions close before the process (and the PKCS#11 module) goes.
    keyless_pkcs11::shutdown(std::time::Duration::from_secs(2));
    match result {
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
