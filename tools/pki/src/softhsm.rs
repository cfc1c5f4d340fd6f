//! SoftHSM2 tokens for tests, benchmarks and demos: a token directory of
//! our own (its own `softhsm2.conf`), tokens initialized and keys imported
//! with SoftHSM2's `softhsm2-util`, as an operator would do it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{KeyType, PkiError};

/// Where Debian's softhsm2 package installs the module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Run a tool; its standard output, or an error with its standard error.
fn run(program: &str, args: &[&str], softhsm_conf: Option<&Path>) -> Result<String, PkiError> {
    let mut command = Command::new(program);
    if let Some(conf) = softhsm_conf {
        command.env("SOFTHSM2_CONF", conf);
    }
    let out = command
        .args(args)
        .output()
        .map_err(|e| PkiError::Tool(format!("cannot run {program} (apt-get install softhsm2 openssl): {e}")))?;
    if !out.status.success() {
        return Err(PkiError::Tool(format!(
            "{program} {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A SoftHSM2 configuration and token directory below `dir`.
#[derive(Debug, Clone)]
pub struct SoftHsm {
    /// Set `SOFTHSM2_CONF` to this before the module is initialized.
    pub conf: PathBuf,
    pub tokens: PathBuf,
}

/// A key imported into a token, with its public key for verification.
#[derive(Debug, Clone)]
pub struct ImportedKey {
    pub label: String,
    pub id: u8,
    pub kind: KeyType,
    /// PEM SubjectPublicKeyInfo.
    pub public_pem: String,
}

impl SoftHsm {
    pub fn create(dir: &Path) -> Result<SoftHsm, PkiError> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|source| PkiError::Io {
            path: tokens.clone(),
            source,
        })?;
        let conf = dir.join("softhsm2.conf");
        let text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        );
        std::fs::write(&conf, text).map_err(|source| PkiError::Io {
            path: conf.clone(),
            source,
        })?;
        Ok(SoftHsm { conf, tokens })
    }

    fn util(&self, args: &[&str]) -> Result<(), PkiError> {
        run("softhsm2-util", args, Some(&self.conf)).map(drop)
    }

    /// Initialize a new token in a free slot.
    pub fn init_token(&self, label: &str, pin: &str, so_pin: &str) -> Result<(), PkiError> {
        self.util(&[
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            so_pin,
        ])
    }

    /// Generate a key of `kind` with the openssl binary (PKCS#8 in a
    /// temporary file readable only by us, removed at once) and import it
    /// into `token`.
    pub fn import_new_key(
        &self,
        token: &str,
        pin: &str,
        label: &str,
        id: u8,
        kind: KeyType,
    ) -> Result<ImportedKey, PkiError> {
        let path = self.tokens.join(format!(".import-{label}-{id}.pem"));
        crate::write_secret(&path, "")?;
        let result = (|| {
            let mut genpkey = vec!["genpkey", "-algorithm"];
            genpkey.extend_from_slice(match kind {
                KeyType::EcdsaP256 => &["EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
                KeyType::EcdsaP384 => &["EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
                KeyType::EcdsaP521 => &["EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
                KeyType::Rsa2048 => &["RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                KeyType::Rsa3072 => &["RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
                KeyType::Rsa4096 => &["RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
                KeyType::Ed25519 => &["ED25519"],
            });
            let path_str = path.to_str().unwrap_or_default();
            genpkey.extend_from_slice(&["-out", path_str]);
            run("openssl", &genpkey, None)?;
            self.import_key_file(token, pin, label, id, kind, &path)
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Import the PEM private key at `path` (PKCS#8 or traditional) into
    /// `token`, under `label` and CKA_ID `id`.
    pub fn import_key_file(
        &self,
        token: &str,
        pin: &str,
        label: &str,
        id: u8,
        kind: KeyType,
        path: &Path,
    ) -> Result<ImportedKey, PkiError> {
        let path_str = path.to_str().unwrap_or_default();
        let public_pem = run("openssl", &["pkey", "-pubout", "-in", path_str], None)?;
        let id_hex = format!("{id:02x}");
        run(
            "softhsm2-util",
            &[
                "--import", path_str, "--token", token, "--label", label, "--id", &id_hex, "--pin", pin,
            ],
            Some(&self.conf),
        )?;
        Ok(ImportedKey {
            label: label.to_owned(),
            id,
            kind,
            public_pem,
        })
    }

    /// The directory SoftHSM keeps a token's objects in (named by a UUID;
    /// its `token.object` file holds the label).
    pub fn token_dir(&self, label: &str) -> Option<PathBuf> {
        let padded = format!("{label:<32}");
        std::fs::read_dir(&self.tokens)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .find(|dir| {
                std::fs::read(dir.join("token.object"))
                    .is_ok_and(|bytes| bytes.windows(padded.len()).any(|w| w == padded.as_bytes()))
            })
    }
}
