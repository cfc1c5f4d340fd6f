//! Why a cloud call failed, in the few causes an operator acts on.

use std::fmt;

/// What went wrong, coarse enough to log once and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// No credentials were found, or the credential source failed.
    NoCredentials,
    /// The provider rejected the credentials (expired, wrong tenant).
    Unauthenticated,
    /// The identity may not use this key.
    PermissionDenied,
    /// The key (version) exists but is disabled or pending deletion.
    KeyDisabled,
    KeyNotFound,
    /// The key is not a signing key, or not for this algorithm.
    WrongPurpose,
    /// The provider said slow down (429, ThrottlingException, RESOURCE_EXHAUSTED).
    Throttled,
    /// A 5xx or an unavailable service.
    Unavailable,
    /// No answer within `cloud_timeout_ms`.
    Timeout,
    /// The connection failed (DNS, TCP, TLS).
    Network,
    /// Anything else the provider said.
    Other,
}

impl Cause {
    pub const ALL: [Cause; 11] = [
        Cause::NoCredentials,
        Cause::Unauthenticated,
        Cause::PermissionDenied,
        Cause::KeyDisabled,
        Cause::KeyNotFound,
        Cause::WrongPurpose,
        Cause::Throttled,
        Cause::Unavailable,
        Cause::Timeout,
        Cause::Network,
        Cause::Other,
    ];

    /// Whether trying again (after a pause) may succeed.
    pub fn transient(self) -> bool {
        matches!(self, Cause::Throttled | Cause::Unavailable | Cause::Network)
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::NoCredentials => "no_credentials",
            Cause::Unauthenticated => "unauthenticated",
            Cause::PermissionDenied => "permission_denied",
            Cause::KeyDisabled => "key_disabled",
            Cause::KeyNotFound => "key_not_found",
            Cause::WrongPurpose => "wrong_purpose",
            Cause::Throttled => "throttled",
            Cause::Unavailable => "unavailable",
            Cause::Timeout => "timeout",
            Cause::Network => "network",
            Cause::Other => "other",
        }
    }

    /// For the response's log line and [`keyless_keys::CryptoError`].
    pub fn describe(self) -> &'static str {
        match self {
            Cause::NoCredentials => "cloud key store: no credentials",
            Cause::Unauthenticated => "cloud key store: credentials rejected",
            Cause::PermissionDenied => "cloud key store: permission denied",
            Cause::KeyDisabled => "cloud key store: key disabled",
            Cause::KeyNotFound => "cloud key store: key not found",
            Cause::WrongPurpose => "cloud key store: key cannot sign this way",
            Cause::Throttled => "cloud key store: throttled",
            Cause::Unavailable => "cloud key store: service unavailable",
            Cause::Timeout => "cloud key store: no answer in time",
            Cause::Network => "cloud key store: cannot connect",
            Cause::Other => "cloud key store: request failed",
        }
    }

    /// The cause an HTTP status means, when it means one.
    pub fn from_status(status: u16) -> Option<Cause> {
        Some(match status {
            401 => Cause::Unauthenticated,
            403 => Cause::PermissionDenied,
            404 => Cause::KeyNotFound,
            429 => Cause::Throttled,
            500..=599 => Cause::Unavailable,
            _ => return None,
        })
    }
}

/// A failed call: its cause and the provider's own words (never key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    pub detail: String,
}

impl Failure {
    pub fn new(cause: Cause, detail: impl Into<String>) -> Failure {
        Failure {
            cause,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.cause.describe().trim_start_matches("cloud key store: ");
        write!(f, "{what}: {}", self.detail)
    }
}
