//! AWS KMS through `aws-sdk-kms`. Credentials, region defaults and
//! endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KMS`) come from the
//! SDK's standard chain; the region is the ARN's.

use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyUsageType, MessageType, SigningAlgorithmSpec};
use aws_sdk_kms::Client;
use keyless_keys::{Hash, Operation};

use crate::failure::{Cause, Failure};
use crate::store::{Call, Opened, Signer};

pub(crate) async fn open(arn: String, region: String) -> Result<Opened, Failure> {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        // The store retries within the request's deadline.
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    let client = Client::new(&config);
    let key = client.get_public_key().key_id(&arn).send().await.map_err(failure)?;
    if key.key_usage() != Some(&KeyUsageType::SignVerify) {
        return Err(Failure::new(
            Cause::WrongPurpose,
            format!("key usage is {:?}, not SIGN_VERIFY", key.key_usage()),
        ));
    }
    let spki = key
        .public_key()
        .ok_or_else(|| Failure::new(Cause::Other, "GetPublicKey returned no public key"))?
        .as_ref()
        .to_vec();
    let operations = key.signing_algorithms().iter().filter_map(operation).collect();
    Ok(Opened {
        signer: Arc::new(AwsKey { client, arn }),
        spki,
        operations,
    })
}

struct AwsKey {
    client: Client,
    arn: String,
}

impl Signer for AwsKey {
    fn sign(&self, op: Operation, digest: Vec<u8>) -> Call<'_, Vec<u8>> {
        Box::pin(async move {
            let algorithm = algorithm(op).ok_or_else(|| Failure::new(Cause::WrongPurpose, format!("{op:?}")))?;
            let out = self
                .client
                .sign()
                .key_id(&self.arn)
                .message(Blob::new(digest))
                .message_type(MessageType::Digest)
                .signing_algorithm(algorithm)
                .send()
                .await
                .map_err(failure)?;
            out.signature
                .map(Blob::into_inner)
                .ok_or_else(|| Failure::new(Cause::Other, "Sign returned no signature"))
        })
    }
}

/// KMS signing algorithms and our operations, both ways.
const ALGORITHMS: [(SigningAlgorithmSpec, Operation); 9] = [
    (SigningAlgorithmSpec::EcdsaSha256, Operation::Ecdsa(Hash::Sha256)),
    (SigningAlgorithmSpec::EcdsaSha384, Operation::Ecdsa(Hash::Sha384)),
    (SigningAlgorithmSpec::EcdsaSha512, Operation::Ecdsa(Hash::Sha512)),
    (
        SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        Operation::RsaPkcs1(Hash::Sha256),
    ),
    (
        SigningAlgorithmSpec::RsassaPkcs1V15Sha384,
        Operation::RsaPkcs1(Hash::Sha384),
    ),
    (
        SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
        Operation::RsaPkcs1(Hash::Sha512),
    ),
    (SigningAlgorithmSpec::RsassaPssSha256, Operation::RsaPss(Hash::Sha256)),
    (SigningAlgorithmSpec::RsassaPssSha384, Operation::RsaPss(Hash::Sha384)),
    (SigningAlgorithmSpec::RsassaPssSha512, Operation::RsaPss(Hash::Sha512)),
];

fn operation(spec: &SigningAlgorithmSpec) -> Option<Operation> {
    ALGORITHMS.iter().find(|(s, _)| s == spec).map(|(_, op)| *op)
}

fn algorithm(op: Operation) -> Option<SigningAlgorithmSpec> {
    ALGORITHMS.iter().find(|(_, o)| *o == op).map(|(s, _)| s.clone())
}

fn failure<E, R>(e: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = DisplayErrorContext(&e).to_string();
    let cause = match &e {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            match code {
                "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException" => Cause::Throttled,
                "DisabledException" | "KMSInvalidStateException" => Cause::KeyDisabled,
                "NotFoundException" => Cause::KeyNotFound,
                "AccessDeniedException" => Cause::PermissionDenied,
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "ExpiredTokenException"
                | "InvalidClientTokenId" => Cause::Unauthenticated,
                "InvalidKeyUsageException" | "UnsupportedOperationException" => Cause::WrongPurpose,
                "KeyUnavailableException" | "KMSInternalException" | "DependencyTimeoutException" => Cause::Unavailable,
                _ => Cause::Other,
            }
        }
        _ if detail.contains("credentials") => Cause::NoCredentials,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Cause::Network,
        SdkError::ResponseError(_) => Cause::Unavailable,
        _ => Cause::Other,
    };
    Failure::new(cause, detail)
}
