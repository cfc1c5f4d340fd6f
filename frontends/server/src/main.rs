//! `keyless-server`: start the key server from gokeyless's configuration.

use std::process::ExitCode;

use keyless_server::config::{self, Options};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn dev_setup(cli: &mut Options) -> Result<(), String> {
    let pki = keyless_pki::DevPki::ensure(&cli.dev_dir, 2407).map_err(|e| e.to_string())?;
    cli.config_file.get_or_insert(pki.config.clone());
    cli.listen_host.get_or_insert([127, 0, 0, 1].into());
    Ok(())
}

fn print_dev_help(pki: &keyless_pki::DevPki, addr: std::net::SocketAddr, metrics: Option<std::net::SocketAddr>) {
    let d = pki.dir.display();
    eprintln!(
        "\nDevelopment key server on {addr}\n  CA:          {}\n  client cert: {}\n  client key:  {}\n  keys:        {}\n\n\
         Check it with the conformance suite:\n  keyless-tool conformance --server {addr} \
         --ca {d}/ca.pem --cert {d}/client.pem --key {d}/client-key.pem --pubkeys {d}/pubkeys\n\
         or by hand:\n  openssl s_client -connect {addr} -CAfile {d}/ca.pem -cert {d}/client.pem -key {d}/client-key.pem\n\
         Load it:\n  keyless-bench run --server {addr}\n\
         (from a checkout: target/release/keyless-tool, target/release/keyless-bench)\n\
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
    keyless_service::flush_logs();
    code
}

fn run() -> ExitCode {
    let mut cli = config::parse_args();
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
    if let Some((flag, what)) = cli.unsupported_flag() {
        eprintln!("keyless-server: --{flag} is not supported by keyless-server ({what})");
        return ExitCode::FAILURE;
    }
    if cli.output_config {
        print!("{}", settings.to_yaml());
        return ExitCode::SUCCESS;
    }
    // Landlock restricts the thread that applies it and those it starts
    // later: applied here, before the log writer or any core starts.
    let serving = !cli.keystore_debug && !cli.test_config;
    let landlock = (serving && settings.sandbox).then(|| {
        keyless_service::sandbox::private_temp_dir()
            .and_then(|_| keyless_service::sandbox::landlock::apply(&keyless_server::sandbox::plan(&settings)))
    });
    keyless_service::init_logging(settings.loglevel);
    if let Some(Err(e)) = &landlock {
        tracing::error!("cannot start the sandbox (landlock): {e}; `sandbox: off` runs without it");
        return ExitCode::FAILURE;
    }
    // Before any key is read (the key store debug and -t read them too).
    if let Err(e) = keyless_service::harden::keep_keys_in("private keys", settings.allow_core_dumps) {
        tracing::error!("cannot keep keys out of core files: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(path) = &settings.config_file {
        for key in &settings.unknown_keys {
            match config::UNSUPPORTED
                .iter()
                .find(|(name, _)| name.replace('-', "_") == *key)
            {
                Some((_, what)) => tracing::warn!(
                    "{}: `{key}` is a gokeyless setting keyless-server does not support ({what}); ignored",
                    path.display()
                ),
                None => tracing::warn!("{}: unknown key `{key}` ignored", path.display()),
            }
        }
    }
    if cli.keystore_debug {
        let (text, ok) = keyless_server::keystore::debug(&settings);
        print!("{text}");
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    match &settings.config_file {
        Some(p) => tracing::info!("using configuration {}", p.display()),
        None => {
            tracing::info!("no configuration file found; using flags, environment and defaults")
        }
    }
    if cli.test_config {
        let checked = keyless_server::check(&settings);
        keyless_hsm::shutdown(std::time::Duration::from_secs(2));
        let file = settings
            .config_file
            .as_deref()
            .map_or("(no file)".into(), |p| p.display().to_string());
        return match checked {
            Ok(what) => {
                println!("keyless-server: {file}: configuration ok ({what})");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keyless-server: {file}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let running = match keyless_server::start(&settings) {
        Ok(r) => r,
        Err(e) => {
            // The log goes to stderr already: one line, not two.
            tracing::error!("cannot start: {e}");
            if landlock.is_some()
                && settings
                    .key_sources
                    .iter()
                    .any(|k| matches!(k, keyless_keys::KeySource::Pkcs11(_)))
            {
                tracing::error!(
                    "the sandbox is on: a PKCS#11 module that reads, writes or connects elsewhere needs those \
                     places in sandbox_read_paths, sandbox_write_paths or sandbox_connect_ports"
                );
            }
            keyless_hsm::shutdown(std::time::Duration::from_secs(2));
            return ExitCode::FAILURE;
        }
    };
    keyless_service::harden::lock_unless(settings.disable_mlock);
    // Keys, certificates and sockets are ready: the system calls the
    // process makes from here on are the allow-list's.
    match landlock {
        Some(landlock) => {
            let seccomp = keyless_service::sandbox::seccomp::apply();
            let said = keyless_service::sandbox::describe(&landlock, &seccomp);
            if let Err(e) = seccomp {
                tracing::error!("cannot start the sandbox (seccomp): {e}; `sandbox: off` runs without it");
                return ExitCode::FAILURE;
            }
            tracing::info!("{said}");
        }
        None => tracing::warn!(
            "sandbox: off: a bug that runs code in this process reaches every file, port and system call \
             {} can",
            keyless_service::harden::user_name()
        ),
    }
    keyless_service::sandbox::probe::run_from_env();
    if cli.dev {
        print_dev_help(
            &keyless_pki::DevPki::at(&cli.dev_dir),
            running.addr,
            running.metrics_addr,
        );
    }
    // SIGTERM/SIGINT: stop accepting, answer what was received, exit 0.
    // SIGHUP: reload keys, certificate and client CA from the configuration.
    let running = std::sync::Arc::new(running);
    let handlers = keyless_service::signals::Handlers {
        reload: {
            let (running, cli, started) = (running.clone(), cli.clone(), settings.clone());
            move || {
                let settings = config::load(&cli).map_err(|e| e.to_string())?;
                let n = keyless_server::reload(&settings, &running).map_err(|e| {
                    // A place the sandbox did not cover at start reads as
                    // "permission denied": say why.
                    let outside = started.sandbox && keyless_server::sandbox::widens(&started, &settings);
                    match outside {
                        true => format!(
                            "{e} (the configuration names files, folders or ports the sandbox set at start \
                             does not cover: a restart applies it)"
                        ),
                        false => e.to_string(),
                    }
                })?;
                let mut said = format!("serving {}", keyless_service::count(n, "key", "keys"));
                let pending = started.restart_needed(&settings);
                if !pending.is_empty() {
                    said += &format!("; changed, and applied only by a restart: {}", pending.join(", "));
                }
                Ok(said)
            }
        },
        drain: {
            let running = running.clone();
            move || running.shared.start_drain()
        },
        stuck: {
            let (running, pid_file) = (running.clone(), settings.pid_file.clone());
            move || {
                remove_pid_file(pid_file.as_deref());
                // Nothing left to answer: the drain did its job.
                if running.shared.load_per_core().iter().all(|l| *l == 0) {
                    0
                } else {
                    1
                }
            }
        },
        grace: settings.limits.drain_timeout + std::time::Duration::from_secs(5),
    };
    if let Err(e) = keyless_service::signals::spawn("keyless-server", handlers) {
        tracing::error!("cannot install signal handlers: {e}");
    }
    // Last: whoever waits for the pid file may signal the process at once.
    if let Some(pid_file) = &settings.pid_file {
        if let Err(e) = std::fs::write(pid_file, std::process::id().to_string()) {
            tracing::error!("cannot write pid file {}: {e}", pid_file.display());
        }
    }
    let result = match std::sync::Arc::try_unwrap(running) {
        Ok(running) => running.wait(),
        Err(shared) => shared.wait_by_ref(),
    };
    remove_pid_file(settings.pid_file.as_deref());
    // The socket file of a server that stopped is no use to anyone.
    if let Some(socket) = &settings.unix_socket {
        let _ = std::fs::remove_file(socket);
    }
    // HSM sessions close before the process (and the PKCS#11 module) goes.
    keyless_hsm::shutdown(std::time::Duration::from_secs(2));
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
