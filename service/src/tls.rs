//! Reading the TLS files a keyless binary is configured with.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A TLS file that could not be used; names the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

pub fn err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Read a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, e))?;
    if certs.is_empty() {
        return Err(err(path, "no CERTIFICATE in PEM file"));
    }
    Ok(certs)
}

/// A TLS server that requires a client certificate: TLS 1.2 and 1.3
/// (AWS-LC provider, its default suites), presenting `cert`/`key`,
/// accepting clients whose certificates chain to `client_ca`. Each path
/// comes with the name of the setting it came from, which errors name.
pub fn mutual_server_config(
    cert: (&Path, &str),
    key: (&Path, &str),
    client_ca: (&Path, &str),
) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
    use rustls::server::WebPkiClientVerifier;
    use rustls_pki_types::PrivateKeyDer;
    use std::sync::Arc;
    // Each error names the setting as well as the file: an operator knows
    // which line of the configuration to look at.
    fn named(field: &str) -> impl Fn(TlsError) -> TlsError + '_ {
        move |mut e| {
            e.path = format!("{field} {}", e.path);
            e
        }
    }
    let ((cert, cert_field), (key, key_field), (ca, ca_field)) = (cert, key, client_ca);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca).map_err(named(ca_field))? {
        roots.add(c).map_err(|e| err(ca, e)).map_err(named(ca_field))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err(ca, e))
        .map_err(named(ca_field))?;
    let chain = load_certs(cert).map_err(named(cert_field))?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err(key, format!("no usable private key: {e}")))
        .map_err(named(key_field))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err(cert, e))
        .map_err(named(cert_field))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => err(
                key,
                format!(
                    "is not the private key of the certificate in {cert_field} {} (their public keys differ): \
                     give the key that certificate was issued for, or the certificate of this key",
                    cert.display()
                ),
            ),
            e => err(key, format!("cannot be used with {cert_field} {}: {e}", cert.display())),
        })
        .map_err(named(key_field))?;
    Ok(Arc::new(config))
}
