//! Google Cloud KMS (and Cloud HSM, the same API) through
//! `google-cloud-kms-v1`. Credentials are Application Default Credentials
//! (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's file, the metadata server).
//! The Rust SDK reads no endpoint variable, so `KEYLESS_GCP_KMS_ENDPOINT`
//! points the client at a private endpoint (or a test server).

use std::sync::Arc;

use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionAlgorithm as Algorithm;
use google_cloud_kms_v1::model::Digest;
use keyless_keys::{Hash, Operation};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;

use crate::failure::{Cause, Failure};
use crate::store::{Call, Opened, Signer};

/// Overrides `https://cloudkms.googleapis.com`.
pub const ENDPOINT_VAR: &str = "KEYLESS_GCP_KMS_ENDPOINT";

pub(crate) async fn open(name: String) -> Result<Opened, Failure> {
    // The store retries within the request's deadline.
    let mut builder = KeyManagementService::builder().with_retry_policy(NeverRetry);
    if let Ok(endpoint) = std::env::var(ENDPOINT_VAR) {
        builder = builder.with_endpoint(endpoint);
    }
    let client = builder
        .build()
        .await
        .map_err(|e| Failure::new(Cause::NoCredentials, format!("{e:#}")))?;
    let key = client.get_public_key().set_name(&name).send().await.map_err(failure)?;
    let operation = match key.algorithm {
        Algorithm::EcSignP256Sha256 => Operation::Ecdsa(Hash::Sha256),
        Algorithm::EcSignP384Sha384 => Operation::Ecdsa(Hash::Sha384),
        Algorithm::EcSignEd25519 => Operation::Ed25519,
        Algorithm::RsaSignPss2048Sha256 | Algorithm::RsaSignPss3072Sha256 | Algorithm::RsaSignPss4096Sha256 => {
            Operation::RsaPss(Hash::Sha256)
        }
        Algorithm::RsaSignPss4096Sha512 => Operation::RsaPss(Hash::Sha512),
        Algorithm::RsaSignPkcs12048Sha256 | Algorithm::RsaSignPkcs13072Sha256 | Algorithm::RsaSignPkcs14096Sha256 => {
            Operation::RsaPkcs1(Hash::Sha256)
        }
        Algorithm::RsaSignPkcs14096Sha512 => Operation::RsaPkcs1(Hash::Sha512),
        other => {
            return Err(Failure::new(
                Cause::WrongPurpose,
                format!("algorithm {other:?} makes no signature a TLS handshake uses"),
            ))
        }
    };
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(key.pem.as_bytes())
        .map_err(|e| Failure::new(Cause::Other, format!("the public key PEM: {e}")))?;
    Ok(Opened {
        signer: Arc::new(GcpKey { client, name }),
        spki: spki.as_ref().to_vec(),
        operations: vec![operation],
    })
}

struct GcpKey {
    client: KeyManagementService,
    name: String,
}

impl Signer for GcpKey {
    fn sign(&self, op: Operation, input: Vec<u8>) -> Call<'_, Vec<u8>> {
        Box::pin(async move {
            // End-to-end integrity, as Google's guide asks: the service checks
            // the input's CRC32C, we check the signature's.
            let crc = i64::from(crc32c::crc32c(&input));
            let digest = |d: Digest| {
                let request = self.client.asymmetric_sign().set_name(&self.name);
                request.set_digest(d).set_digest_crc32c(crc)
            };
            let request = match op.digest() {
                Some(Hash::Sha256) => digest(Digest::new().set_sha256(input)),
                Some(Hash::Sha384) => digest(Digest::new().set_sha384(input)),
                Some(Hash::Sha512) => digest(Digest::new().set_sha512(input)),
                // Ed25519 signs the message itself.
                None => self
                    .client
                    .asymmetric_sign()
                    .set_name(&self.name)
                    .set_data(input)
                    .set_data_crc32c(crc),
                Some(other) => return Err(Failure::new(Cause::WrongPurpose, format!("{other:?} digests"))),
            };
            let response = request.send().await.map_err(failure)?;
            // A corrupted request or answer: discard it and try again.
            let corrupted = |what: &str| Failure::new(Cause::Unavailable, format!("{what}; discarded"));
            if !(response.verified_digest_crc32c || response.verified_data_crc32c) {
                return Err(corrupted("the service did not confirm the input's CRC32C"));
            }
            if response.name != self.name {
                return Err(corrupted(&format!("the answer names {:?}", response.name)));
            }
            if response.signature_crc32c != Some(i64::from(crc32c::crc32c(&response.signature))) {
                return Err(corrupted("the signature does not match its CRC32C"));
            }
            Ok(response.signature.to_vec())
        })
    }
}

fn failure(e: google_cloud_gax::error::Error) -> Failure {
    let detail = format!("{e:#}");
    let cause = match e.status().map(|s| s.code) {
        Some(Code::ResourceExhausted) => Cause::Throttled,
        Some(Code::Unavailable | Code::Internal | Code::DeadlineExceeded | Code::Aborted) => Cause::Unavailable,
        Some(Code::PermissionDenied) => Cause::PermissionDenied,
        Some(Code::Unauthenticated) => Cause::Unauthenticated,
        Some(Code::NotFound) => Cause::KeyNotFound,
        // "CryptoKeyVersion ... is not enabled" (disabled, destroyed, pending).
        Some(Code::FailedPrecondition) => Cause::KeyDisabled,
        Some(Code::InvalidArgument) => Cause::WrongPurpose,
        Some(_) => Cause::Other,
        None if e.is_authentication() => Cause::NoCredentials,
        None if e.is_timeout() || e.is_io() || e.is_connect() || e.is_transport() => Cause::Network,
        None => e
            .http_status_code()
            .and_then(Cause::from_status)
            .unwrap_or(Cause::Other),
    };
    Failure::new(cause, detail)
}
