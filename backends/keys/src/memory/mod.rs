//! The in-memory backend: keys parsed into AWS-LC, one copy per core.

pub(crate) mod evp;
mod verify;

pub use verify::PublicKey;

use std::cell::OnceCell;
use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use zeroize::Zeroizing;

use crate::multibuffer::LaneKey;
use crate::{CryptoError, KeyAlgorithm, LoadError, LoadedKey, Operation, PrivateKey, PublicKeyInfo};
use evp::EvpKey;

/// A private key as loaded from disk: its DER bytes (zeroized on drop) and
/// its public half. `Send + Sync`, shared by the cores, each of which parses
/// its own [`InMemoryKey`] from it so no two cores touch the same key object.
pub struct KeyMaterial {
    der: Zeroizing<Vec<u8>>,
    public: PublicKeyInfo,
    path: PathBuf,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("path", &self.path)
            .field("algorithm", &self.public.algorithm)
            .field("ski", &self.public.ski_hex())
            .finish_non_exhaustive()
    }
}

/// Why a PEM file gave no private key, from what it holds instead (an
/// operator who put a certificate or an encrypted key there learns which).
fn no_private_key(pem: &[u8], path: &Path) -> String {
    let labels: Vec<&str> = std::str::from_utf8(pem)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .collect();
    if labels.contains(&"ENCRYPTED PRIVATE KEY") {
        return format!(
            "the key is encrypted: the key server needs it decrypted \
             (openssl pkey -in {0} -out {0}.plain, then keep the file readable by the key server only)",
            path.display()
        );
    }
    match labels.first() {
        Some(label) => format!("found a {label} where a private key was expected"),
        None => "no private key in PEM: no complete BEGIN/END block".into(),
    }
}

impl KeyMaterial {
    /// Parse a PEM (PKCS#8, PKCS#1 RSA, SEC1 EC) or DER private key.
    /// `path` only names the key in errors and logs.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<KeyMaterial, LoadError> {
        let invalid = |reason: String| LoadError::Invalid {
            path: path.to_owned(),
            reason,
        };
        if bytes.trim_ascii().is_empty() {
            return Err(invalid(
                "the file is empty: a private key (PEM or DER) was expected".into(),
            ));
        }
        let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let key = PrivateKeyDer::from_pem_slice(bytes).map_err(|_| invalid(no_private_key(bytes, path)))?;
            Zeroizing::new(key.secret_der().to_vec())
        } else {
            Zeroizing::new(bytes.to_vec())
        };
        let key = EvpKey::from_der(&der).map_err(|e| invalid(e.0.to_string()))?;
        let algorithm = key.algorithm().map_err(|e| invalid(e.0.to_string()))?;
        if let KeyAlgorithm::Rsa { bits } = algorithm {
            if !(2048..=8192).contains(&bits) {
                return Err(invalid(format!("RSA key of {bits} bits; 2048 to 8192 are supported")));
            }
        }
        let spki = key.spki_der().map_err(|e| invalid(e.0.to_string()))?;
        let public = PublicKeyInfo::from_spki(algorithm, spki).map_err(invalid)?;
        Ok(KeyMaterial {
            der,
            public,
            path: path.to_owned(),
        })
    }

    /// Read and parse a key file.
    pub fn load(path: &Path) -> Result<KeyMaterial, LoadError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?);
        Self::parse(&bytes, path)
    }

    pub fn public(&self) -> &PublicKeyInfo {
        &self.public
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A private copy of the key for one core.
    pub fn instantiate(&self) -> Result<InMemoryKey, CryptoError> {
        Ok(InMemoryKey {
            key: EvpKey::from_der(&self.der)?,
            public: self.public.clone(),
            lanes: OnceCell::new(),
        })
    }
}

impl LoadedKey for KeyMaterial {
    fn public(&self) -> &PublicKeyInfo {
        &self.public
    }

    fn origin(&self) -> String {
        self.path.display().to_string()
    }

    fn instantiate(&self) -> Result<Box<dyn PrivateKey>, CryptoError> {
        Ok(Box::new(KeyMaterial::instantiate(self)?))
    }
}

/// A key owned by one core.
pub struct InMemoryKey {
    key: EvpKey,
    public: PublicKeyInfo,
    lanes: OnceCell<Option<LaneKey>>,
}

impl fmt::Debug for InMemoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKey")
            .field("ski", &self.public.ski_hex())
            .finish_non_exhaustive()
    }
}

impl PrivateKey for InMemoryKey {
    fn public(&self) -> &PublicKeyInfo {
        &self.public
    }

    fn lane_key(&self) -> Option<&LaneKey> {
        self.lanes.get_or_init(|| LaneKey::from_evp(&self.key)).as_ref()
    }

    fn perform(&self, op: Operation, input: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key.perform(self.public.algorithm, op, input)
    }
}
