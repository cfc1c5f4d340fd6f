//! PKCS#11 HSM keys for the keyless key server.
//!
//! What it does: loads the keys a `pkcs11:` URI names (gokeyless's `uri:`
//! key stores), derives their SKI from the public key objects so requests
//! find them as they find in-memory keys, and performs their operations on
//! a pool of sessions served by worker threads ([`pool`]). The cores only
//! queue and await ([`keyless_keys::Offload`]); no core ever blocks in a
//! PKCS#11 call.
//!
//! What it does not do: generate or import keys (tests use SoftHSM2's own
//! tools), or ever read private key bytes: they stay in the HSM.

pub mod ceiling;
mod exit;
pub mod pool;
mod token;
pub mod uri;

use std::sync::Arc;
use std::time::Duration;

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyless_keys::memory::PublicKey;
use keyless_keys::spki;
use keyless_keys::{
    CryptoError, KeyAlgorithm, LoadError, LoadedKey, Offload, Operation, PendingOperation, Pkcs11Source, PrivateKey,
    PublicKeyInfo, SharedKey,
};

pub use keyless_keys::spki::ecdsa_der;
pub use pool::{shutdown, snapshots, PoolSnapshot};
pub use uri::{Pkcs11Uri, UriError};

/// Pool settings that are not part of the URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Sessions per token when the URI has no `max-sessions`.
    pub sessions: usize,
    /// Bound on requests queued for a token's sessions.
    pub queue: usize,
    /// A request that waits longer than this (queued, then performed) fails.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sessions: 2,
            queue: 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Load every private key the URI names (by `id` and/or `object`; every
/// private key on the token when it names neither).
pub fn load(source: &Pkcs11Source, options: &Options) -> Result<Vec<SharedKey>, LoadError> {
    let fail = |reason: String| LoadError::Invalid {
        path: source.redacted().into(),
        reason,
    };
    let uri = Pkcs11Uri::parse(source.expose()).map_err(|e| fail(e.to_string()))?;
    let pin = uri.pin().map_err(fail)?;
    let module = uri.module_path.clone().ok_or_else(|| fail("no module-path".into()))?;
    let ctx = token::context(&module).map_err(fail)?;
    let selector = token::TokenSelector::from(&uri);
    let slot = selector.find(&ctx).map_err(fail)?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(|e| fail(format!("cannot open a session: {}", token::short(&e))))?;
    token::login(&session, &pin).map_err(fail)?;
    let found = find_keys(&session, &uri).map_err(fail)?;
    if found.is_empty() {
        return Err(fail(format!("no private key on the token matches {}", uri.describe())));
    }
    let pool = pool::get_or_start(pool::PoolSpec {
        ctx: ctx.clone(),
        module,
        slot_id: slot.id(),
        selector,
        pin,
        sessions: uri.max_sessions.unwrap_or(options.sessions),
        queue: options.queue,
        timeout: options.timeout,
    })
    .map_err(fail)?;
    Ok(found
        .into_iter()
        .map(|(object, public)| {
            let origin = format!(
                "{} (object {:?}, id {})",
                pool.token,
                String::from_utf8_lossy(&object.label),
                hex::encode(&object.id)
            );
            Arc::new(HsmKey(Arc::new(Inner {
                modulus_len: match public.algorithm {
                    KeyAlgorithm::Rsa { bits } => bits.div_ceil(8) as usize,
                    _ => 0,
                },
                public,
                object: Arc::new(object),
                pool: pool.clone(),
                origin,
            }))) as SharedKey
        })
        .collect())
}

/// The matching private keys and their public halves.
fn find_keys(session: &Session, uri: &Pkcs11Uri) -> Result<Vec<(pool::ObjectRef, PublicKeyInfo)>, String> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    let handles = session
        .find_objects(&template)
        .map_err(|e| format!("cannot search the token: {}", token::short(&e)))?;
    let mut keys = Vec::new();
    for handle in handles {
        let attrs = session
            .get_attributes(
                handle,
                &[AttributeType::KeyType, AttributeType::Id, AttributeType::Label],
            )
            .map_err(|e| format!("cannot read key attributes: {}", token::short(&e)))?;
        let mut key_type = None;
        let mut object = pool::ObjectRef {
            id: Vec::new(),
            label: Vec::new(),
        };
        for a in attrs {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Id(id) => object.id = id,
                Attribute::Label(l) => object.label = l,
                _ => {}
            }
        }
        let name = format!(
            "key {:?} (id {})",
            String::from_utf8_lossy(&object.label),
            hex::encode(&object.id)
        );
        let spki = match key_type {
            Some(KeyType::RSA) => {
                let (n, e) = rsa_public(session, handle)?;
                spki::rsa_spki(&n, &e)
            }
            Some(KeyType::EC) => {
                let (params, point) = ec_public(session, handle, &object, KeyType::EC)?;
                spki::ec_spki(&params, &point)
            }
            Some(KeyType::EC_EDWARDS) => {
                let (params, point) = ec_public(session, handle, &object, KeyType::EC_EDWARDS)?;
                spki::ed25519_spki(&params, &point)
            }
            other => Err(format!("key type {other:?} is not supported")),
        }
        .map_err(|e| format!("{name}: {e}"))?;
        let algorithm = PublicKey::from_spki(&spki)
            .map_err(|e| format!("{name}: public key: {e}"))?
            .algorithm();
        if let KeyAlgorithm::Rsa { bits } = algorithm {
            if !(2048..=8192).contains(&bits) {
                return Err(format!("{name}: RSA key of {bits} bits; 2048 to 8192 are supported"));
            }
        }
        let public = PublicKeyInfo::from_spki(algorithm, spki).map_err(|e| format!("{name}: {e}"))?;
        if keys.iter().any(|(o, _): &(pool::ObjectRef, _)| *o == object) {
            return Err(format!("{name}: several private keys share this id and label"));
        }
        keys.push((object, public));
    }
    Ok(keys)
}

fn rsa_public(session: &Session, handle: ObjectHandle) -> Result<(Vec<u8>, Vec<u8>), String> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::Modulus, AttributeType::PublicExponent])
        .map_err(|e| format!("cannot read the modulus: {}", token::short(&e)))?;
    let (mut n, mut e) = (None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(m) => n = Some(m),
            Attribute::PublicExponent(x) => e = Some(x),
            _ => {}
        }
    }
    n.zip(e)
        .ok_or_else(|| "the RSA key has no readable modulus and exponent".into())
}

/// CKA_EC_PARAMS of the private key and CKA_EC_POINT of the public key
/// object with the same id and label.
fn ec_public(
    session: &Session,
    handle: ObjectHandle,
    object: &pool::ObjectRef,
    key_type: KeyType,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let params = session
        .get_attributes(handle, &[AttributeType::EcParams])
        .map_err(|e| format!("cannot read the curve: {}", token::short(&e)))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcParams(p) => Some(p),
            _ => None,
        })
        .ok_or("the key has no CKA_EC_PARAMS")?;
    let template = [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(key_type),
        Attribute::Id(object.id.clone()),
    ];
    let publics = session
        .find_objects(&template)
        .map_err(|e| format!("cannot search for the public key: {}", token::short(&e)))?;
    for public in publics {
        let attrs = session
            .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(|e| format!("cannot read the public key: {}", token::short(&e)))?;
        let (mut p, mut point) = (None, None);
        for a in attrs {
            match a {
                Attribute::EcParams(x) => p = Some(x),
                Attribute::EcPoint(x) => point = Some(x),
                _ => {}
            }
        }
        if let (Some(p), Some(point)) = (p, point) {
            if p == params {
                return Ok((params, point));
            }
        }
    }
    Err("no public key object with the same id holds its CKA_EC_POINT".into())
}

/// A key in an HSM. Every core's instance shares the token's pool.
struct HsmKey(Arc<Inner>);

struct Inner {
    public: PublicKeyInfo,
    object: Arc<pool::ObjectRef>,
    modulus_len: usize,
    pool: Arc<pool::Pool>,
    origin: String,
}

impl LoadedKey for HsmKey {
    fn public(&self) -> &PublicKeyInfo {
        &self.0.public
    }

    fn origin(&self) -> String {
        self.0.origin.clone()
    }

    fn instantiate(&self) -> Result<Box<dyn PrivateKey>, CryptoError> {
        Ok(Box::new(HsmKey(self.0.clone())))
    }
}

impl PrivateKey for HsmKey {
    fn public(&self) -> &PublicKeyInfo {
        &self.0.public
    }

    fn offload(&self) -> Option<&dyn Offload> {
        Some(self)
    }
}

impl Offload for HsmKey {
    fn submit(&self, op: Operation, input: Vec<u8>) -> PendingOperation {
        let inner = &self.0;
        if let Err(e) = op.check(inner.public.algorithm, &input) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let (reply, answer) = futures_channel::oneshot::channel();
        let job = pool::Job {
            object: inner.object.clone(),
            op,
            input,
            modulus_len: inner.modulus_len,
            reply,
        };
        let jobs = inner.pool.sender().clone();
        Box::pin(async move {
            jobs.send(job)
                .await
                .map_err(|_| CryptoError("the HSM pool has stopped"))?;
            answer
                .await
                .map_err(|_| CryptoError("the HSM worker dropped the request"))?
        })
    }

    fn timeout(&self) -> Duration {
        self.0.pool.timeout
    }
}
