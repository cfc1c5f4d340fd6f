//! The mutual-TLS configuration of the keyless listener.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

pub use keyless_service::tls::{err, load_certs, TlsError};

/// Server config: TLS 1.2 and 1.3 (AWS-LC provider, its default suites,
/// which include ECDHE-ECDSA/RSA-AES256-GCM-SHA384 that gokeyless clients
/// use), a client certificate required and verified against `client_ca`.
/// Errors name gokeyless's settings.
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    keyless_service::tls::mutual_server_config(
        (cert, "auth_cert"),
        (key, "auth_key"),
        (client_ca, "cloudflare_ca_cert"),
    )
}
