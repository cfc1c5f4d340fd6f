//! RFC 7512 `pkcs11:` URIs, as gokeyless accepts them in `private_key_stores`:
//!
//! `pkcs11:token=SoftHSM;object=mykey;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234`
//!
//! Path attributes (`;`-separated) choose the token and the key; query
//! attributes (`&`-separated) say how to reach it: the module, the PIN
//! (`pin-value`, or `pin-source` naming a file) and gokeyless's
//! `max-sessions`. Values are percent-decoded. A parser of untrusted text:
//! every failure is a [`UriError`], never a panic.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use zeroize::Zeroizing;

/// A parsed `pkcs11:` URI. `Debug` never prints the PIN.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// Token label (`token=`).
    pub token: Option<String>,
    /// Token serial number (`serial=`).
    pub serial: Option<String>,
    /// Token manufacturer (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// Token model (`model=`).
    pub model: Option<String>,
    /// Slot number (`slot-id=`).
    pub slot_id: Option<u64>,
    /// Key label, CKA_LABEL (`object=`).
    pub object: Option<String>,
    /// Key identifier, CKA_ID bytes (`id=`, percent-encoded).
    pub id: Option<Vec<u8>>,
    /// The PKCS#11 module to load (`module-path=`).
    pub module_path: Option<PathBuf>,
    /// The user PIN (`pin-value=`).
    pub pin_value: Option<Zeroizing<String>>,
    /// A file holding the user PIN (`pin-source=`, a path or `file:` URI).
    pub pin_source: Option<PathBuf>,
    /// Sessions (and worker threads) for this token (`max-sessions=`).
    pub max_sessions: Option<usize>,
}

/// Why a URI was refused. Messages quote attribute names, never values
/// (a value may be a PIN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("a PKCS#11 URI starts with `pkcs11:`")]
    Scheme,
    #[error("`{0}` is given twice")]
    Duplicate(String),
    #[error("an attribute has no `=` (attributes are `name=value`)")]
    MissingEquals,
    #[error("unknown attribute `{0}`")]
    Unknown(String),
    #[error("`{0}`: bad percent-encoding or not UTF-8")]
    Encoding(String),
    #[error("`{0}` must be a number")]
    Number(String),
    #[error("`{attribute}` is a {part} attribute, not a {other} one")]
    WrongPart {
        attribute: String,
        part: &'static str,
        other: &'static str,
    },
    #[error("{0}")]
    Missing(&'static str),
}

const PATH_ATTRIBUTES: &[&str] = &[
    "token",
    "serial",
    "manufacturer",
    "model",
    "slot-id",
    "object",
    "id",
    "type",
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-manufacturer",
    "slot-description",
];
const QUERY_ATTRIBUTES: &[&str] = &["module-path", "module-name", "pin-value", "pin-source", "max-sessions"];

impl Pkcs11Uri {
    /// Parse and check a URI: it must name a module and a PIN source, and a
    /// token (by label, serial or slot).
    pub fn parse(text: &str) -> Result<Pkcs11Uri, UriError> {
        let rest = text
            .strip_prefix("pkcs11:")
            .or_else(|| text.strip_prefix("PKCS11:"))
            .ok_or(UriError::Scheme)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        let mut seen: Vec<String> = Vec::new();
        for (part, separator, known, other_known, name_of, other_name) in [
            (path, ';', PATH_ATTRIBUTES, QUERY_ATTRIBUTES, "path", "query"),
            (query, '&', QUERY_ATTRIBUTES, PATH_ATTRIBUTES, "query", "path"),
        ] {
            for attribute in part.split(separator).filter(|a| !a.is_empty()) {
                let (name, value) = attribute.split_once('=').ok_or(UriError::MissingEquals)?;
                let name = name.to_ascii_lowercase();
                if seen.contains(&name) {
                    return Err(UriError::Duplicate(name));
                }
                if !known.contains(&name.as_str()) {
                    if other_known.contains(&name.as_str()) {
                        return Err(UriError::WrongPart {
                            attribute: name,
                            part: other_name,
                            other: name_of,
                        });
                    }
                    if name.starts_with("x-") {
                        seen.push(name);
                        continue; // vendor attribute: allowed, ignored
                    }
                    return Err(UriError::Unknown(printable(&name)));
                }
                uri.set(&name, value)?;
                seen.push(name);
            }
        }
        if uri.module_path.is_none() {
            return Err(UriError::Missing(
                "`module-path` is required (the PKCS#11 module to load)",
            ));
        }
        if uri.pin_value.is_none() && uri.pin_source.is_none() {
            return Err(UriError::Missing("`pin-value` or `pin-source` is required"));
        }
        if uri.token.is_none() && uri.serial.is_none() && uri.slot_id.is_none() {
            return Err(UriError::Missing("name the token: `token`, `serial` or `slot-id`"));
        }
        Ok(uri)
    }

    fn set(&mut self, name: &str, raw: &str) -> Result<(), UriError> {
        let bytes = || -> Result<Vec<u8>, UriError> { Ok(percent_decode_str(raw).collect()) };
        let text = || -> Result<String, UriError> {
            percent_decode_str(raw)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| UriError::Encoding(name.to_owned()))
        };
        let number = |s: String| s.trim().parse::<u64>().map_err(|_| UriError::Number(name.to_owned()));
        match name {
            "token" => self.token = Some(text()?),
            "serial" => self.serial = Some(text()?),
            "manufacturer" => self.manufacturer = Some(text()?),
            "model" => self.model = Some(text()?),
            "slot-id" => self.slot_id = Some(number(text()?)?),
            "object" => self.object = Some(text()?),
            "id" => self.id = Some(bytes()?),
            "module-path" | "module-name" => {
                if self.module_path.is_some() {
                    return Err(UriError::Duplicate("module-path/module-name".into()));
                }
                let value = text()?;
                // module-name: a bare library name the dynamic loader finds.
                self.module_path = Some(if name == "module-name" && !value.contains('/') {
                    PathBuf::from(format!("{value}.so"))
                } else {
                    PathBuf::from(value)
                });
            }
            "pin-value" => self.pin_value = Some(Zeroizing::new(text()?)),
            "pin-source" => {
                let value = text()?;
                let path = value.strip_prefix("file://").or_else(|| value.strip_prefix("file:"));
                self.pin_source = Some(PathBuf::from(path.unwrap_or(&value)));
            }
            "max-sessions" => {
                let n = number(text()?)?;
                if n == 0 || n > 256 {
                    return Err(UriError::Number("max-sessions (1 to 256)".into()));
                }
                self.max_sessions = Some(n as usize);
            }
            // Informational attributes we accept and do not match on.
            _ => {}
        }
        Ok(())
    }

    /// The PIN: `pin-value`, or the first line of the `pin-source` file.
    pub fn pin(&self) -> Result<Zeroizing<String>, String> {
        if let Some(pin) = &self.pin_value {
            return Ok(pin.clone());
        }
        let Some(path) = &self.pin_source else {
            return Err("no pin-value or pin-source".into());
        };
        let content =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("pin-source {}: {e}", path.display()))?);
        Ok(Zeroizing::new(content.lines().next().unwrap_or("").to_owned()))
    }

    /// A short name for logs: token and key, no PIN.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token={t}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial={s}"));
        }
        if let Some(s) = self.slot_id {
            parts.push(format!("slot-id={s}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(id) = &self.id {
            parts.push(format!("id={}", hex::encode(id)));
        }
        format!("pkcs11:{}", parts.join(";"))
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Uri")
            .field("token", &self.token)
            .field("serial", &self.serial)
            .field("slot_id", &self.slot_id)
            .field("object", &self.object)
            .field("id", &self.id.as_ref().map(hex::encode))
            .field("module_path", &self.module_path)
            .field("pin_value", &self.pin_value.as_ref().map(|_| "***"))
            .field("pin_source", &self.pin_source)
            .field("max_sessions", &self.max_sessions)
            .finish()
    }
}

/// Attribute names in errors: printable ASCII only, cut short.
fn printable(s: &str) -> String {
    s.chars().take(40).filter(|c| c.is_ascii_graphic()).collect()
}
