//! Cloud key stores for the keyless key server: AWS KMS, Google Cloud KMS
//! (and Cloud HSM), Azure Key Vault (and Managed HSM).
//!
//! What it does: loads the key version a `uri:` entry names through the
//! provider's official SDK, derives its SKI from the public key the provider
//! hands out (so requests find it as they find a file key), learns which
//! signatures the key version was created for, and signs on the cloud
//! threads ([`runtime`]): the cores only submit and await
//! ([`keyless_keys::Offload`]). Each store bounds its calls in flight and
//! each request's time, retries throttling and 5xx inside that time, and
//! logs a failure once per cause.
//!
//! What it does not do: create keys, or ever see private key bytes.

mod failure;
mod runtime;
mod store;
pub mod uri;

#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "azure")]
mod azure;
#[cfg(feature = "gcp")]
mod gcp;

use std::sync::Arc;
use std::time::Duration;

use keyless_keys::memory::PublicKey;
use keyless_keys::{LoadError, PublicKeyInfo, SharedKey};

pub use failure::{Cause, Failure};
pub use store::{snapshots, Options, StoreSnapshot};
pub use uri::{CloudUri, UriError};

use store::{CloudKey, Opened, Store};

/// Loading one key waits at most this long (credential discovery included:
/// an instance metadata service that does not answer must not hang start-up).
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Load the key version `uri` names. The error names the entry and the
/// cause (no credentials, permission, disabled, wrong purpose...).
pub fn load(uri: &str, options: &Options) -> Result<Vec<SharedKey>, LoadError> {
    let fail = |reason: String| LoadError::Invalid {
        path: uri.into(),
        reason,
    };
    let parsed = CloudUri::parse(uri).map_err(|e| fail(e.to_string()))?;
    let opened = runtime::wait(async move {
        match tokio::time::timeout(LOAD_TIMEOUT, open(parsed)).await {
            Ok(opened) => opened,
            Err(_) => Err(Failure::new(
                Cause::Timeout,
                format!("no answer within {LOAD_TIMEOUT:?}"),
            )),
        }
    })
    .map_err(fail)?
    .map_err(|f| fail(f.to_string()))?;
    let algorithm = PublicKey::from_spki(&opened.spki)
        .map_err(|e| fail(format!("the provider's public key: {e}")))?
        .algorithm();
    let public = PublicKeyInfo::from_spki(algorithm, opened.spki).map_err(fail)?;
    let operations: Vec<_> = opened
        .operations
        .into_iter()
        .filter(|op| op.applies_to(algorithm))
        .collect();
    if operations.is_empty() {
        return Err(fail(format!(
            "{}: the {algorithm} key version cannot make any signature a TLS handshake asks for",
            Cause::WrongPurpose.describe()
        )));
    }
    tracing::info!(
        "{uri}: {algorithm} key, SKI {}, serves {operations:?}",
        public.ski_hex()
    );
    let store = Store::new(uri.to_string(), opened.signer, options);
    Ok(vec![Arc::new(CloudKey::new(public, operations, store)) as SharedKey])
}

async fn open(uri: CloudUri) -> Result<Opened, Failure> {
    let disabled = |provider: &str| {
        Err(Failure::new(
            Cause::Other,
            format!("this build has no {provider} support (cargo feature off)"),
        ))
    };
    match uri {
        #[cfg(feature = "aws")]
        CloudUri::Aws { arn, region } => aws::open(arn, region).await,
        #[cfg(feature = "gcp")]
        CloudUri::Gcp { name } => gcp::open(name).await,
        #[cfg(feature = "azure")]
        CloudUri::Azure { vault, key, version } => azure::open(vault, key, version).await,
        #[allow(unreachable_patterns)]
        other => disabled(other.provider()),
    }
}
