//! Client-side mutual TLS configuration.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ClientError;

/// TLS 1.2 and 1.3 with the AWS-LC provider, trusting `ca`, presenting
/// `chain`/`key` (or no client certificate when `None`).
pub fn client_config(
    ca: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c)
            .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Config(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// [`client_config`] from PEM files.
pub fn client_config_from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, ClientError> {
    let certs = |p: &Path| -> Result<Vec<CertificateDer<'static>>, ClientError> {
        CertificateDer::pem_file_iter(p)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ClientError::Config(format!("{}: {e}", p.display())))
    };
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| ClientError::Config(format!("{}: {e}", key.display())))?;
    client_config(certs(ca)?, Some((certs(cert)?, private_key)))
}
