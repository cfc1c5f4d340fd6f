//! `keyless-tool`: the operator's utilities.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyless_tools::conformance;

mod dev;
mod edge_yaml;
mod manuals;

/// `keyless-tool`'s command line (for its manual page).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[derive(Parser)]
#[command(
    name = "keyless-tool",
    version = keyless_service::VERSION,
    about = "Utilities for keyless key servers",
    disable_version_flag = true
)]
struct Cli {
    /// Print the version and the commit, and exit (`-v` or `-V`).
    #[arg(short = 'v', short_alias = 'V', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole Keyless SSL setup in one process, for trying it out: a
    /// development PKI in --dir (made if missing), a key server holding its
    /// keys on 127.0.0.1:2407 and an edge holding only the certificates on
    /// 127.0.0.1:8443. SIGHUP reloads both, SIGTERM or Ctrl-C drains both.
    Dev {
        #[arg(long, default_value = "dev-pki")]
        dir: PathBuf,
        /// The edge's TLS port.
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// The key server's port.
        #[arg(long, default_value_t = 2407)]
        key_server_port: u16,
        /// The edge's metrics port (/metrics, /healthz, /readyz). The key
        /// server's metrics go on a free port of 127.0.0.1, printed at start.
        #[arg(long, default_value_t = 8406)]
        metrics_port: u16,
        /// gokeyless's log levels: 0 debug, 1 info, 2 warning, 3 error.
        #[arg(short = 'l', long = "loglevel", default_value_t = 1)]
        loglevel: u8,
    },
    /// Write the manual pages (man1) and shell completions (bash, zsh,
    /// fish) of keyless-server, keyless-edge, keyless-tool and keyless-bench
    /// into a folder, from their command-line definitions (the package
    /// installs them).
    Man {
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a throwaway development PKI: CA, server and client
    /// certificates, a P-256 and an RSA-2048 signing key, and a gokeyless.yaml.
    GenPki {
        /// Output folder.
        #[arg(long, default_value = "dev-pki")]
        out: PathBuf,
        /// Port written into the configuration.
        #[arg(long, default_value_t = 2407)]
        port: u16,
        /// Replace a PKI already in the folder (its CA and every key in it).
        #[arg(long)]
        force: bool,
    },
    /// Turn `perf script` output into an SVG flame graph and print the top frames.
    Flamegraph {
        /// Output of `perf script` for a `perf record --call-graph dwarf` run.
        #[arg(long)]
        perf_script: PathBuf,
        /// Where to write the SVG.
        #[arg(long, default_value = "perf-flamegraph.svg")]
        svg: PathBuf,
        /// How many leaf frames to list.
        #[arg(long, default_value_t = 15)]
        top: usize,
    },
    /// Open every key store of a configuration and list its keys (type, SKI,
    /// where they live), or say what failed and why (as gokeyless's
    /// --keystore-debug). Exits non-zero if any store fails or is empty.
    KeystoreDebug {
        /// The key server's configuration file (default: as the server
        /// finds it, ./gokeyless.yaml then /etc/keyless/gokeyless.yaml).
        #[arg(short = 'c', long = "config-file", env = "KEYLESS_CONFIG_FILE")]
        config_file: Option<PathBuf>,
    },
    /// Create a session-ticket key file for edges to share, or rotate it
    /// (add a new current key, drop keys past rotation + lifetime). Edges
    /// reading the file pick the change up by themselves.
    TicketKeys {
        /// The key file (created if missing, mode 0600).
        #[arg(long)]
        file: PathBuf,
        /// Add a new current key.
        #[arg(long)]
        rotate: bool,
        /// The edges' rotation period (how long a key encrypts), as
        /// edge.yaml's `rotation`: `1h`, `30m`, or seconds.
        #[arg(long, value_parser = keyless_service::yaml::parse_duration, default_value = "1h",
              conflicts_with = "rotation_s")]
        rotation: std::time::Duration,
        /// Ticket lifetime (how long a key must still decrypt), as edge.yaml's
        /// `lifetime`: `18h`, or seconds.
        #[arg(long, value_parser = keyless_service::yaml::parse_duration, default_value = "18h",
              conflicts_with = "lifetime_s")]
        lifetime: std::time::Duration,
        /// The rotation period in seconds (the older spelling of --rotation).
        #[arg(long, hide_short_help = true)]
        rotation_s: Option<u64>,
        /// The lifetime in seconds (the older spelling of --lifetime).
        #[arg(long, hide_short_help = true)]
        lifetime_s: Option<u64>,
    },
    /// Run the conformance suite against a key server (ours or gokeyless).
    Conformance {
        /// Key server address, HOST:PORT.
        #[arg(long)]
        server: String,
        /// Name to verify in the server's certificate (default: HOST).
        #[arg(long)]
        server_name: Option<String>,
        /// CA that signed the server's certificate.
        #[arg(long)]
        ca: PathBuf,
        /// Client certificate.
        #[arg(long)]
        cert: PathBuf,
        /// Client certificate's private key.
        #[arg(long)]
        key: PathBuf,
        /// Folder of public keys or certificates of the keys the server holds.
        #[arg(long)]
        pubkeys: PathBuf,
        /// The keys are cloud key versions, each made for one algorithm:
        /// ask the server which signatures each makes (each must make one),
        /// then expect bad-opcode for the rest.
        #[arg(long)]
        cloud_keys: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Dev {
            dir,
            port,
            key_server_port,
            metrics_port,
            loglevel,
        } => {
            let ports = keyless_edge::dev::Ports {
                edge: port,
                metrics: metrics_port,
                key_server: key_server_port,
            };
            let code = match dev::run(&dir, &ports, loglevel) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keyless-tool dev: {e}");
                    ExitCode::FAILURE
                }
            };
            keyless_service::flush_logs();
            code
        }
        Command::Man { out } => match manuals::write(&out) {
            Ok(written) => {
                println!("{written} files written to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keyless-tool: {e}");
                ExitCode::FAILURE
            }
        },
        Command::GenPki { out, port, force } if !force && keyless_pki::DevPki::at(&out).ca_cert.exists() => {
            let _ = port;
            eprintln!(
                "keyless-tool: {} already holds a PKI (its CA signs certificates in use); \
                 use --force to replace it, or --out for another folder",
                out.display()
            );
            ExitCode::FAILURE
        }
        Command::GenPki { out, port, .. } => match keyless_pki::DevPki::generate(&out, keyless_pki::DEFAULT_KEYS, port)
        {
            Ok(pki) => {
                println!("development PKI written to {}", pki.dir.display());
                println!("start a key server with: keyless-server -c {}", pki.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keyless-tool: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Flamegraph { perf_script, svg, top } => {
            match keyless_tools::flame::from_perf_script(&perf_script, &svg, top) {
                Ok(frames) => {
                    println!("flame graph written to {}; top frames by samples:", svg.display());
                    for (name, pct) in frames {
                        println!("{pct:6.2}%  {name}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keyless-tool: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::TicketKeys {
            file,
            rotate,
            rotation,
            lifetime,
            rotation_s,
            lifetime_s,
        } => {
            let result = keyless_edge::tickets::manage_key_file(
                &file,
                rotate,
                rotation_s.map_or(rotation, std::time::Duration::from_secs),
                lifetime_s.map_or(lifetime, std::time::Duration::from_secs),
            );
            match result {
                Ok(keys) => {
                    println!("{}: {} ticket key(s)", file.display(), keys.keys.len());
                    for k in &keys.keys {
                        println!("  {}  made {} (unix seconds)", k.name, k.created);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keyless-tool: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::KeystoreDebug { config_file } => {
            let cli = keyless_server::config::Options {
                config_file,
                ..Default::default()
            };
            match keyless_server::config::load(&cli) {
                Ok(settings) => {
                    let (text, ok) = keyless_server::keystore::debug(&settings);
                    print!("{text}");
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("keyless-tool: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Conformance {
            server,
            server_name,
            ca,
            cert,
            key,
            pubkeys,
            cloud_keys,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build();
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("keyless-tool: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run_conformance(
                &server,
                server_name,
                &ca,
                &cert,
                &key,
                &pubkeys,
                cloud_keys,
            )) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("keyless-tool: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run_conformance(
    server: &str,
    server_name: Option<String>,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    pubkeys: &std::path::Path,
    cloud_keys: bool,
) -> Result<bool, String> {
    let host = server
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(server);
    let addr: SocketAddr = tokio::net::lookup_host(server)
        .await
        .map_err(|e| format!("{server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server}: no address"))?;
    let tls = keyless_client::client_config_from_files(ca, cert, key).map_err(|e| e.to_string())?;
    let keys = conformance::load_expected_keys(pubkeys)?;
    let name = server_name.unwrap_or_else(|| host.to_owned());
    let conn = keyless_client::connect(addr, &name, tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut expected = Vec::new();
    for key in keys {
        if cloud_keys {
            let served = conformance::served_operations(&conn, &key).await?;
            println!("      {} serves {served:?}", key.name);
            expected.push(key.serving(served));
        } else {
            expected.push(key);
        }
    }
    let report = conformance::run(&conn, &expected).await;
    for o in &report.outcomes {
        match &o.result {
            Ok(()) => println!("ok    {}", o.name),
            Err(e) => println!("FAIL  {}: {e}", o.name),
        }
    }
    let failed = report.failed().count();
    println!("{} passed, {} failed", report.passed(), failed);
    Ok(failed == 0)
}
