//! Session ticket keys: rotation, an 18-hour window, and a key file shared
//! by several edges so any of them resumes another's tickets.
//!
//! A ticket is `key name (16) || nonce (12) || AES-256-GCM(issued_at || state)`
//! with the key name as associated data. The newest key encrypts; every key
//! still in the window decrypts. A key leaves the window (and memory) once
//! no ticket it sealed can still be within its lifetime: rotation period +
//! lifetime after it was made. The issue time inside the ticket makes the
//! lifetime exact: a ticket older than its advertised lifetime is refused
//! even if its key is still around.
//!
//! The key file is JSON written by `keyless-tool ticket-keys`; an edge
//! polls it and picks up a rotated file without a restart. Without a file,
//! keys live in memory and rotate on a timer. Key bytes are zeroized on drop
//! and never printed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use rustls::server::ProducesTickets;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Cloudflare's ticket lifetime hint: 18 hours.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(64800);
pub const DEFAULT_ROTATION: Duration = Duration::from_secs(3600);
const NAME_LEN: usize = 16;

/// One ticket key as stored in the key file.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// Hex, 16 bytes: names the key inside each ticket.
    pub name: String,
    /// Hex, 32 bytes: the AES-256-GCM key.
    pub secret: Zeroizing<String>,
    /// Unix seconds when the key was made.
    pub created: u64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("name", &self.name)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The key file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyFile {
    pub keys: Vec<StoredKey>,
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl StoredKey {
    /// A fresh random key made now.
    pub fn generate() -> Result<StoredKey, String> {
        let mut name = [0u8; NAME_LEN];
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut name).map_err(|_| "no randomness")?;
        aws_lc_rs::rand::fill(secret.as_mut()).map_err(|_| "no randomness")?;
        Ok(StoredKey {
            name: hex::encode(name),
            secret: Zeroizing::new(hex::encode(secret.as_ref())),
            created: now_unix(),
        })
    }
}

impl KeyFile {
    pub fn read(path: &Path) -> Result<KeyFile, String> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?);
        serde_json::from_str(&text).map_err(|e| format!("{}: not a ticket key file: {e}", path.display()))
    }

    /// Write atomically (a temporary file renamed over), readable by the owner only.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = Zeroizing::new(serde_json::to_string_pretty(self).map_err(|e| e.to_string())?);
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| format!("{}: {e}", tmp.display());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Add a new current key and drop keys that left the window.
    pub fn rotate(&mut self, rotation: Duration, lifetime: Duration) -> Result<(), String> {
        self.keys.push(StoredKey::generate()?);
        let now = now_unix();
        let window = (rotation + lifetime).as_secs();
        self.keys.retain(|k| now.saturating_sub(k.created) <= window);
        Ok(())
    }
}

/// Keys usable now: the last encrypts, all decrypt.
struct Keyring {
    keys: Vec<(Vec<u8>, LessSafeKey, u64)>,
}

impl Keyring {
    fn from_stored(stored: &[StoredKey], rotation: Duration, lifetime: Duration) -> Result<Keyring, String> {
        let now = now_unix();
        let window = (rotation + lifetime).as_secs();
        let mut sorted: Vec<&StoredKey> = stored
            .iter()
            .filter(|k| now.saturating_sub(k.created) <= window)
            .collect();
        sorted.sort_by_key(|k| k.created);
        let mut keys = Vec::new();
        for k in sorted {
            let name = hex::decode(&k.name).map_err(|_| "a key name is not hex")?;
            let secret = Zeroizing::new(hex::decode(k.secret.as_str()).map_err(|_| "a key secret is not hex")?);
            if name.len() != NAME_LEN || secret.len() != 32 {
                return Err("a ticket key has the wrong length (name 16 bytes, secret 32)".into());
            }
            let key = UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| "bad ticket key")?;
            keys.push((name, LessSafeKey::new(key), k.created));
        }
        Ok(Keyring { keys })
    }
}

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Made here and rotated on a timer.
    Memory,
    /// Read from a shared file, reloaded when it changes.
    File(PathBuf),
}

/// rustls's ticket producer over a rotating keyring.
pub struct Ticketer {
    ring: RwLock<Arc<Keyring>>,
    lifetime: Duration,
    rotation: Duration,
    source: KeySource,
    /// In-memory mode: the stored keys (for rotation).
    memory: RwLock<Vec<StoredKey>>,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticketer")
            .field("source", &self.source)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Ticketer {
    /// Start with keys from `source`; call [`refresh`](Self::refresh) periodically.
    pub fn new(source: KeySource, rotation: Duration, lifetime: Duration) -> Result<Arc<Ticketer>, String> {
        let t = Ticketer {
            ring: RwLock::new(Arc::new(Keyring { keys: Vec::new() })),
            lifetime,
            rotation,
            source,
            memory: RwLock::new(Vec::new()),
        };
        t.refresh()?;
        Ok(Arc::new(t))
    }

    /// Rotate (memory) or reload (file), and drop keys out of the window.
    pub fn refresh(&self) -> Result<(), String> {
        let stored = match &self.source {
            KeySource::File(path) => {
                let file = KeyFile::read(path)?;
                if file.keys.is_empty() {
                    return Err(format!("{}: no ticket keys", path.display()));
                }
                file.keys
            }
            KeySource::Memory => {
                let mut memory = self.memory.write().unwrap_or_else(|e| e.into_inner());
                let newest = memory.iter().map(|k| k.created).max();
                if newest.is_none_or(|c| now_unix().saturating_sub(c) >= self.rotation.as_secs()) {
                    let mut file = KeyFile { keys: memory.clone() };
                    file.rotate(self.rotation, self.lifetime)?;
                    *memory = file.keys;
                }
                memory.clone()
            }
        };
        let ring = Keyring::from_stored(&stored, self.rotation, self.lifetime)?;
        if ring.keys.is_empty() {
            return Err("every ticket key is older than the rotation period plus the lifetime".into());
        }
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// Seconds since the current (encrypting) key was made.
    pub fn current_key_age(&self) -> u64 {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner()).clone();
        ring.keys.last().map_or(0, |k| now_unix().saturating_sub(k.2))
    }

    fn ring(&self) -> Arc<Keyring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime.as_secs().min(u32::MAX as u64) as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let ring = self.ring();
        let (name, key, _) = ring.keys.last()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut sealed = Vec::with_capacity(8 + plain.len() + 16);
        sealed.extend_from_slice(&now_unix().to_be_bytes());
        sealed.extend_from_slice(plain);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_slice()),
            &mut sealed,
        )
        .ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < NAME_LEN + NONCE_LEN + 8 + 16 {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let ring = self.ring();
        let (_, key, _) = ring.keys.iter().find(|(n, _, _)| n.as_slice() == name)?;
        let mut buf = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = key.open_in_place(nonce, Aad::from(name), &mut buf).ok()?;
        let issued = u64::from_be_bytes(plain.get(..8)?.try_into().ok()?);
        if now_unix().saturating_sub(issued) > self.lifetime.as_secs() {
            return None; // past its advertised lifetime: full handshake
        }
        Some(plain[8..].to_vec())
    }
}

/// Keep `ticketer` fresh: every second, reload a changed key file (or
/// rotate in memory). A failed reload keeps the current keys and logs why.
pub fn spawn_refresher(ticketer: Arc<Ticketer>) {
    let _ = std::thread::Builder::new()
        .name("keyless-tickets".into())
        .spawn(move || {
            let mut last_modified = modified(&ticketer.source);
            for tick in 1u64.. {
                std::thread::sleep(Duration::from_secs(1));
                let now_modified = modified(&ticketer.source);
                let changed = now_modified != last_modified;
                // Memory: rotate when due. File: reload when it changes, and
                // once a minute to let aged keys out of the window.
                if matches!(ticketer.source, KeySource::Memory) || changed || tick % 60 == 0 {
                    match ticketer.refresh() {
                        Ok(()) if changed => tracing::info!("ticket keys reloaded"),
                        Ok(()) => {}
                        Err(e) => tracing::error!("ticket keys: {e}; keeping the current keys"),
                    }
                }
                last_modified = now_modified;
            }
        });
}

fn modified(source: &KeySource) -> Option<SystemTime> {
    match source {
        KeySource::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
        KeySource::Memory => None,
    }
}

/// `keyless-tool ticket-keys`: create the key file with one key if it does
/// not exist; with `rotate`, add a new current key and drop keys that left
/// the window. Returns the file as written.
pub fn manage_key_file(path: &Path, rotate: bool, rotation: Duration, lifetime: Duration) -> Result<KeyFile, String> {
    let mut file = if path.exists() {
        KeyFile::read(path)?
    } else {
        KeyFile::default()
    };
    if file.keys.is_empty() || rotate {
        file.rotate(rotation, lifetime)?;
        file.write(path)?;
    }
    Ok(file)
}
