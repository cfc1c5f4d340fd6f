//! What the key server's sandbox allows, from its settings: the files it
//! reads (configuration, certificates and key files through their folders,
//! key folders, the PKCS#11 modules and
//! crypto_mb it loads, a cloud SDK's credentials), where it writes (the pid
//! file's and the Unix socket's folders, its own temporary folder CPU profiles
//! use), the ports it listens on and the ones it connects to (edges it
//! dials and their proxy; cloud APIs). The sandbox itself is
//! `keyless_service::sandbox`.

use std::path::{Path, PathBuf};

use keyless_keys::KeySource;
use keyless_service::sandbox::Plan;

use crate::Settings;

/// Variables whose URLs the cloud SDKs (and our endpoint overrides) connect to.
const CLOUD_URL_VARS: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KMS",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "KEYLESS_GCP_KMS_ENDPOINT",
    "KEYLESS_AZURE_KEYVAULT_ENDPOINT",
    "AZURE_AUTHORITY_HOST",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Variables naming files the cloud SDKs read for credentials.
const CLOUD_FILE_VARS: &[&str] = &[
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
];

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A file the server reads again on SIGHUP is allowed through its folder:
/// Landlock's rules hold inodes, and a file replaced by a rename (an
/// editor, certbot, a Kubernetes Secret's swap) is a new inode that a rule
/// for the old file would not cover. Not when the folder is the root.
fn folder_of(file: &Path) -> PathBuf {
    let folder = std::fs::canonicalize(parent(file)).unwrap_or_else(|_| parent(file));
    if folder.parent().is_none() {
        file.to_owned()
    } else {
        folder
    }
}

fn url_port(text: &str) -> Option<u16> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    url::Url::parse(&with_scheme).ok()?.port_or_known_default()
}

/// The plan for these settings, with the environment the cloud SDKs read.
pub fn plan(s: &Settings) -> Plan {
    plan_with(s, |name| std::env::var_os(name))
}

/// [`plan`] with the environment given (for tests).
pub fn plan_with(s: &Settings, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Plan {
    let mut read: Vec<PathBuf> = [&s.auth_cert, &s.auth_key, &s.cloudflare_ca_cert]
        .into_iter()
        .chain(&s.config_file)
        .map(|f| folder_of(f))
        .collect();
    let mut connect: Vec<u16> = Vec::new();
    let mut hsm = false;
    let mut cloud = false;
    for source in &s.key_sources {
        match source {
            KeySource::Dir(d) => read.push(d.clone()),
            KeySource::File(f) => read.push(folder_of(f)),
            KeySource::Pkcs11(uri) => {
                hsm = true;
                if let Ok(uri) = keyless_hsm::Pkcs11Uri::parse(uri.expose()) {
                    read.extend(uri.module_path.iter().cloned());
                    read.extend(uri.pin_source.iter().cloned());
                }
            }
            KeySource::Cloud(_) => cloud = true,
        }
    }
    if cloud {
        // HTTPS to the APIs; plain HTTP to instance metadata (credentials).
        connect.extend([443, 80]);
        connect.extend(
            CLOUD_URL_VARS
                .iter()
                .filter_map(|v| url_port(&env(v)?.to_string_lossy())),
        );
        read.extend(CLOUD_FILE_VARS.iter().filter_map(|v| env(v).map(PathBuf::from)));
        if let Some(home) = env("HOME").map(PathBuf::from) {
            read.push(home.join(".aws"));
            read.push(home.join(".config/gcloud"));
        }
    }
    if let Some(lib) = &s.multibuffer_library {
        // The folder: the loader may open its neighbours too.
        read.push(parent(lib));
    }
    read.extend(s.sandbox_read_paths.iter().cloned());
    let mut write: Vec<PathBuf> = Vec::new();
    write.extend(s.pid_file.as_deref().map(parent));
    write.extend(s.unix_socket.as_deref().map(parent));
    let mut bind_tcp = Vec::new();
    if s.listen.port() != 0 {
        bind_tcp.push(s.listen.port());
    }
    if s.metrics.port() != 0 {
        bind_tcp.push(s.metrics.port());
        // CPU profiles keep their samples in temporary files: in the
        // process's own folder (`sandbox::private_temp_dir`).
        write.push(env("TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from));
    }
    write.extend(s.sandbox_write_paths.iter().cloned());
    if let Some(d) = &s.dial {
        connect.extend(
            d.edges
                .iter()
                .filter_map(|e| e.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok())),
        );
        if let Some(p) = d.proxy.as_deref().and_then(|p| crate::dial::Proxy::parse(p).ok()) {
            connect.push(p.port);
        }
    }
    connect.extend(s.sandbox_connect_ports.iter().copied());
    connect.sort_unstable();
    connect.dedup();
    Plan {
        read,
        write,
        bind_tcp,
        // A PKCS#11 module may reach a network HSM on ports only its
        // operator knows: unrestricted unless they are listed.
        connect_tcp: (!hsm || !s.sandbox_connect_ports.is_empty()).then_some(connect),
    }
}

/// Whether `next` needs files, folders or ports the sandbox built from
/// `started` does not allow, beyond those of settings a restart is already
/// said to need (listening ports, edges to dial).
pub fn widens(started: &Settings, next: &Settings) -> bool {
    let (a, b) = (plan(started), plan(next));
    let missing = |have: &[PathBuf], want: &[PathBuf]| want.iter().any(|p| !have.contains(p));
    let ports = |p: &Plan| p.connect_tcp.clone();
    missing(&a.read, &b.read)
        || missing(&a.write, &b.write)
        || (started.dial == next.dial
            && match (ports(&a), ports(&b)) {
                (_, None) => false,
                (None, Some(_)) => false,
                (Some(have), Some(want)) => want.iter().any(|p| !have.contains(p)),
            })
}
