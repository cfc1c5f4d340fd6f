//! gokeyless's `private_key_stores`: `dir:`, `file:` and `uri:` entries.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::memory::KeyMaterial;
use crate::{LoadError, SharedKey};

/// Where keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Every `*.key` file below this directory, recursively (as gokeyless).
    Dir(PathBuf),
    /// One key file, PEM or DER.
    File(PathBuf),
    /// Keys in a PKCS#11 token (loaded by the `keyless-hsm` backend).
    Pkcs11(Pkcs11Source),
    /// A key version in a cloud key store: an AWS KMS ARN, a Google Cloud
    /// KMS `projects/...` name or an Azure Key Vault URL (loaded by the
    /// `keyless-cloud` backend). It names a key; it holds no secret.
    Cloud(String),
}

impl KeySource {
    /// The entry as an operator wrote it, secrets left out.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Dir(d) => format!("dir: {}", d.display()),
            KeySource::File(f) => format!("file: {}", f.display()),
            KeySource::Pkcs11(uri) => format!("uri: {}", uri.redacted()),
            KeySource::Cloud(uri) => format!("uri: {uri}"),
        }
    }
}

/// An RFC 7512 `pkcs11:` URI as configured. It may carry a PIN
/// (`pin-value=`), so it is zeroized on drop and printed without it.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Source(Zeroizing<String>);

impl Pkcs11Source {
    pub fn new(uri: String) -> Pkcs11Source {
        Pkcs11Source(Zeroizing::new(uri))
    }

    /// The URI itself, PIN included: for the PKCS#11 loader only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URI with any `pin-value` replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        redact_pin(&self.0)
    }
}

impl fmt::Debug for Pkcs11Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Source({})", self.redacted())
    }
}

/// `uri` with the value of every `pin-value` attribute replaced by `***`.
pub fn redact_pin(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find("pin-value=") {
        let value_start = at + "pin-value=".len();
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let value_len = rest[value_start..].find(['&', ';']).unwrap_or(rest.len() - value_start);
        rest = &rest[value_start + value_len..];
    }
    out.push_str(rest);
    out
}

/// Load every key of every `dir:` and `file:` source; a `uri:` source is an
/// error (use [`load_sources_with`] and the PKCS#11 and cloud loaders).
pub fn load_sources(sources: &[KeySource]) -> Result<Vec<SharedKey>, LoadError> {
    load_sources_with(sources, &|source: &KeySource| {
        Err(LoadError::Invalid {
            path: PathBuf::from(source.describe()),
            reason: "PKCS#11 and cloud key stores need their backends".into(),
        })
    })
}

/// Load every key of every source in order, logging `loading <path>...`
/// for each file as gokeyless does; `external` loads `uri:` sources
/// (PKCS#11 and cloud). The first key that fails stops the load. A key
/// seen twice (same SKI) is served from its first source.
pub fn load_sources_with(
    sources: &[KeySource],
    external: &dyn Fn(&KeySource) -> Result<Vec<SharedKey>, LoadError>,
) -> Result<Vec<SharedKey>, LoadError> {
    let mut keys: Vec<SharedKey> = Vec::new();
    for source in sources {
        let loaded: Vec<SharedKey> = match source {
            KeySource::File(path) => vec![load_file(path)?],
            KeySource::Dir(dir) => {
                let mut files = Vec::new();
                walk(dir, &mut files)?;
                files.sort();
                files.iter().map(|p| load_file(p)).collect::<Result<_, _>>()?
            }
            KeySource::Pkcs11(_) | KeySource::Cloud(_) => {
                tracing::info!("loading {}...", source.describe().trim_start_matches("uri: "));
                external(source)?
            }
        };
        for key in loaded {
            if let Some(first) = keys.iter().find(|k| k.public().ski == key.public().ski) {
                tracing::warn!(
                    "{}: same key (SKI {}) as {}; using the first",
                    key.origin(),
                    key.public().ski_hex(),
                    first.origin()
                );
                continue;
            }
            keys.push(key);
        }
    }
    Ok(keys)
}

fn load_file(path: &Path) -> Result<SharedKey, LoadError> {
    tracing::info!("loading {}...", path.display());
    warn_if_others_may_read(path);
    Ok(Arc::new(KeyMaterial::load(path)?))
}

/// A private key file others may read, or a group other than the server's
/// own, is a key that has left this server's user already; say so
/// (gokeyless does not), load it anyway. The server's own group may read
/// it: the keyless group of the package, a Kubernetes pod's fsGroup (a
/// Secret volume's files are root's, readable through it).
fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if exposed(mode, meta.gid(), rustix::process::getegid().as_raw()) {
            tracing::warn!(
                "{}: group or others may read this private key (mode {mode:o}); chmod 600 it",
                path.display()
            );
        }
    }
}

/// Whether a key file of `mode` and group `gid` reaches users other than a
/// server whose group is `ours`.
fn exposed(mode: u32, gid: u32, ours: u32) -> bool {
    mode & 0o004 != 0 || (mode & 0o040 != 0 && gid != ours)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "key") {
            out.push(path);
        } else {
            // gokeyless skips these silently; an operator who named a key
            // `site.pem` learns why it is not served.
            tracing::warn!("{}: skipped, not a .key file", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_may_be_read_by_the_servers_own_group_only() {
        assert!(!exposed(0o600, 0, 1000));
        assert!(!exposed(0o440, 1000, 1000), "a pod's fsGroup, the package's group");
        assert!(exposed(0o440, 50, 1000), "another group");
        assert!(exposed(0o604, 1000, 1000), "others");
    }
}
