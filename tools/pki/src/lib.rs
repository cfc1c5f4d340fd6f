//! A throwaway development PKI: what `keyless-server --dev` and the tests use
//! instead of hand-made certificates.
//!
//! What it does: makes a CA, mutual-TLS server and client certificates
//! signed by it, signing keys for the key server, and a `gokeyless.yaml`
//! that ties them together. What it does not do: anything fit for
//! production — keys are written unencrypted to the chosen folder.

pub mod softhsm;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    RsaKeySize, SanType, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512, PKCS_ED25519,
    PKCS_RSA_SHA256,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Tool(String),
}

/// Key types the PKI can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Ed25519,
}

impl KeyType {
    /// Generate a key pair; `KeyPair::serialize_pem` gives PKCS#8 PEM.
    pub fn generate(self) -> Result<KeyPair, PkiError> {
        Ok(match self {
            KeyType::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            KeyType::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?,
            KeyType::EcdsaP521 => KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512)?,
            KeyType::Ed25519 => KeyPair::generate_for(&PKCS_ED25519)?,
            KeyType::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?,
            KeyType::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072)?,
            KeyType::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096)?,
        })
    }
}

/// What a leaf certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// A certificate and its private key, PEM encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl Ca {
    /// A new self-signed CA (P-384, as gokeyless's keyless CA).
    pub fn new(common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyType::EcdsaP384.generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's private key, PEM (to issue more certificates later).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Load a CA written by [`DevPki::generate`].
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
        })
    }

    /// Issue a P-384 leaf certificate valid for a year.
    pub fn issue(&self, common_name: &str, names: &[&str], usage: Usage) -> Result<Issued, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.issue_with(
            common_name,
            names,
            &[usage],
            now - Duration::hours(1),
            now + Duration::days(365),
        )
    }

    /// Issue a leaf with explicit usages and validity (tests make expired
    /// and wrong-purpose certificates with this).
    pub fn issue_with(
        &self,
        common_name: &str,
        names: &[&str],
        usages: &[Usage],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let key = KeyType::EcdsaP384.generate()?;
        let mut params = leaf_params(common_name, names)?;
        params.extended_key_usages = usages
            .iter()
            .map(|u| match u {
                Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
                Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect();
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A leaf's common name, names (IP addresses or DNS names) and key usage.
fn leaf_params(common_name: &str, names: &[&str]) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).try_into()?),
        });
    }
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

impl Ca {
    /// A server certificate for an existing key (an edge's site
    /// certificate for a key that lives on a key server): the leaf then the
    /// CA, PEM.
    pub fn issue_site(&self, common_name: &str, names: &[&str], key: &KeyPair) -> Result<String, PkiError> {
        let mut params = leaf_params(common_name, names)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// Paths of a development PKI on disk.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    /// The CA's private key, so more client certificates can be issued.
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Signing keys served by the key server (`*.key`).
    pub keys_dir: PathBuf,
    /// Their public keys (`*.pem`, SubjectPublicKeyInfo) for conformance checks.
    pub pubkeys_dir: PathBuf,
    /// A gokeyless.yaml using all of the above.
    pub config: PathBuf,
    /// Site certificates (chains) for the signing keys, for an edge:
    /// `sites/<name>.pem`, valid for localhost and 127.0.0.1.
    pub sites_dir: PathBuf,
}

impl DevPki {
    /// The layout under `dir`, whether or not it exists yet.
    pub fn at(dir: &Path) -> DevPki {
        DevPki {
            dir: dir.to_owned(),
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            keys_dir: dir.join("keys"),
            pubkeys_dir: dir.join("pubkeys"),
            config: dir.join("gokeyless.yaml"),
            sites_dir: dir.join("sites"),
        }
    }

    /// True when every file of the layout is present.
    pub fn is_complete(&self) -> bool {
        [
            &self.ca_cert,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
            &self.config,
        ]
        .iter()
        .all(|p| p.is_file())
            && self.keys_dir.is_dir()
    }

    /// The development PKI in `dir`, made first if any file is missing
    /// (says which on stderr).
    pub fn ensure(dir: &Path, port: u16) -> Result<DevPki, PkiError> {
        let pki = DevPki::at(dir);
        let sites = ["p256.pem", "rsa2048.pem"]
            .iter()
            .all(|s| pki.sites_dir.join(s).is_file());
        if pki.is_complete() && sites {
            eprintln!("using the development PKI in {}", pki.dir.display());
            return Ok(pki);
        }
        let pki = DevPki::generate(dir, DEFAULT_KEYS, port)?;
        eprintln!("created a throwaway development PKI in {}", pki.dir.display());
        Ok(pki)
    }

    /// The CA, loaded back from disk.
    pub fn ca(&self) -> Result<Ca, PkiError> {
        let read = |p: &Path| {
            fs::read_to_string(p).map_err(|source| PkiError::Io {
                path: p.to_owned(),
                source,
            })
        };
        Ca::load(&read(&self.ca_cert)?, &read(&self.ca_key)?)
    }

    /// Generate a fresh PKI with the given signing keys (file stem, type),
    /// and a config that listens on `port`.
    pub fn generate(dir: &Path, keys: &[(&str, KeyType)], port: u16) -> Result<DevPki, PkiError> {
        mkdir(dir)?;
        // Absolute paths in the configuration it writes: it works from any
        // working directory, as a unit file's would.
        let dir = &std::path::absolute(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let pki = DevPki::at(dir);
        let ca = Ca::new("keyless development CA")?;
        // Each side can take either TLS role: a key server that dials out
        // is the TLS client, and the edge it dials is the TLS server.
        let both = |name: &str| {
            let now = OffsetDateTime::now_utc();
            ca.issue_with(
                name,
                &["localhost", "127.0.0.1", "::1"],
                &[Usage::Server, Usage::Client],
                now - Duration::hours(1),
                now + Duration::days(365),
            )
        };
        let server = both("keyless server")?;
        let client = both("keyless client")?;
        mkdir(&pki.keys_dir)?;
        mkdir(&pki.pubkeys_dir)?;
        mkdir(&pki.sites_dir)?;
        write(&pki.ca_cert, &ca.cert_pem)?;
        write_secret(&pki.ca_key, &ca.key_pem())?;
        write(&pki.server_cert, &server.cert_pem)?;
        write_secret(&pki.server_key, &server.key_pem)?;
        write(&pki.client_cert, &client.cert_pem)?;
        write_secret(&pki.client_key, &client.key_pem)?;
        for (name, kind) in keys {
            let key = kind.generate()?;
            write_secret(&pki.keys_dir.join(format!("{name}.key")), &key.serialize_pem())?;
            write(&pki.pubkeys_dir.join(format!("{name}.pem")), &key.public_key_pem())?;
            // `<family>.localhost` too (rsa.localhost): the name the dev edge
            // serves this certificate under, so clients that verify pass.
            let family = format!("{}.localhost", name.trim_end_matches(|c: char| c.is_ascii_digit()));
            let site = ca.issue_site(
                &format!("keyless edge site ({name})"),
                &["localhost", "127.0.0.1", &family],
                &key,
            )?;
            write(&pki.sites_dir.join(format!("{name}.pem")), &site)?;
        }
        let config = format!(
            "# Development configuration written by keyless-pki. Not for production.\n\
             loglevel: 1\n\
             port: {port}\n\
             auth_cert: {}\n\
             auth_key: {}\n\
             cloudflare_ca_cert: {}\n\
             private_key_stores:\n  - dir: {}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca_cert.display(),
            pki.keys_dir.display(),
        );
        write(&pki.config, &config)?;
        Ok(pki)
    }
}

/// The signing keys of the default development PKI.
pub const DEFAULT_KEYS: &[(&str, KeyType)] = &[("p256", KeyType::EcdsaP256), ("rsa2048", KeyType::Rsa2048)];

fn mkdir(path: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    fs::write(path, contents).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Write a private key readable by its owner only.
pub(crate) fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}
