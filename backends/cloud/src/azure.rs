//! Azure Key Vault and Managed HSM through `azure_security_keyvault_keys`.
//! Credentials, as the other Azure SDKs find them: a service principal from
//! `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` (or
//! `AZURE_CLIENT_CERTIFICATE_PATH`, a PKCS#12 file, and
//! `AZURE_CLIENT_CERTIFICATE_PASSWORD`), workload identity
//! (`AZURE_FEDERATED_TOKEN_FILE`), else the managed identity.
//! `AZURE_AUTHORITY_HOST` moves the token endpoint. The vault URL is the
//! endpoint; `KEYLESS_AZURE_KEYVAULT_ENDPOINT` replaces its scheme, host and
//! port (a test server), and then the token challenge cannot be checked
//! against the vault's domain.

use std::sync::Arc;

use azure_core::credentials::{Secret, SecretBytes, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RetryOptions};
use azure_identity::{
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential, ManagedIdentityCredential,
    WorkloadIdentityCredential,
};
use azure_security_keyvault_keys::models::{
    CurveName, KeyClientGetKeyOptions, KeyClientSignOptions, KeyType, SignParameters, SignatureAlgorithm,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use keyless_keys::{spki, Hash, KeyAlgorithm, Operation};

use crate::failure::{Cause, Failure};
use crate::store::{Call, Opened, Signer};

pub const ENDPOINT_VAR: &str = "KEYLESS_AZURE_KEYVAULT_ENDPOINT";

pub(crate) async fn open(vault: String, key: String, version: String) -> Result<Opened, Failure> {
    let credential = credential()?;
    let endpoint = std::env::var(ENDPOINT_VAR).unwrap_or_else(|_| vault.clone());
    let options = KeyClientOptions {
        verify_challenge_resource: Some(endpoint == vault),
        client_options: ClientOptions {
            // The store retries within the request's deadline.
            retry: RetryOptions::none(),
            ..Default::default()
        },
        ..Default::default()
    };
    let client = KeyClient::new(&endpoint, credential, Some(options))
        .map_err(|e| Failure::new(Cause::Other, format!("{vault}: {e}")))?;
    let got = client
        .get_key(
            &key,
            Some(KeyClientGetKeyOptions {
                key_version: Some(version.clone()),
                ..Default::default()
            }),
        )
        .await
        .map_err(failure)?
        .into_model()
        .map_err(failure)?;
    if got.attributes.as_ref().and_then(|a| a.enabled) == Some(false) {
        return Err(Failure::new(Cause::KeyDisabled, "the key version is disabled"));
    }
    let jwk = got
        .key
        .ok_or_else(|| Failure::new(Cause::Other, "the key has no JSON web key"))?;
    let ops = jwk.key_ops.clone().unwrap_or_default();
    if !ops.iter().any(|o| o == "sign") {
        return Err(Failure::new(
            Cause::WrongPurpose,
            format!("key_ops {ops:?} do not include sign"),
        ));
    }
    let missing = |what: &str| Failure::new(Cause::Other, format!("the JSON web key has no {what}"));
    let (spki, operations) = match jwk.kty {
        Some(KeyType::Ec | KeyType::EcHsm) => {
            let (curve, size, hash) = match jwk.crv {
                Some(CurveName::P256) => (KeyAlgorithm::EcdsaP256, 32, Hash::Sha256),
                Some(CurveName::P384) => (KeyAlgorithm::EcdsaP384, 48, Hash::Sha384),
                Some(CurveName::P521) => (KeyAlgorithm::EcdsaP521, 66, Hash::Sha512),
                other => return Err(Failure::new(Cause::WrongPurpose, format!("curve {other:?}"))),
            };
            let (x, y) = (jwk.x.ok_or_else(|| missing("x"))?, jwk.y.ok_or_else(|| missing("y"))?);
            let mut point = vec![4];
            point.extend(left_pad(&x, size));
            point.extend(left_pad(&y, size));
            let spki = spki::ec_spki_on(curve, &point).map_err(|e| Failure::new(Cause::Other, e))?;
            (spki, vec![Operation::Ecdsa(hash)])
        }
        Some(KeyType::Rsa | KeyType::RsaHsm) => {
            let (n, e) = (jwk.n.ok_or_else(|| missing("n"))?, jwk.e.ok_or_else(|| missing("e"))?);
            let spki = spki::rsa_spki(&n, &e).map_err(|e| Failure::new(Cause::Other, e))?;
            let hashes = [Hash::Sha256, Hash::Sha384, Hash::Sha512];
            let ops = hashes
                .iter()
                .map(|h| Operation::RsaPkcs1(*h))
                .chain(hashes.iter().map(|h| Operation::RsaPss(*h)))
                .collect();
            (spki, ops)
        }
        other => {
            return Err(Failure::new(
                Cause::WrongPurpose,
                format!("key type {other:?} does not sign"),
            ))
        }
    };
    Ok(Opened {
        signer: Arc::new(AzureKey {
            client,
            key,
            version,
            ecdsa: matches!(operations[0], Operation::Ecdsa(_)),
        }),
        spki,
        operations,
    })
}

/// JWK coordinates may drop leading zero bytes.
fn left_pad(v: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0; size.saturating_sub(v.len())];
    out.extend_from_slice(v);
    out
}

fn credential() -> Result<Arc<dyn TokenCredential>, Failure> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let fail = |e: azure_core::Error| Failure::new(Cause::NoCredentials, e.to_string());
    let principal = var("AZURE_TENANT_ID").zip(var("AZURE_CLIENT_ID"));
    if let (Some((tenant, client)), Some(secret)) = (&principal, var("AZURE_CLIENT_SECRET")) {
        return Ok(ClientSecretCredential::new(tenant, client.clone(), Secret::new(secret), None).map_err(fail)?);
    }
    if let (Some((tenant, client)), Some(path)) = (&principal, var("AZURE_CLIENT_CERTIFICATE_PATH")) {
        let bytes = std::fs::read(&path).map_err(|e| {
            Failure::new(
                Cause::NoCredentials,
                format!("AZURE_CLIENT_CERTIFICATE_PATH {path}: {e}"),
            )
        })?;
        let options = ClientCertificateCredentialOptions {
            password: var("AZURE_CLIENT_CERTIFICATE_PASSWORD").map(Secret::new),
            ..Default::default()
        };
        return Ok(ClientCertificateCredential::new(
            tenant.clone(),
            client.clone(),
            SecretBytes::new(bytes),
            Some(options),
        )
        .map_err(fail)?);
    }
    if var("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        return Ok(WorkloadIdentityCredential::new(None).map_err(fail)?);
    }
    Ok(ManagedIdentityCredential::new(None).map_err(fail)?)
}

struct AzureKey {
    client: KeyClient,
    key: String,
    version: String,
    ecdsa: bool,
}

impl Signer for AzureKey {
    fn sign(&self, op: Operation, digest: Vec<u8>) -> Call<'_, Vec<u8>> {
        Box::pin(async move {
            let algorithm = match op {
                Operation::Ecdsa(Hash::Sha256) => SignatureAlgorithm::Es256,
                Operation::Ecdsa(Hash::Sha384) => SignatureAlgorithm::Es384,
                Operation::Ecdsa(Hash::Sha512) => SignatureAlgorithm::Es512,
                Operation::RsaPkcs1(Hash::Sha256) => SignatureAlgorithm::Rs256,
                Operation::RsaPkcs1(Hash::Sha384) => SignatureAlgorithm::Rs384,
                Operation::RsaPkcs1(Hash::Sha512) => SignatureAlgorithm::Rs512,
                Operation::RsaPss(Hash::Sha256) => SignatureAlgorithm::Ps256,
                Operation::RsaPss(Hash::Sha384) => SignatureAlgorithm::Ps384,
                Operation::RsaPss(Hash::Sha512) => SignatureAlgorithm::Ps512,
                other => return Err(Failure::new(Cause::WrongPurpose, format!("{other:?}"))),
            };
            let parameters = SignParameters {
                algorithm: Some(algorithm),
                value: Some(digest),
            };
            let body = parameters
                .try_into()
                .map_err(|e: azure_core::Error| Failure::new(Cause::Other, e.to_string()))?;
            let result = self
                .client
                .sign(
                    &self.key,
                    body,
                    Some(KeyClientSignOptions {
                        key_version: Some(self.version.clone()),
                        ..Default::default()
                    }),
                )
                .await
                .map_err(failure)?
                .into_model()
                .map_err(failure)?;
            let signature = result
                .result
                .ok_or_else(|| Failure::new(Cause::Other, "the sign answer has no result"))?;
            if self.ecdsa {
                // Key Vault returns r || s (JWS); TLS wants DER.
                spki::ecdsa_der(&signature).map_err(|e| Failure::new(Cause::Other, e))
            } else {
                Ok(signature)
            }
        })
    }
}

fn failure(e: azure_core::Error) -> Failure {
    let detail = e.to_string();
    let cause = match e.kind() {
        ErrorKind::HttpResponse { status, error_code, .. } => match error_code.as_deref() {
            Some("Forbidden" | "ForbiddenByPolicy" | "AccessDenied") => Cause::PermissionDenied,
            Some("KeyNotFound") => Cause::KeyNotFound,
            Some("Unauthorized") => Cause::Unauthenticated,
            _ if detail.contains("disabled") => Cause::KeyDisabled,
            _ => Cause::from_status(u16::from(*status)).unwrap_or(Cause::Other),
        },
        ErrorKind::Credential => Cause::NoCredentials,
        ErrorKind::Connection | ErrorKind::Io => Cause::Network,
        _ => Cause::Other,
    };
    Failure::new(cause, detail)
}
