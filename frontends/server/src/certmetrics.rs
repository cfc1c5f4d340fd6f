//! gokeyless's `certificate_expiration_timestamp_seconds{source, serial_no,
//! cn, hostnames, ca, server, client}`: when each certificate the server
//! holds or has been shown expires, so an operator alerts before a link
//! certificate does. As gokeyless (`certmetrics/`): its own certificate
//! chain and CA file at start (source: the file), and every certificate a
//! client presents (source: `listener: <address>`), plus here the edges'
//! certificates when the server dials (source: `dial: <edge>`).
//!
//! A peer's chain is parsed once: later handshakes with the same
//! certificates cost a hash lookup. At most [`MAX_SERIES`] series are
//! kept, so clients cannot grow the process's memory without bound.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::*;

/// Series kept at most (distinct certificates and sources).
pub const MAX_SERIES: usize = 4096;

/// The label values, in gokeyless's order.
pub type Labels = [(&'static str, String); 7];

#[derive(Default)]
struct Seen {
    series: BTreeMap<Labels, i64>,
    /// Hashes of (source, certificate DER) already recorded.
    digests: HashSet<u64>,
}

fn seen() -> &'static Mutex<Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    SEEN.get_or_init(Default::default)
}

fn one_zero(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// The labels and expiry of one certificate, or `None` if it does not parse.
pub fn describe(source: &str, der: &[u8]) -> Option<(Labels, i64)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut hostnames: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    hostnames.sort();
    let ca = cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
    let (server, client) = match cert.extended_key_usage().ok().flatten() {
        Some(eku) => (
            eku.value.any || eku.value.server_auth,
            eku.value.any || eku.value.client_auth,
        ),
        None => (false, false),
    };
    Some((
        [
            ("source", source.to_string()),
            // Decimal, as Go's big.Int prints it.
            ("serial_no", cert.tbs_certificate.serial.to_string()),
            ("cn", cn),
            ("hostnames", hostnames.join(",")),
            ("ca", one_zero(ca)),
            ("server", one_zero(server)),
            ("client", one_zero(client)),
        ],
        cert.validity().not_after.timestamp(),
    ))
}

/// Record a chain of certificates seen from `source`.
pub fn observe(source: &str, chain: &[CertificateDer<'_>]) {
    let mut seen = seen().lock().unwrap_or_else(|p| p.into_inner());
    for der in chain {
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (source, der.as_ref()).hash(&mut h);
            h.finish()
        };
        if seen.digests.contains(&digest) || seen.series.len() >= MAX_SERIES {
            continue;
        }
        seen.digests.insert(digest);
        if let Some((labels, expiry)) = describe(source, der.as_ref()) {
            seen.series.insert(labels, expiry);
        }
    }
}

/// Record the certificates in PEM files (the server's chain, its CA file).
/// A file that cannot be read was refused at start already: skipped here.
pub fn observe_files(paths: &[&Path]) {
    for path in paths {
        let Ok(certs) = keyless_service::tls::load_certs(path) else {
            continue;
        };
        observe(&path.display().to_string(), &certs);
    }
}

/// Every series recorded so far.
pub fn samples() -> Vec<(Labels, i64)> {
    let seen = seen().lock().unwrap_or_else(|p| p.into_inner());
    seen.series.iter().map(|(l, e)| (l.clone(), *e)).collect()
}
