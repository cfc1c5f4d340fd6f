//! The `uri:` forms of cloud keys, as gokeyless's README writes them (Google
//! and Azure) plus AWS KMS ARNs. Parsing only checks the shape: whether the
//! key exists, and what it can do, is asked of the provider at load.

use std::fmt;

/// A cloud key, by provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudUri {
    /// `arn:aws:kms:REGION:ACCOUNT:key/ID` or `...:alias/NAME`.
    Aws { arn: String, region: String },
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N`.
    Gcp { name: String },
    /// `https://NAME.vault.azure.net/keys/KEY/VERSION` (or `managedhsm`).
    Azure {
        vault: String,
        key: String,
        version: String,
    },
}

/// Why a `uri:` is not a cloud key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(String);

/// Azure hosts that serve keys: Key Vault and Managed HSM, public and sovereign clouds.
const AZURE_HOSTS: [&str; 6] = [
    ".vault.azure.net",
    ".managedhsm.azure.net",
    ".vault.azure.cn",
    ".managedhsm.azure.cn",
    ".vault.usgovcloudapi.net",
    ".managedhsm.usgovcloudapi.net",
];

impl CloudUri {
    /// Whether `uri` is meant as a cloud key (so a mistake in it is
    /// reported as such, not as a bad PKCS#11 URI).
    pub fn looks_like(uri: &str) -> bool {
        uri.starts_with("arn:") || uri.starts_with("projects/") || uri.starts_with("https://")
    }

    pub fn parse(uri: &str) -> Result<CloudUri, UriError> {
        if uri.starts_with("arn:") {
            parse_arn(uri)
        } else if uri.starts_with("projects/") {
            parse_gcp(uri)
        } else if let Some(rest) = uri.strip_prefix("https://") {
            parse_azure(rest)
        } else {
            Err(UriError(format!(
                "{uri:?} is not a cloud key (arn:aws:kms:..., projects/.../cryptoKeyVersions/N, or https://NAME.vault.azure.net/keys/KEY/VERSION)"
            )))
        }
    }

    pub fn provider(&self) -> &'static str {
        match self {
            CloudUri::Aws { .. } => "aws",
            CloudUri::Gcp { .. } => "gcp",
            CloudUri::Azure { .. } => "azure",
        }
    }
}

impl fmt::Display for CloudUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudUri::Aws { arn, .. } => f.write_str(arn),
            CloudUri::Gcp { name } => f.write_str(name),
            CloudUri::Azure { vault, key, version } => write!(f, "{vault}/keys/{key}/{version}"),
        }
    }
}

fn parse_arn(uri: &str) -> Result<CloudUri, UriError> {
    let bad = |why: &str| UriError(format!("{uri:?} is not an AWS KMS key ARN: {why}"));
    let parts: Vec<&str> = uri.splitn(6, ':').collect();
    let [_, partition, service, region, account, resource] = parts[..] else {
        return Err(bad("expected arn:aws:kms:REGION:ACCOUNT:key/ID"));
    };
    if !partition.starts_with("aws") {
        return Err(bad("the partition is not aws, aws-cn or aws-us-gov"));
    }
    if service != "kms" {
        return Err(bad("the service is not kms"));
    }
    if region.is_empty() {
        return Err(bad("no region"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the account is not 12 digits"));
    }
    let id = resource
        .strip_prefix("key/")
        .or_else(|| resource.strip_prefix("alias/"))
        .ok_or_else(|| bad("the resource is neither key/ID nor alias/NAME"))?;
    // Key ids are one path segment; alias names may hold '/'.
    let bad_key_id = resource.starts_with("key/") && id.contains(['/', ' ']);
    if id.is_empty() || bad_key_id {
        return Err(bad("empty or malformed key id"));
    }
    Ok(CloudUri::Aws {
        arn: uri.to_string(),
        region: region.to_string(),
    })
}

fn parse_gcp(uri: &str) -> Result<CloudUri, UriError> {
    let parts: Vec<&str> = uri.split('/').collect();
    let shape = ["projects", "locations", "keyRings", "cryptoKeys", "cryptoKeyVersions"];
    let ok = parts.len() == 10
        && parts
            .chunks(2)
            .zip(shape)
            .all(|(pair, name)| pair[0] == name && !pair[1].is_empty());
    if !ok {
        return Err(UriError(format!(
            "{uri:?} is not a Cloud KMS key version: expected projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N"
        )));
    }
    Ok(CloudUri::Gcp { name: uri.to_string() })
}

fn parse_azure(rest: &str) -> Result<CloudUri, UriError> {
    let bad = |why: &str| {
        UriError(format!(
            "\"https://{rest}\" is not an Azure key: {why} (expected https://NAME.vault.azure.net/keys/KEY/VERSION)"
        ))
    };
    let (host, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
    let hostname = host.split(':').next().unwrap_or(host);
    if !AZURE_HOSTS
        .iter()
        .any(|suffix| hostname.len() > suffix.len() && hostname.ends_with(suffix))
    {
        return Err(bad("the host is not a Key Vault or Managed HSM host"));
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match segments[..] {
        ["keys", key, version] if !key.is_empty() && !version.is_empty() => Ok(CloudUri::Azure {
            vault: format!("https://{host}"),
            key: key.to_string(),
            version: version.to_string(),
        }),
        ["keys", _] => Err(bad(
            "no key version (a version pins the key a certificate was issued for)",
        )),
        _ => Err(bad("the path is not /keys/KEY/VERSION")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            CloudUri::parse("arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap(),
            CloudUri::Aws {
                arn: "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
                region: "eu-west-1".into()
            }
        );
        assert!(CloudUri::parse("arn:aws:kms:us-east-1:123456789012:alias/site").is_ok());
        assert_eq!(
            CloudUri::parse("projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1").unwrap(),
            CloudUri::Gcp {
                name: "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".into()
            }
        );
        assert_eq!(
            CloudUri::parse("https://site.vault.azure.net/keys/tls/0123abcd").unwrap(),
            CloudUri::Azure {
                vault: "https://site.vault.azure.net".into(),
                key: "tls".into(),
                version: "0123abcd".into()
            }
        );
        assert!(CloudUri::parse("https://hsm1.managedhsm.azure.net/keys/tls/v1").is_ok());
    }

    #[test]
    fn says_what_is_wrong() {
        for (uri, says) in [
            ("arn:aws:s3:us-east-1:123456789012:key/x", "service is not kms"),
            ("arn:aws:kms::123456789012:key/x", "no region"),
            ("arn:aws:kms:us-east-1:1234:key/x", "12 digits"),
            ("arn:aws:kms:us-east-1:123456789012:secret/x", "key/ID nor alias"),
            ("projects/p/locations/l/keyRings/r/cryptoKeys/k", "cryptoKeyVersions/N"),
            (
                "projects/p/locations//keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
                "cryptoKeyVersions/N",
            ),
            ("https://example.com/keys/k/v", "not a Key Vault"),
            ("https://site.vault.azure.net/keys/k", "no key version"),
            ("https://site.vault.azure.net/secrets/k/v", "/keys/KEY/VERSION"),
            ("https://vault.azure.net/keys/k/v", "not a Key Vault"),
        ] {
            let e = CloudUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(says), "{uri}: {e}");
        }
    }
}
