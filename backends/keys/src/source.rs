//! gokeyless's `private_key_stores`: `dir:` and `file:` entries.

use std::path::{Path, PathBuf};

use crate::memory::KeyMaterial;
use crate::LoadError;

/// Where keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Every `*.key` file below this directory, recursively (as gokeyless).
    Dir(PathBuf),
    /// One key file, PEM or DER.
    File(PathBuf),
}

/// Load every key of every source, logging `loading <path>...` for each
/// file as gokeyless does. The first key that fails stops the load.
pub fn load_sources(sources: &[KeySource]) -> Result<Vec<KeyMaterial>, LoadError> {
    let mut keys = Vec::new();
    for source in sources {
        let files = match source {
            KeySource::File(path) => vec![path.clone()],
            KeySource::Dir(dir) => {
                let mut files = Vec::new();
                walk(dir, &mut files)?;
                files.sort();
                files
            }
        };
        for path in files {
            tracing::info!("loading {}...", path.display());
            let key = KeyMaterial::load(&path)?;
            if let Some(first) = keys.iter().find(|k: &&KeyMaterial| k.public().ski == key.public().ski) {
                tracing::warn!(
                    "{}: same key (SKI {}) as {}; using the first",
                    path.display(),
                    key.public().ski_hex(),
                    first.path().display()
                );
                continue;
            }
            keys.push(key);
        }
    }
    Ok(keys)
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
        }
    }
    Ok(())
}
