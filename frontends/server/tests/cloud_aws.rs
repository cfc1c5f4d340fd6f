//! AWS KMS keys served by a real `keyless-server` process, against a KMS
//! run locally: moto's server mode (`tests/support/moto_kms.py`), with its
//! DIGEST signing and PSS salt made to behave as AWS KMS's do (moto 5.2.5
//! hashes a digest again: getmoto/moto#10202). Keys are created through
//! the emulator's API with the official SDK; every signature is verified
//! against the key's `GetPublicKey`.

mod running;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec, KeyUsageType, SigningAlgorithmSpec};
use futures_util::future::join_all;
use keyless_keys::{Hash, Operation};
use keyless_protocol::{ErrorCode, Opcode};
use keyless_tools::conformance::{self, ExpectedKey};
use keyless_tools::process::KillOnDrop;
use running::*;

/// The Python that has moto: `$KEYLESS_TEST_PYTHON`, else the virtual
/// environment `.ci/run` makes, else `python3`.
fn python() -> String {
    const VENV: &str = "/opt/keyless-moto/bin/python";
    std::env::var("KEYLESS_TEST_PYTHON")
        .unwrap_or_else(|_| if Path::new(VENV).exists() { VENV } else { "python3" }.into())
}

/// A moto KMS server on a free port, stopped when dropped.
struct Moto {
    _child: KillOnDrop,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_kms.py");
        let mut child = KillOnDrop(
            Command::new(python())
                .arg(&script)
                .arg(port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("python3 with moto[server] (pip install 'moto[server]==5.2.5')"),
        );
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "moto did not start (is moto[server] installed?)");
        Moto {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// What the key server needs to find this KMS: the SDK's standard
    /// endpoint variable and (fake) static credentials.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_KMS", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "AKIDKEYLESSTEST".into()),
            ("AWS_SECRET_ACCESS_KEY", "keyless-test-secret".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    async fn client(&self) -> aws_sdk_kms::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "AKID", "secret", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_kms::Client::new(&config)
    }
}

/// A key made through the emulator's API: its ARN and what the test
/// expects of it (public key and signing algorithms from `GetPublicKey`).
struct Made {
    arn: String,
    expected: ExpectedKey,
}

async fn make(kms: &aws_sdk_kms::Client, spec: KeySpec, usage: KeyUsageType, description: &str) -> Made {
    let arn = kms
        .create_key()
        .key_spec(spec.clone())
        .key_usage(usage.clone())
        .description(description)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .arn
        .unwrap();
    let public = kms.get_public_key().key_id(&arn).send().await.unwrap();
    let spki = public.public_key.unwrap().into_inner();
    let serves = public
        .signing_algorithms
        .unwrap_or_default()
        .iter()
        .filter_map(|a| {
            Some(match a {
                SigningAlgorithmSpec::EcdsaSha256 => Operation::Ecdsa(Hash::Sha256),
                SigningAlgorithmSpec::EcdsaSha384 => Operation::Ecdsa(Hash::Sha384),
                SigningAlgorithmSpec::EcdsaSha512 => Operation::Ecdsa(Hash::Sha512),
                SigningAlgorithmSpec::RsassaPkcs1V15Sha256 => Operation::RsaPkcs1(Hash::Sha256),
                SigningAlgorithmSpec::RsassaPkcs1V15Sha384 => Operation::RsaPkcs1(Hash::Sha384),
                SigningAlgorithmSpec::RsassaPkcs1V15Sha512 => Operation::RsaPkcs1(Hash::Sha512),
                SigningAlgorithmSpec::RsassaPssSha256 => Operation::RsaPss(Hash::Sha256),
                SigningAlgorithmSpec::RsassaPssSha384 => Operation::RsaPss(Hash::Sha384),
                SigningAlgorithmSpec::RsassaPssSha512 => Operation::RsaPss(Hash::Sha512),
                _ => return None,
            })
        })
        .collect();
    let expected = ExpectedKey::from_spki(&format!("{spec:?}"), &spki)
        .unwrap()
        .serving(serves);
    Made { arn, expected }
}

/// The dev PKI's configuration with `uris` as its only key stores.
fn configure(pki: &keyless_pki::DevPki, uris: &[&str], extra: &str) {
    let config = std::fs::read_to_string(&pki.config).unwrap();
    let stores: String = uris.iter().map(|u| format!("  - uri: {u}\n")).collect();
    let dir_line = format!("  - dir: {}\n", pki.keys_dir.display());
    assert!(config.contains(&dir_line), "{config}");
    std::fs::write(
        &pki.config,
        config.replace(&dir_line, &format!("{dir_line}{stores}")) + extra,
    )
    .unwrap();
}

fn start(pki_dir: tempfile::TempDir, pki: keyless_pki::DevPki, env: &[(&'static str, String)]) -> Running {
    let env: Vec<(&str, std::path::PathBuf)> = env.iter().map(|(k, v)| (*k, v.into())).collect();
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    Running::start_in(pki_dir, pki, &[], &env)
}

fn new_pki() -> (tempfile::TempDir, keyless_pki::DevPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), &[("file-p256", keyless_pki::KeyType::EcdsaP256)], 0).unwrap();
    (dir, pki)
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// P-256, P-384 and RSA-2048 KMS keys pass the conformance suite through
/// the binary (what a key version was not made for is a bad opcode); a
/// key that is throttled twice still signs, the throttling is logged once
/// and counted; metrics show each store.
#[test]
fn kms_keys_pass_the_conformance_suite_through_the_binary() {
    let moto = Moto::start();
    let (keys, throttled, later) = block_on(async {
        let kms = moto.client().await;
        let keys = vec![
            make(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify, "site").await,
            make(&kms, KeySpec::EccNistP384, KeyUsageType::SignVerify, "site").await,
            make(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify, "site").await,
        ];
        let throttled = make(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify, "throttle=2").await;
        let later = make(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify, "site").await;
        (keys, throttled, later)
    });
    let (dir, pki) = new_pki();
    let uris: Vec<&str> = keys.iter().chain([&throttled]).map(|k| k.arn.as_str()).collect();
    configure(&pki, &uris, "");
    let running = start(dir, pki, &moto.env());

    block_on(async {
        let conn = keyless_client::connect(running.addr, "localhost", client_tls(&running.pki))
            .await
            .unwrap();
        let expected: Vec<ExpectedKey> = keys.into_iter().map(|k| k.expected).collect();
        // What `keyless-tool conformance --cloud-keys` asks of the server
        // matches what the KMS says each key version signs.
        for key in &expected {
            let served = conformance::served_operations(&conn, key).await.unwrap();
            assert_eq!(Some(&served), key.serves.as_ref(), "{}", key.name);
        }
        let report = conformance::run(&conn, &expected).await;
        let failures: Vec<String> = report.failed().map(|o| format!("{}: {:?}", o.name, o.result)).collect();
        assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), running.log());
        assert!(report.passed() > 3 * 5, "only {} checks ran", report.passed());

        let digest = [7u8; 32];
        let signature = conn
            .perform(Opcode::ECDSA_SIGN_SHA256, throttled.expected.info.ski, &digest)
            .await
            .expect("retried past two ThrottlingExceptions");
        throttled
            .expected
            .verifier
            .verify(Operation::Ecdsa(Hash::Sha256), &digest, &signature)
            .unwrap();
    });
    let log = running.log();
    assert_eq!(count(&log, "throttled: "), 1, "throttling logged once:\n{log}");
    // The SDK's threads call KMS from inside the sandbox (on by default),
    // allowed to connect to moto's port, which AWS_ENDPOINT_URL names.
    assert!(
        log.contains("sandbox: landlock enforced") && log.contains("seccomp on every thread"),
        "{log}"
    );

    // A key added to the file is served after SIGHUP, on the same terms.
    configure(&running.pki, &[&later.arn], "");
    running.signal("-HUP");
    block_on(async {
        let conn = keyless_client::connect(running.addr, "localhost", client_tls(&running.pki))
            .await
            .unwrap();
        let digest = [9u8; 32];
        let deadline = Instant::now() + Duration::from_secs(20);
        let signature = loop {
            match conn
                .perform(Opcode::RSA_PSS_SIGN_SHA256, later.expected.info.ski, &digest)
                .await
            {
                Ok(signature) => break signature,
                Err(keyless_client::ClientError::Remote(ErrorCode::KeyNotFound)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("the new KMS key is not served after SIGHUP: {e}\n{}", running.log()),
            }
        };
        later
            .expected
            .verifier
            .verify(Operation::RsaPss(Hash::Sha256), &digest, &signature)
            .unwrap();
    });
    let metrics = http_get(running.metrics_port, "/metrics");
    let store = &throttled.arn;
    for line in [
        format!("keyless_cloud_errors_total{{store=\"{store}\",cause=\"throttled\"}} 2"),
        format!("keyless_cloud_signatures_total{{store=\"{store}\"}} 1"),
        format!("keyless_cloud_in_flight{{store=\"{store}\"}} 0"),
        format!("keyless_cloud_duration_seconds_count{{store=\"{store}\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

/// A store that cannot load stops start-up (and `--test-config`) with the
/// entry and the cause: a disabled key, a key made for encryption, a key
/// that does not exist, and no credentials at all. `--keystore-debug`
/// lists a good key with its SKI and algorithm and names the broken one.
#[test]
fn a_cloud_key_that_cannot_load_stops_start_up_with_its_entry_and_cause() {
    let moto = Moto::start();
    let (good, disabled, encrypting) = block_on(async {
        let kms = moto.client().await;
        let good = make(&kms, KeySpec::EccNistP384, KeyUsageType::SignVerify, "site").await;
        let disabled = make(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify, "off").await;
        let id = disabled.arn.rsplit('/').next().unwrap();
        kms.disable_key().key_id(id).send().await.unwrap();
        let encrypting = make(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt, "data").await;
        (good, disabled.arn, encrypting.arn)
    });
    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000".to_string();
    let no_credentials: Vec<(&'static str, String)> = vec![
        ("AWS_ENDPOINT_URL_KMS", moto.endpoint.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
        ("AWS_CONFIG_FILE", "/nonexistent".into()),
    ];
    for (arn, env, says) in [
        (&disabled, moto.env(), "key disabled"),
        (&encrypting, moto.env(), "SIGN_VERIFY"),
        (&missing, moto.env(), "key not found"),
        (&disabled, no_credentials, "no credentials"),
    ] {
        let (_dir, pki) = new_pki();
        configure(&pki, &[arn], "");
        let out = server()
            .arg("-c")
            .arg(&pki.config)
            .arg("--test-config")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{arn} loaded:\n{stderr}");
        assert!(
            stderr.contains(arn.as_str()) && stderr.contains(says),
            "{arn}: want {says:?} in:\n{stderr}"
        );
    }

    let (_dir, pki) = new_pki();
    configure(&pki, &[&good.arn, &disabled], "");
    let out = server()
        .arg("-c")
        .arg(&pki.config)
        .arg("--keystore-debug")
        .envs(moto.env())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "a failed store fails keystore-debug:\n{text}");
    let listed = format!("ECDSA P-384  SKI {}  {}", good.expected.info.ski_hex(), good.arn);
    assert!(text.contains(&listed), "want {listed:?} in:\n{text}");
    assert!(
        text.contains(&format!("uri: {disabled}\n  FAILED: ")) && text.contains("key disabled"),
        "{text}"
    );
}

/// A core serving file keys keeps serving them while 64 requests wait on
/// a KMS key that answers after 200 ms; every slow answer still arrives
/// and verifies. Prints the throughput of a KMS key with 1 and 64 in flight.
#[test]
fn file_keys_are_served_while_cloud_calls_are_slow() {
    let moto = Moto::start();
    let (slow, quick) = block_on(async {
        let kms = moto.client().await;
        (
            make(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify, "delay-ms=200").await,
            // What a KMS in a region a few milliseconds away feels like.
            make(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify, "delay-ms=20").await,
        )
    });
    let (dir, pki) = new_pki();
    configure(&pki, &[&slow.arn, &quick.arn], "workers: 1\n");
    let file_key = conformance::load_expected_keys(&pki.pubkeys_dir).unwrap().remove(0);
    let running = start(dir, pki, &moto.env());
    block_on(async {
        let tls = client_tls(&running.pki);
        let slow_conn = keyless_client::connect(running.addr, "localhost", tls.clone())
            .await
            .unwrap();
        let file_conn = keyless_client::connect(running.addr, "localhost", tls.clone())
            .await
            .unwrap();
        let op = Operation::Ecdsa(Hash::Sha256);

        // The file key's pace alone, for the figure below.
        let alone = Instant::now();
        let mut baseline = 0;
        while alone.elapsed() < Duration::from_millis(100) {
            let digest = [baseline as u8; 32];
            let sig = file_conn
                .perform(Opcode::ECDSA_SIGN_SHA256, file_key.info.ski, &digest)
                .await
                .unwrap();
            file_key.verifier.verify(op, &digest, &sig).unwrap();
            baseline += 1;
        }

        let started = Instant::now();
        let slow_calls = join_all((0..64u8).map(|i| {
            let conn = &slow_conn;
            async move {
                (
                    [i; 32],
                    conn.perform(Opcode::ECDSA_SIGN_SHA256, slow.expected.info.ski, &[i; 32])
                        .await,
                )
            }
        }));
        let file_calls = async {
            let mut answered = Vec::new();
            // File-key requests one after another until 180 ms: all of it
            // before the first slow answer can arrive.
            while started.elapsed() < Duration::from_millis(180) {
                let digest = [answered.len() as u8; 32];
                let sig = file_conn
                    .perform(Opcode::ECDSA_SIGN_SHA256, file_key.info.ski, &digest)
                    .await
                    .unwrap();
                answered.push((digest, sig, started.elapsed()));
            }
            answered
        };
        let (slow_results, answered) = futures_util::future::join(slow_calls, file_calls).await;
        let slow_elapsed = started.elapsed();
        assert!(
            answered.len() > 10,
            "only {} file-key answers while cloud calls waited",
            answered.len()
        );
        for (digest, sig, _) in &answered {
            file_key.verifier.verify(op, digest, sig).unwrap();
        }
        for (digest, result) in slow_results {
            slow.expected.verifier.verify(op, &digest, &result.unwrap()).unwrap();
        }
        // From 80 ms on, moto has taken all 64 calls and sleeps: what is
        // left is whether the core waits for them (it must not).
        let waiting = answered
            .iter()
            .filter(|(_, _, at)| (Duration::from_millis(80)..Duration::from_millis(180)).contains(at))
            .count();
        eprintln!(
            "figure: one client, one request at a time, 100 ms: {baseline} file-key signatures alone, {waiting} while 64 KMS calls of 200 ms were in flight ({:.0}%; {} in the first 180 ms; the KMS calls all answered after {slow_elapsed:?})",
            100.0 * waiting as f64 / baseline as f64,
            answered.len()
        );

        // Figure: the offload path is concurrent.
        for in_flight in [1usize, 64] {
            let total = 256usize;
            let started = Instant::now();
            let mut done = 0;
            while done < total {
                let wave = join_all((0..in_flight).map(|i| {
                    let conn = &slow_conn;
                    let digest = [(done + i) as u8; 32];
                    async move {
                        (
                            digest,
                            conn.perform(Opcode::ECDSA_SIGN_SHA256, quick.expected.info.ski, &digest)
                                .await,
                        )
                    }
                }))
                .await;
                for (digest, result) in wave {
                    quick.expected.verifier.verify(op, &digest, &result.unwrap()).unwrap();
                }
                done += in_flight;
            }
            let rate = total as f64 / started.elapsed().as_secs_f64();
            eprintln!("figure: KMS key through moto (20 ms per call), {in_flight} in flight: {rate:.0} signatures/s");
        }

        // What the key version was not made for is refused without a call.
        let r = slow_conn
            .perform(Opcode::ECDSA_SIGN_SHA384, quick.expected.info.ski, &[1; 48])
            .await;
        assert!(
            matches!(r, Err(keyless_client::ClientError::Remote(ErrorCode::BadOpcode))),
            "{r:?}"
        );
    });
    let metrics = http_get(running.metrics_port, "/metrics");
    let line = format!("keyless_cloud_signatures_total{{store=\"{}\"}} 512", quick.arn);
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
}
