//! Certificates whose private keys live on key servers.
//!
//! rustls asks a [`SigningKey`] for the handshake's one signature. Ours
//! hashes locally and sends only the digest (the message itself for
//! Ed25519), with the SNI and the client's and server's addresses, to a key
//! server, as gokeyless's client does. rustls's `Signer::sign` is
//! synchronous, so the handshake step that may sign runs in a coroutine on
//! the core ([`crate::coroutine`]: `sign` suspends it until the core has
//! the answer) or, in the threads mode, on a handshake thread
//! ([`crate::handshake`]: `sign` blocks that thread). The addresses reach
//! the signer through a thread-local set around that step.

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::digest;
use keyless_client::pool::KeyServerPool;
use keyless_keys::memory::PublicKey;
use keyless_keys::{KeyAlgorithm, PublicKeyInfo};
use keyless_protocol::{Message, Opcode};
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use x509_parser::prelude::FromDer;

use crate::metrics::EdgeMetrics;

/// What a key server is told about the handshake it signs for.
#[derive(Debug, Clone)]
pub struct HandshakeContext {
    pub sni: Option<String>,
    pub client_ip: IpAddr,
    pub server_ip: IpAddr,
}

thread_local! {
    static CONTEXT: RefCell<Option<HandshakeContext>> = const { RefCell::new(None) };
}

/// Run `f` (a handshake step that may sign) with `ctx` visible to the signer.
pub fn with_context<R>(ctx: HandshakeContext, f: impl FnOnce() -> R) -> R {
    CONTEXT.with(|c| *c.borrow_mut() = Some(ctx));
    let result = f();
    CONTEXT.with(|c| *c.borrow_mut() = None);
    result
}

/// A certificate's key, held by the key servers.
#[derive(Debug)]
pub struct RemoteKey {
    public: PublicKeyInfo,
    /// The threads mode's pool (`None`: signatures come from coroutines).
    pool: Option<Arc<KeyServerPool>>,
    metrics: Arc<EdgeMetrics>,
}

impl RemoteKey {
    pub fn public(&self) -> &PublicKeyInfo {
        &self.public
    }
}

/// Read a certificate chain (PEM, leaf first) and make its certified key,
/// signing remotely with the key the leaf's public key names.
pub fn load_certified(
    path: &Path,
    pool: Option<Arc<KeyServerPool>>,
    metrics: Arc<EdgeMetrics>,
) -> Result<(Arc<CertifiedKey>, Vec<String>), String> {
    let (chain, public, names) = read_certificate(path)?;
    let key = Arc::new(RemoteKey { public, pool, metrics });
    Ok((Arc::new(CertifiedKey::new(chain, key)), names))
}

/// A certificate chain (PEM, leaf first), its leaf's public key (which
/// names the key on the key servers) and DNS names.
pub fn read_certificate(path: &Path) -> Result<(Vec<CertificateDer<'static>>, PublicKeyInfo, Vec<String>), String> {
    let chain = keyless_service::tls::load_certs(path).map_err(|e| e.to_string())?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("{}: no certificate", path.display()))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("{}: bad certificate: {e}", path.display()))?;
    let spki = cert.public_key().raw.to_vec();
    let algorithm = PublicKey::from_spki(&spki)
        .map_err(|e| format!("{}: public key: {e}", path.display()))?
        .algorithm();
    let public = PublicKeyInfo::from_spki(algorithm, spki).map_err(|e| format!("{}: {e}", path.display()))?;
    let names = dns_names(&cert);
    Ok((chain, public, names))
}

fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    names
}

/// The schemes a key type can sign, in our order of preference.
fn schemes(algorithm: KeyAlgorithm) -> &'static [SignatureScheme] {
    use SignatureScheme::*;
    match algorithm {
        KeyAlgorithm::Rsa { .. } => &[
            RSA_PSS_SHA256,
            RSA_PSS_SHA384,
            RSA_PSS_SHA512,
            RSA_PKCS1_SHA256,
            RSA_PKCS1_SHA384,
            RSA_PKCS1_SHA512,
        ],
        KeyAlgorithm::EcdsaP256 => &[ECDSA_NISTP256_SHA256],
        KeyAlgorithm::EcdsaP384 => &[ECDSA_NISTP384_SHA384],
        KeyAlgorithm::EcdsaP521 => &[ECDSA_NISTP521_SHA512],
        KeyAlgorithm::Ed25519 => &[ED25519],
    }
}

/// The keyless opcode and local hash for a scheme (no hash: Ed25519 signs
/// the message itself).
fn opcode(scheme: SignatureScheme) -> Option<(Opcode, Option<&'static digest::Algorithm>)> {
    use SignatureScheme::*;
    Some(match scheme {
        RSA_PSS_SHA256 => (Opcode::RSA_PSS_SIGN_SHA256, Some(&digest::SHA256)),
        RSA_PSS_SHA384 => (Opcode::RSA_PSS_SIGN_SHA384, Some(&digest::SHA384)),
        RSA_PSS_SHA512 => (Opcode::RSA_PSS_SIGN_SHA512, Some(&digest::SHA512)),
        RSA_PKCS1_SHA256 => (Opcode::RSA_SIGN_SHA256, Some(&digest::SHA256)),
        RSA_PKCS1_SHA384 => (Opcode::RSA_SIGN_SHA384, Some(&digest::SHA384)),
        RSA_PKCS1_SHA512 => (Opcode::RSA_SIGN_SHA512, Some(&digest::SHA512)),
        ECDSA_NISTP256_SHA256 => (Opcode::ECDSA_SIGN_SHA256, Some(&digest::SHA256)),
        ECDSA_NISTP384_SHA384 => (Opcode::ECDSA_SIGN_SHA384, Some(&digest::SHA384)),
        ECDSA_NISTP521_SHA512 => (Opcode::ECDSA_SIGN_SHA512, Some(&digest::SHA512)),
        ED25519 => (Opcode::ED25519_SIGN, None),
        _ => return None,
    })
}

impl SigningKey for RemoteKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = schemes(self.public.algorithm)
            .iter()
            .find(|s| offered.contains(s))
            .copied()?;
        Some(Box::new(RemoteSigner {
            scheme,
            ski: self.public.ski,
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.public.algorithm {
            KeyAlgorithm::Rsa { .. } => SignatureAlgorithm::RSA,
            KeyAlgorithm::Ed25519 => SignatureAlgorithm::ED25519,
            _ => SignatureAlgorithm::ECDSA,
        }
    }
}

#[derive(Debug)]
struct RemoteSigner {
    scheme: SignatureScheme,
    ski: keyless_protocol::Ski,
    /// The threads mode's pool (`None`: signatures come from coroutines).
    pool: Option<Arc<KeyServerPool>>,
    metrics: Arc<EdgeMetrics>,
}

impl Signer for RemoteSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let (op, hash) = opcode(self.scheme)
            .ok_or_else(|| rustls::Error::General(format!("no keyless opcode for {:?}", self.scheme)))?;
        let payload = match hash {
            Some(h) => digest::digest(h, message).as_ref().to_vec(),
            None => message.to_vec(),
        };
        let mut request = Message::request(op, Some(self.ski), payload);
        let ctx = CONTEXT.with(|c| c.borrow().clone());
        if let Some(ctx) = ctx {
            request.sni = ctx.sni.map(String::into_bytes);
            request.client_ip = Some(ctx.client_ip);
            request.server_ip = Some(ctx.server_ip);
        }
        let started = Instant::now();
        // In a coroutine on a core: suspend it until the core has the
        // answer. On a handshake thread: block this thread.
        let result = if crate::coroutine::active() {
            crate::coroutine::suspend_for(request).unwrap_or_else(|| Err("not in a coroutine".into()))
        } else if let Some(pool) = &self.pool {
            pool.perform_blocking(request).map_err(|e| e.to_string())
        } else {
            Err("no key-server pool outside the threads mode".into())
        };
        self.metrics.remote_sign.observe(started.elapsed().as_secs_f64());
        result.map_err(|e| {
            tracing::warn!(
                "handshake fails: remote signature ({:?}, key {}) failed: {e}",
                self.scheme,
                hex::encode(self.ski)
            );
            self.metrics.sign_failures.inc();
            rustls::Error::General(format!("remote signature failed: {e}"))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
