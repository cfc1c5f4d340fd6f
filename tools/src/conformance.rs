//! The conformance suite: every opcode against every key, every answer checked.
//!
//! The same suite runs in our tests against our server and, through
//! `keyless-tool conformance`, against any key server an operator points it at.

use std::path::Path;

use futures_util::future::join_all;
use keyless_client::{ClientError, Connection};
use keyless_keys::memory::PublicKey;
use keyless_keys::{KeyAlgorithm, Operation, PublicKeyInfo};
use keyless_protocol::{ErrorCode, Message, Opcode, Ski};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A public key the server is expected to hold a private key for.
pub struct ExpectedKey {
    pub name: String,
    pub info: PublicKeyInfo,
    pub verifier: PublicKey,
    /// The operations the key serves when it serves fewer than its type
    /// allows (a cloud key version is made for one algorithm): the rest
    /// must be refused as bad opcodes. `None`: every one its type allows.
    pub serves: Option<Vec<Operation>>,
}

impl ExpectedKey {
    /// From a DER SubjectPublicKeyInfo.
    pub fn from_spki(name: &str, spki: &[u8]) -> Result<ExpectedKey, String> {
        let verifier = PublicKey::from_spki(spki).map_err(|e| format!("{name}: {e}"))?;
        let info = PublicKeyInfo::from_spki(verifier.algorithm(), spki.to_vec())?;
        Ok(ExpectedKey {
            name: name.to_owned(),
            info,
            verifier,
            serves: None,
        })
    }

    /// The key serves only `operations`.
    pub fn serving(mut self, operations: Vec<Operation>) -> ExpectedKey {
        self.serves = Some(operations);
        self
    }

    fn serves(&self, op: Operation) -> bool {
        op.applies_to(self.info.algorithm) && self.serves.as_ref().is_none_or(|s| s.contains(&op))
    }
}

/// Read every `*.pem`, `*.pub`, `*.crt` in `dir`: public keys or certificates.
pub fn load_expected_keys(dir: &Path) -> Result<Vec<ExpectedKey>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pem" || e == "pub" || e == "crt"))
        .collect();
    paths.sort();
    let keys = paths
        .iter()
        .map(|p| load_expected_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(format!("{}: no public keys (*.pem, *.pub, *.crt)", dir.display()));
    }
    Ok(keys)
}

/// Read one public key (`PUBLIC KEY` PEM) or certificate (`CERTIFICATE` PEM).
pub fn load_expected_key(path: &Path) -> Result<ExpectedKey, String> {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("key").to_owned();
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spki = if let Ok(key) = SubjectPublicKeyInfoDer::from_pem_slice(&text) {
        key.to_vec()
    } else if let Ok(cert) = CertificateDer::from_pem_slice(&text) {
        let (_, parsed) = X509Certificate::from_der(&cert).map_err(|e| format!("{}: {e}", path.display()))?;
        parsed.tbs_certificate.subject_pki.raw.to_vec()
    } else {
        return Err(format!("{}: neither a PUBLIC KEY nor a CERTIFICATE", path.display()));
    };
    ExpectedKey::from_spki(&name, &spki).map_err(|e| format!("{}: {e}", path.display()))
}

/// One check and how it went.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub result: Result<(), String>,
}

/// Every result of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_ok()).count()
    }

    pub fn failed(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| o.result.is_err())
    }

    fn record(&mut self, name: String, result: Result<(), String>) {
        self.outcomes.push(Outcome { name, result });
    }
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut v).expect("system randomness");
    v
}

fn input_for(op: Operation) -> Vec<u8> {
    random(op.digest().map_or(64, |h| h.len()))
}

fn expect_error(result: Result<Vec<u8>, ClientError>, want: ErrorCode) -> Result<(), String> {
    match result {
        Err(ClientError::Remote(code)) if code == want => Ok(()),
        Err(e) => Err(format!("expected {want}, got {e}")),
        Ok(_) => Err(format!("expected {want}, got a response")),
    }
}

async fn sign_and_verify(conn: &Connection, key: &ExpectedKey, opcode: Opcode, op: Operation) -> Result<(), String> {
    let input = input_for(op);
    let sig = conn
        .perform(opcode, key.info.ski, &input)
        .await
        .map_err(|e| e.to_string())?;
    key.verifier
        .verify(op, &input, &sig)
        .map_err(|e| format!("{e} ({} byte signature)", sig.len()))
}

/// Which signing operations `key` serves, asked of the server: for cloud
/// key versions, each made for one algorithm. An operation answered with a
/// signature that verifies is served; one answered bad-opcode is not;
/// anything else is an error.
pub async fn served_operations(conn: &Connection, key: &ExpectedKey) -> Result<Vec<Operation>, String> {
    let mut served = Vec::new();
    for opcode in Opcode::SIGNING {
        let op = Operation::from_kind(opcode.kind()).expect("signing opcode");
        if !op.applies_to(key.info.algorithm) {
            continue;
        }
        let input = input_for(op);
        match conn.perform(opcode, key.info.ski, &input).await {
            Ok(signature) => {
                key.verifier
                    .verify(op, &input, &signature)
                    .map_err(|e| format!("{}: {op:?}: {e}", key.name))?;
                served.push(op);
            }
            Err(ClientError::Remote(ErrorCode::BadOpcode)) => {}
            Err(e) => return Err(format!("{}: {op:?}: {e}", key.name)),
        }
    }
    if served.is_empty() {
        return Err(format!("{}: the server makes no signature with this key", key.name));
    }
    Ok(served)
}

/// Run the whole suite on one connection.
pub async fn run(conn: &Connection, keys: &[ExpectedKey]) -> Report {
    let mut report = Report::default();
    for key in keys {
        let alg = key.info.algorithm;
        for opcode in Opcode::SIGNING {
            let op = Operation::from_kind(opcode.kind()).expect("signing opcode");
            let name = format!("{} ({alg}): opcode 0x{:02x} {op:?}", key.name, opcode.0);
            if op.applies_to(alg) && !key.serves(op) {
                let r = conn.perform(opcode, key.info.ski, &input_for(op)).await;
                report.record(
                    format!("{name}: not served by this key"),
                    expect_error(r, ErrorCode::BadOpcode),
                );
            } else if op.applies_to(alg) {
                report.record(name.clone(), sign_and_verify(conn, key, opcode, op).await);
                if let Some(h) = op.digest() {
                    let short = random(h.len() - 1);
                    let r = conn.perform(opcode, key.info.ski, &short).await;
                    report.record(
                        format!("{name}: {}-byte digest refused", h.len() - 1),
                        expect_error(r, ErrorCode::Crypto),
                    );
                }
            } else {
                let r = conn.perform(opcode, key.info.ski, &input_for(op)).await;
                report.record(
                    format!("{name}: refused for this key type"),
                    expect_error(r, ErrorCode::Crypto),
                );
            }
        }
        if let KeyAlgorithm::Rsa { bits } = alg {
            if key.serves(Operation::RsaRawDecrypt) {
                report.record(
                    format!("{} ({alg}): raw RSA decrypt", key.name),
                    rsa_decrypt(conn, key, bits as usize).await,
                );
            } else {
                let r = conn
                    .perform(Opcode::RSA_DECRYPT, key.info.ski, &random(bits as usize / 8))
                    .await;
                report.record(
                    format!("{} ({alg}): raw RSA decrypt not served", key.name),
                    expect_error(r, ErrorCode::BadOpcode),
                );
            }
            report.record(
                format!("{} ({alg}): found by certificate digest", key.name),
                by_digest(conn, key).await,
            );
        }
        report.record(
            format!("{} ({alg}): 64 pipelined requests", key.name),
            pipelined(conn, key, 64).await,
        );
    }
    report.record("ping echoes its payload".into(), ping(conn).await);
    let r = conn.perform(Opcode::ECDSA_SIGN_SHA256, [0xEE; 20], &random(32)).await;
    report.record(
        "unknown SKI is key-not-found".into(),
        expect_error(r, ErrorCode::KeyNotFound),
    );
    let ski: Ski = keys.first().map_or([0; 20], |k| k.info.ski);
    for (op, want) in [
        (0x21, ErrorCode::BadOpcode),
        (0x22, ErrorCode::BadOpcode),
        (0x23, ErrorCode::BadOpcode),
        (0x24, ErrorCode::BadOpcode),
        (0x99, ErrorCode::BadOpcode),
        (0xF0, ErrorCode::UnexpectedOpcode),
        (0xF2, ErrorCode::UnexpectedOpcode),
        (0xFF, ErrorCode::UnexpectedOpcode),
    ] {
        let r = conn.perform(Opcode(op), ski, &random(32)).await;
        report.record(format!("opcode 0x{op:02x} is {want}"), expect_error(r, want));
    }
    report
}

async fn rsa_decrypt(conn: &Connection, key: &ExpectedKey, bits: usize) -> Result<(), String> {
    let mut plain = random(bits / 8);
    plain[0] = 0; // below the modulus
    let cipher = key.verifier.rsa_raw_encrypt(&plain).map_err(|e| e.to_string())?;
    let got = conn
        .perform(Opcode::RSA_DECRYPT, key.info.ski, &cipher)
        .await
        .map_err(|e| e.to_string())?;
    if got == plain {
        Ok(())
    } else {
        Err("decrypted bytes differ from the plaintext".into())
    }
}

async fn by_digest(conn: &Connection, key: &ExpectedKey) -> Result<(), String> {
    let digest = random(32);
    let request = Message {
        cert_digest: key.info.cert_digest,
        ..Message::request(Opcode::RSA_SIGN_SHA256, None, digest.clone())
    };
    let answer = conn.call(request).await.map_err(|e| e.to_string())?;
    let sig = keyless_client_response(answer)?;
    key.verifier
        .verify(Operation::RsaPkcs1(keyless_protocol::Hash::Sha256), &digest, &sig)
        .map_err(|e| e.to_string())
}

fn keyless_client_response(answer: Message) -> Result<Vec<u8>, String> {
    match answer.error_code() {
        Some(code) => Err(format!("error {code:?}")),
        None if answer.opcode == Some(Opcode::RESPONSE) => Ok(answer.payload.unwrap_or_default()),
        None => Err(format!("unexpected opcode {:?}", answer.opcode)),
    }
}

async fn pipelined(conn: &Connection, key: &ExpectedKey, n: usize) -> Result<(), String> {
    let served = Opcode::SIGNING
        .into_iter()
        .filter_map(|opcode| Some((opcode, Operation::from_kind(opcode.kind())?)))
        .find(|(_, op)| key.serves(*op));
    let (opcode, op) = match key.info.algorithm {
        _ if key.serves.is_some() => match served {
            Some(pair) => pair,
            None => return Err("the key serves no signing operation".into()),
        },
        KeyAlgorithm::Rsa { .. } => (
            Opcode::RSA_PSS_SIGN_SHA256,
            Operation::RsaPss(keyless_protocol::Hash::Sha256),
        ),
        KeyAlgorithm::Ed25519 => (Opcode::ED25519_SIGN, Operation::Ed25519),
        _ => (
            Opcode::ECDSA_SIGN_SHA256,
            Operation::Ecdsa(keyless_protocol::Hash::Sha256),
        ),
    };
    let results = join_all((0..n).map(|_| sign_and_verify(conn, key, opcode, op))).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(format!("{} of {n} failed; first: {first}", failures.len())),
    }
}

async fn ping(conn: &Connection) -> Result<(), String> {
    for payload in [b"".to_vec(), b"keyless".to_vec(), random(900)] {
        let echoed = conn.ping(&payload).await.map_err(|e| e.to_string())?;
        if echoed != payload {
            return Err(format!(
                "sent {} bytes, got back {} different bytes",
                payload.len(),
                echoed.len()
            ));
        }
    }
    Ok(())
}
