//! The mutual-TLS configuration of the keyless listener.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

pub use keyless_service::tls::{err, load_certs, TlsError};

/// Server config: TLS 1.2 and 1.3 (AWS-LC provider, its default suites,
/// which include ECDHE-ECDSA/RSA-AES256-GCM-SHA384 that gokeyless clients
/// use), a client certificate required and verified against `client_ca`.
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    // Each error names the setting as well as the file: an operator knows
    // which line of the configuration to look at.
    fn named(field: &'static str) -> impl Fn(TlsError) -> TlsError {
        move |mut e| {
            e.path = format!("{field} {}", e.path);
            e
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in load_certs(client_ca).map_err(named("cloudflare_ca_cert"))? {
        roots
            .add(ca)
            .map_err(|e| err(client_ca, e))
            .map_err(named("cloudflare_ca_cert"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err(client_ca, e))
        .map_err(named("cloudflare_ca_cert"))?;
    let chain = load_certs(cert).map_err(named("auth_cert"))?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err(key, format!("no usable private key: {e}")))
        .map_err(named("auth_key"))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err(cert, e))
        .map_err(named("auth_cert"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|e| err(key, format!("does not match {}: {e}", cert.display())))
        .map_err(named("auth_key"))?;
    Ok(Arc::new(config))
}
