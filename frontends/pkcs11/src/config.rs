//! The module's configuration: a YAML file named by `KEYLESS_PKCS11_CONFIG`
//! (or by `pReserved` in C_Initialize's arguments, as Google's kmsp11
//! does), with the edge's names for the same settings. Read at
//! C_Initialize, so a mistake shows there, naming file, line and field.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyless_service::yaml::duration;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use crate::objects::{key_from_certificate, Key};

/// Where the configuration is when neither the variable nor pReserved names one.
pub const DEFAULT_PATH: &str = "/etc/keyless/pkcs11.yaml";
pub const ENV: &str = "KEYLESS_PKCS11_CONFIG";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// `HOST:PORT` of each key server; a name with several addresses is several servers.
    key_servers: Vec<String>,
    /// The name the key servers' certificates must carry (default: each HOST).
    #[serde(default)]
    key_server_name: Option<String>,
    /// The CA that issued the key servers' certificates.
    key_server_ca: PathBuf,
    /// This client's certificate and key for mutual TLS.
    client_cert: PathBuf,
    client_key: PathBuf,
    /// Links per key server (default 2).
    #[serde(default)]
    connections_per_server: Option<usize>,
    /// A signature fails if its answer has not come within this (default 2s).
    #[serde(default, deserialize_with = "duration")]
    request_timeout: Option<Duration>,
    /// Connecting (TCP and TLS) must finish within this (default 2s).
    #[serde(default, deserialize_with = "duration")]
    connect_timeout: Option<Duration>,
    /// Ping each link this often; a failed ping replaces it (default 1s).
    #[serde(default, deserialize_with = "duration")]
    health_interval: Option<Duration>,
    /// Threads that carry the links (default 1), started at the first signature.
    #[serde(default)]
    threads: Option<usize>,
    /// Where log lines go (default: standard error).
    #[serde(default)]
    log_file: Option<PathBuf>,
    /// error, warn (default), info, debug or trace.
    #[serde(default)]
    log_level: Option<String>,
    /// The token's label (default "keyless").
    #[serde(default)]
    token_label: Option<String>,
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    /// PEM: the leaf certificate first, then its chain.
    certificate: PathBuf,
    /// CKA_LABEL of the key's three objects (default: the certificate's common name).
    #[serde(default)]
    label: Option<String>,
}

/// The configuration, with every file it names read.
pub struct Config {
    pub path: PathBuf,
    pub key_servers: Vec<String>,
    pub key_server_name: Option<String>,
    pub tls: Arc<rustls::ClientConfig>,
    pub connections_per_server: usize,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub health_interval: Duration,
    pub threads: usize,
    pub log_file: Option<PathBuf>,
    pub log_level: tracing::Level,
    pub token_label: String,
    pub keys: Vec<Key>,
}

/// Which file to read: `reserved` (C_Initialize's pReserved), else the
/// variable, else [`DEFAULT_PATH`].
pub fn path(reserved: Option<String>) -> PathBuf {
    reserved
        .or_else(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_PATH.to_string())
        .into()
}

/// Read and check the configuration at `path`.
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if path == Path::new(DEFAULT_PATH) {
            format!(" (set {ENV} to the module's configuration file)")
        } else {
            String::new()
        };
        format!("{}: {e}{hint}", path.display())
    })?;
    refuse_writable_by_others(path)?;
    let file: File = keyless_service::yaml::parse(path, &text).map_err(|e| e.to_string())?;
    let base = path.parent().unwrap_or(Path::new("."));
    let at = |p: &Path| base.join(p);
    let field = |name: &str, reason: String| format!("{}: {name}: {reason}", path.display());

    if file.key_servers.is_empty() {
        return Err(field("key_servers", "names no key server".into()));
    }
    if file.keys.is_empty() {
        return Err(field("keys", "names no key".into()));
    }
    let tls = keyless_client::client_config_from_files(
        &at(&file.key_server_ca),
        &at(&file.client_cert),
        &at(&file.client_key),
    )
    .map_err(|e| field("key_server_ca/client_cert/client_key", e.to_string()))?;
    let mut keys: Vec<Key> = Vec::new();
    for (i, entry) in file.keys.iter().enumerate() {
        let cert_path = at(&entry.certificate);
        let name = format!("keys[{i}].certificate");
        let first = CertificateDer::pem_file_iter(&cert_path)
            .map_err(|e| field(&name, format!("{}: {e}", cert_path.display())))?
            .next()
            .ok_or_else(|| field(&name, format!("{}: no PEM certificate in it", cert_path.display())))?
            .map_err(|e| field(&name, format!("{}: {e}", cert_path.display())))?;
        let key = key_from_certificate(&first, entry.label.as_deref())
            .map_err(|e| field(&name, format!("{}: {e}", cert_path.display())))?;
        if let Some(j) = keys.iter().position(|k| k.ski == key.ski) {
            return Err(field(&name, format!("the same key as keys[{j}]")));
        }
        keys.push(key);
    }
    let log_level = match file.log_level.as_deref().unwrap_or("warn") {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            return Err(field(
                "log_level",
                format!("{other:?} is not error, warn, info, debug or trace"),
            ))
        }
    };
    let positive = |name: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(field(name, "must be at least 1".into())),
        v => Ok(v.unwrap_or(default)),
    };
    Ok(Config {
        path: path.to_owned(),
        key_servers: file.key_servers,
        key_server_name: file.key_server_name,
        tls,
        connections_per_server: positive("connections_per_server", file.connections_per_server, 2)?,
        request_timeout: file.request_timeout.unwrap_or(Duration::from_secs(2)),
        connect_timeout: file.connect_timeout.unwrap_or(Duration::from_secs(2)),
        health_interval: file.health_interval.unwrap_or(Duration::from_secs(1)),
        threads: positive("threads", file.threads, 1)?,
        log_file: file.log_file.map(|p| at(&p)),
        log_level,
        token_label: file.token_label.unwrap_or_else(|| "keyless".into()),
        keys,
    })
}

/// The file says which key servers this process trusts: whoever may
/// change it may redirect every signature.
fn refuse_writable_by_others(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "{}: group or others may write it (mode {:o}); chmod go-w it",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        match load(&write(dir.path(), "pkcs11.yaml", text, 0o600)) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "pkcs11.yaml", "key_servers: []\n", 0o666);
        let e = load(&path).err().unwrap();
        assert!(e.contains("group or others may write it (mode 666)"), "{e}");
    }

    #[test]
    fn mistakes_name_the_file_line_and_field() {
        let e = error("key_servers: [\"a:1\"]\nkey_server_ca: ca.pem\nclient_cert: c.pem\nclient_key: k.pem\nkeys: []\nsurprise: 1\n");
        assert!(e.contains("pkcs11.yaml:6:1: unknown field `surprise`"), "{e}");
        let e = error("key_servers: [\"a:1\"]\nkeys: []\n");
        assert!(e.contains("missing field `key_server_ca`"), "{e}");
        let e = error("key_servers: []\nkey_server_ca: ca.pem\nclient_cert: c.pem\nclient_key: k.pem\nkeys: []\n");
        assert!(e.contains("key_servers: names no key server"), "{e}");
        let e = error("key_servers: [\"a:1\"]\nkey_server_ca: ca.pem\nclient_cert: c.pem\nclient_key: k.pem\nrequest_timeout: soon\nkeys: []\n");
        assert!(
            e.contains("pkcs11.yaml:5:") && e.contains("\"soon\" is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn files_it_names_are_read_and_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let pki = keyless_pki::DevPki::generate(&dir.path().join("pki"), keyless_pki::DEFAULT_KEYS, 0).unwrap();
        let head = format!(
            "key_servers: [\"127.0.0.1:1\"]\nkey_server_ca: {}\nclient_cert: {}\nclient_key: {}\n",
            pki.ca_cert.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        );
        let site = pki.sites_dir.join("p256.pem");
        let good = format!("{head}keys:\n  - certificate: {}\n", site.display());
        let config = load(&write(dir.path(), "good.yaml", &good, 0o600)).unwrap();
        assert_eq!(config.keys.len(), 1);
        assert_eq!(
            config.keys[0].label, "keyless edge site (p256)",
            "the certificate's common name"
        );
        assert_eq!(config.request_timeout, Duration::from_secs(2));

        let twice = format!("{good}  - certificate: {}\n    label: again\n", site.display());
        let e = load(&write(dir.path(), "twice.yaml", &twice, 0o600)).err().unwrap();
        assert!(e.contains("keys[1].certificate: the same key as keys[0]"), "{e}");
        let missing = format!("{head}keys:\n  - certificate: nowhere.pem\n");
        let e = load(&write(dir.path(), "missing.yaml", &missing, 0o600)).err().unwrap();
        assert!(e.contains("keys[0].certificate:") && e.contains("nowhere.pem"), "{e}");
        let level = format!("{good}log_level: loud\n");
        let e = load(&write(dir.path(), "level.yaml", &level, 0o600)).err().unwrap();
        assert!(
            e.contains("log_level: \"loud\" is not error, warn, info, debug or trace"),
            "{e}"
        );
        let key_is_not_cert = format!("{head}keys:\n  - certificate: {}\n", pki.client_key.display());
        let e = load(&write(dir.path(), "nocert.yaml", &key_is_not_cert, 0o600))
            .err()
            .unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
