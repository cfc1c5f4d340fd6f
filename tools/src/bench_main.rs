//! `keyless-bench`: load generator for keyless key servers (ours or gokeyless).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use keyless_tools::bench::cli::{Cli, Command, LoadArgs, Target};
use keyless_tools::bench::load::{self, LoadSpec, Mode};
use keyless_tools::bench::op::BenchOp;
use keyless_tools::bench::{ceiling, sweep};
use keyless_tools::conformance::load_expected_key;
use rustls_pki_types::pem::PemObject;

fn main() -> ExitCode {
    match real_main() {
        Ok(ok) if ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("keyless-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<bool, String> {
    match Cli::parse().command {
        Command::Ceiling {
            key_file,
            op,
            duration,
            multibuffer_library,
            json,
        } => {
            let op = op.as_deref().map(BenchOp::parse).transpose()?;
            let r = ceiling::measure(
                &key_file,
                op,
                Duration::from_secs_f64(duration),
                multibuffer_library.as_deref(),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?);
            } else {
                println!(
                    "ceiling {} with {}: {:.0} ops/s ({:.1} us/op) on one core",
                    r.operation, r.key, r.ops_per_sec, r.us_per_op
                );
                match r.multibuffer_ops_per_sec {
                    Some(mb) => println!(
                        "multi-buffer ceiling, 8 lanes per call: {mb:.0} ops/s ({:.2}x) with {}",
                        mb / r.ops_per_sec,
                        r.multibuffer
                    ),
                    None => println!("no multi-buffer ceiling: {}", r.multibuffer),
                }
            }
            Ok(true)
        }
        Command::Handshake {
            server,
            server_name,
            ca,
            mode,
            tls,
            concurrency,
            duration,
            warmup,
            cert,
            key,
            threads,
            json,
        } => {
            use keyless_tools::bench::handshake;
            let resumed = match mode.as_str() {
                "full" => false,
                "resumed" => true,
                other => return Err(format!("--mode {other}: full or resumed")),
            };
            let version = match tls.as_str() {
                "1.2" => &rustls::version::TLS12,
                "1.3" => &rustls::version::TLS13,
                other => return Err(format!("--tls {other}: 1.2 or 1.3")),
            };
            let roots = roots(&ca)?;
            let client_auth = match (cert, key) {
                (Some(c), Some(k)) => {
                    let pem = std::fs::read(&c).map_err(|e| format!("{}: {e}", c.display()))?;
                    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("{}: {e}", c.display()))?;
                    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&k)
                        .map_err(|e| format!("{}: {e}", k.display()))?;
                    Some((chain, key))
                }
                (None, None) => None,
                _ => return Err("--cert and --key go together".into()),
            };
            let rt = runtime(threads)?;
            let addr = lookup(&rt, &server)?;
            let spec = handshake::HandshakeSpec {
                server: addr,
                server_name,
                tls: handshake::client_config(roots, version, resumed, client_auth)?,
                concurrency,
                duration: Duration::from_secs_f64(duration),
                warmup: Duration::from_secs_f64(warmup),
                fetch_after: resumed && tls == "1.3",
            };
            let r = rt.block_on(handshake::run(spec))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?);
            } else {
                println!(
                    "{:.0} handshakes/s ({} in {:.1} s, {} resumed, {} failed); latency p50 {:.0} us, p99 {:.0} us, max {:.0} us",
                    r.handshakes_per_sec, r.handshakes, r.duration_s, r.resumed, r.failures,
                    r.latency.p50_us, r.latency.p99_us, r.latency.max_us
                );
                if let Some(e) = &r.first_error {
                    println!("first error: {e}");
                }
            }
            Ok(r.failures == 0)
        }
        Command::Hold {
            server,
            kind,
            server_name,
            ca,
            cert,
            key,
            connections,
            parallel,
            hold,
            bind,
            threads,
            json,
        } => {
            use keyless_tools::bench::hold;
            let rt = runtime(threads)?;
            let addr = lookup(&rt, &server)?;
            let (kind, tls) = match kind.as_str() {
                "edge" => {
                    let tls = keyless_tools::bench::handshake::client_config(
                        roots(&ca)?,
                        &rustls::version::TLS13,
                        false,
                        None,
                    )?;
                    (hold::Kind::Edge, tls)
                }
                "key-server" => (
                    hold::Kind::KeyServer,
                    keyless_client::client_config_from_files(&ca, &cert, &key).map_err(|e| e.to_string())?,
                ),
                other => return Err(format!("--kind {other}: edge or key-server")),
            };
            let spec = hold::HoldSpec {
                server: addr,
                server_name,
                tls,
                kind,
                connections,
                parallel,
                hold: Duration::from_secs_f64(hold),
                bind,
            };
            let r = rt.block_on(hold::run(spec));
            if json {
                println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            } else {
                println!(
                    "{} opened in {:.1} s, {} failed, {} still open after the hold{}",
                    r.opened,
                    r.open_seconds,
                    r.failed,
                    r.still_open,
                    r.first_error
                        .as_deref()
                        .map(|e| format!("; first error: {e}"))
                        .unwrap_or_default()
                );
            }
            Ok(r.failed == 0)
        }
        Command::DelayProxy { listen, to, delay_ms } => {
            let rt = runtime(1)?;
            rt.block_on(keyless_tools::bench::handshake::delay_proxy(
                listen,
                to,
                Duration::from_secs_f64(delay_ms / 1000.0),
            ))?;
            Ok(true)
        }
        Command::HsmCeiling {
            uri,
            op,
            sessions,
            duration,
            json,
        } => {
            let bench_op = BenchOp::parse(&op)?;
            let operation = bench_op.operation.ok_or("the ceiling needs a private-key operation")?;
            let input = vec![0x5Au8; operation.digest().map_or(32, |h| h.len())];
            let source = keyless_keys::Pkcs11Source::new(uri);
            let r =
                keyless_hsm::ceiling::measure(&source, operation, &input, sessions, Duration::from_secs_f64(duration))?;
            keyless_hsm::shutdown(Duration::from_secs(2));
            if json {
                let value = serde_json::json!({
                    "operation": bench_op.name(),
                    "sessions": sessions,
                    "ops": r.ops,
                    "duration_s": r.seconds,
                    "ops_per_sec": r.ops_per_sec(),
                });
                println!("{value}");
            } else {
                println!(
                    "HSM ceiling {} on {sessions} session(s): {:.0} ops/s",
                    bench_op.name(),
                    r.ops_per_sec()
                );
            }
            Ok(true)
        }
        Command::Run {
            target,
            load: args,
            rate,
            pause_us,
            json,
        } => {
            let mode = match rate {
                Some(rate) => Mode::Open { rate },
                None => Mode::Closed {
                    pause: Duration::from_micros(pause_us),
                },
            };
            let rt = runtime(args.threads)?;
            let spec = rt.block_on(spec(&target, &args, mode))?;
            let report = rt.block_on(run_with_progress(spec, !json))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
            } else {
                report.print();
            }
            Ok(report.verify_failures == 0)
        }
        Command::Sweep {
            target,
            load: args,
            levels,
            svg,
            json,
        } => {
            let rt = runtime(args.threads)?;
            let base = rt.block_on(spec(&target, &args, Mode::Closed { pause: Duration::ZERO }))?;
            let mut rows = Vec::new();
            for level in levels {
                let s = LoadSpec {
                    in_flight: level,
                    ..base.clone()
                };
                rows.push(rt.block_on(run_with_progress(s, !json))?);
            }
            let title = format!("{} on {}: throughput vs p99", base.op.name(), base.addr);
            sweep::write_svg(&rows, &svg, &title)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
            } else {
                sweep::print_table(&rows);
                println!("plot written to {}", svg.display());
            }
            Ok(rows.iter().all(|r| r.verify_failures == 0))
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

async fn spec(target: &Target, args: &LoadArgs, mode: Mode) -> Result<LoadSpec, String> {
    let addr: SocketAddr = tokio::net::lookup_host(&target.server)
        .await
        .map_err(|e| format!("{}: {e}", target.server))?
        .next()
        .ok_or_else(|| format!("{}: no address", target.server))?;
    let host = target
        .server
        .rsplit_once(':')
        .map_or(target.server.as_str(), |(h, _)| h.trim_matches(['[', ']']));
    let tls =
        keyless_client::client_config_from_files(&target.ca, &target.cert, &target.key).map_err(|e| e.to_string())?;
    let key = load_expected_key(&target.pubkey)?;
    let alg = key.info.algorithm;
    let op = match &target.op {
        Some(name) => BenchOp::parse(name)?,
        None => BenchOp::default_for(alg),
    };
    if let Some(operation) = op.operation {
        if !operation.applies_to(alg) {
            return Err(format!("{} cannot be done with a {alg} key", op.name()));
        }
    }
    Ok(LoadSpec {
        addr,
        server_name: target.server_name.clone().unwrap_or_else(|| host.to_owned()),
        tls,
        op,
        ski: key.info.ski,
        payload_len: op.payload_len(alg),
        connections: args.connections.max(1),
        in_flight: args.in_flight.max(1),
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        mode,
        verify_every: args.verify_every,
        verifier: Some(Arc::new(key.verifier)),
        spin: args.spin,
    })
}

async fn run_with_progress(spec: LoadSpec, show: bool) -> Result<keyless_tools::bench::report::LoadReport, String> {
    let live = Arc::new(load::Live::default());
    let total = spec.warmup + spec.duration;
    let bar = if show {
        ProgressBar::new(total.as_millis() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template("{bar:30} {elapsed}/{duration} {msg}").map_err(|e| e.to_string())?);
    let ticker = {
        let live = live.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut last = 0u64;
            let mut interval = tokio::time::interval(Duration::from_millis(500));
            loop {
                interval.tick().await;
                let ok = live.ok.load(Ordering::Relaxed);
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!(
                    "{:.0} ops/s, {} errors",
                    (ok - last) as f64 * 2.0,
                    live.errors.load(Ordering::Relaxed)
                ));
                last = ok;
            }
        })
    };
    let result = load::run(spec, live).await;
    ticker.abort();
    bar.finish_and_clear();
    result
}

/// The CA certificates in `ca` (PEM), as rustls's trust roots.
fn roots(ca: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// The first address of `server` (HOST:PORT).
fn lookup(rt: &tokio::runtime::Runtime, server: &str) -> Result<std::net::SocketAddr, String> {
    rt.block_on(tokio::net::lookup_host(server))
        .map_err(|e| format!("{server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server}: no address"))
}
