//! `keyless-tool keystore-debug`, as gokeyless's `--keystore-debug`: open
//! every key store a configuration names, list each key with its type and
//! SKI, and say what failed and why, one store at a time (a broken store
//! does not hide the others).

use crate::config::Settings;
use keyless_keys::SharedKey;

/// One store's result.
pub struct StoreReport {
    /// The store as configured (a PKCS#11 URI without its PIN).
    pub store: String,
    pub keys: Result<Vec<SharedKey>, String>,
}

/// Load each configured store on its own.
pub fn inspect(settings: &Settings) -> Vec<StoreReport> {
    settings
        .key_sources
        .iter()
        .map(|source| {
            let store = source.describe();
            let keys =
                keyless_keys::load_sources_with(std::slice::from_ref(source), &|s| crate::load_external(settings, s))
                    .map_err(|e| e.to_string());
            StoreReport { store, keys }
        })
        .collect()
}

/// The report as text; `true` when every store loaded at least one key.
pub fn render(reports: &[StoreReport]) -> (String, bool) {
    let mut out = String::new();
    let mut ok = !reports.is_empty();
    if reports.is_empty() {
        out.push_str("no private_key_stores configured\n");
    }
    for r in reports {
        out.push_str(&format!("{}\n", r.store));
        match &r.keys {
            Ok(keys) if keys.is_empty() => {
                ok = false;
                out.push_str("  no keys found\n");
            }
            Ok(keys) => {
                for k in keys {
                    let p = k.public();
                    out.push_str(&format!(
                        "  {:<12} SKI {}  {}\n",
                        p.algorithm.to_string(),
                        p.ski_hex(),
                        k.origin()
                    ));
                }
            }
            Err(e) => {
                ok = false;
                out.push_str(&format!("  FAILED: {e}\n"));
            }
        }
    }
    (out, ok)
}

/// The whole `--keystore-debug` report: every store, then the key server's
/// TLS files (it would not start without them either); `true` when all is
/// well. Closes HSM sessions before it returns.
pub fn debug(settings: &Settings) -> (String, bool) {
    let reports = inspect(settings);
    let (mut text, keys_ok) = render(&reports);
    drop(reports);
    keyless_hsm::shutdown(std::time::Duration::from_secs(2));
    let tls = crate::tls::server_config(&settings.auth_cert, &settings.auth_key, &settings.cloudflare_ca_cert);
    if let Err(e) = &tls {
        text.push_str(&format!("TLS: {e}\n"));
    }
    (text, keys_ok && tls.is_ok())
}
