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
