//! `keyless-edge -t` asks the key servers for one signature per
//! certificate, as `nginx -t` catches a certificate whose key does not
//! match: a certificate no key server holds the key of would fail every
//! full handshake (the client sees the connection close).

use std::sync::Arc;
use std::time::Duration;

use keyless_client::core::ServerState;
use keyless_client::pool::{KeyServerPool, PoolConfig};
use keyless_keys::memory::PublicKey;
use keyless_keys::{Hash, KeyAlgorithm, Operation, PublicKeyInfo};
use keyless_protocol::{Message, Opcode};

use crate::config::EdgeConfig;

/// One probe: the request for `public`'s key and how to check its answer.
fn request(public: &PublicKeyInfo) -> (Message, Operation, Vec<u8>) {
    let mut challenge = vec![0u8; 32];
    // A fresh challenge each time: a replayed answer cannot pass.
    aws_lc_rs::rand::fill(&mut challenge).expect("the CSPRNG works");
    let (opcode, op) = match public.algorithm {
        KeyAlgorithm::Rsa { .. } => (Opcode::RSA_PSS_SIGN_SHA256, Operation::RsaPss(Hash::Sha256)),
        KeyAlgorithm::Ed25519 => (Opcode::ED25519_SIGN, Operation::Ed25519),
        _ => (Opcode::ECDSA_SIGN_SHA256, Operation::Ecdsa(Hash::Sha256)),
    };
    (
        Message::request(opcode, Some(public.ski), challenge.clone()),
        op,
        challenge,
    )
}

/// Ask every key server `config` dials to sign for each certificate and
/// verify the answers. `Ok`: what was found (every certificate's key is on
/// at least one reachable key server); `Err`: which certificate no
/// reachable key server holds, or that none could be reached.
pub fn probe(config: &EdgeConfig) -> Result<String, String> {
    let servers: Vec<Arc<ServerState>> = crate::states(&crate::resolve(config)?);
    if servers.is_empty() {
        return Ok("key servers dial in: their keys are not checked here".into());
    }
    let tls = keyless_client::client_config_from_files(&config.key_server_ca, &config.client_cert, &config.client_key)
        .map_err(|e| format!("key server TLS: {e}"))?;
    let mut reachable = Vec::new();
    let mut unreachable = Vec::new();
    for server in &servers {
        let mut pool_config = PoolConfig::new(vec![server.addr.to_string()], tls.clone());
        pool_config.connections_per_server = 1;
        pool_config.request_timeout = config.request_timeout();
        let pool = KeyServerPool::start_with(vec![server.clone()], pool_config).map_err(|e| e.to_string())?;
        if pool.wait_healthy(Duration::from_secs(3)) {
            reachable.push((server.addr, pool));
        } else {
            unreachable.push(server.addr.to_string());
        }
    }
    if reachable.is_empty() {
        return Err(format!(
            "no key server answered within 3 s ({}): cannot check that they hold the certificates' keys",
            unreachable.join(", ")
        ));
    }
    for entry in &config.certificates {
        let (_, public, _) = crate::signer::read_certificate(&entry.cert)?;
        let verifier = PublicKey::from_spki(&public.spki_der).map_err(|e| format!("{}: {e}", entry.cert.display()))?;
        let mut holders = 0;
        let mut said = Vec::new();
        for (addr, pool) in &reachable {
            let (request, op, challenge) = request(&public);
            match pool.perform_blocking(request) {
                Ok(signature) => match verifier.verify(op, &challenge, &signature) {
                    Ok(()) => holders += 1,
                    Err(e) => said.push(format!(
                        "{addr}: its signature does not verify with the certificate ({e})"
                    )),
                },
                Err(e) => said.push(format!("{addr}: {e}")),
            }
        }
        if holders == 0 {
            return Err(format!(
                "{}: no key server holds the key of this certificate (SKI {}): {}",
                entry.cert.display(),
                public.ski_hex(),
                said.join("; ")
            ));
        }
    }
    let mut what = format!(
        "every certificate's key signs on {} of {} key servers",
        reachable.len(),
        servers.len()
    );
    if !unreachable.is_empty() {
        what.push_str(&format!(" ({} not reachable)", unreachable.join(", ")));
    }
    Ok(what)
}
