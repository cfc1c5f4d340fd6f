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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in load_certs(client_ca)? {
        roots.add(ca).map_err(|e| err(client_ca, e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err(client_ca, e))?;
    let chain = load_certs(cert)?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, format!("no usable private key: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err(cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|e| err(key, format!("does not match {}: {e}", cert.display())))?;
    Ok(Arc::new(config))
}
