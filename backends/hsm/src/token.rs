//! Reaching a token: the module (loaded and C_Initialize'd once per
//! process), the slot holding the token a URI names, and login.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::uri::Pkcs11Uri;

/// The process's context for `module`: loaded and initialized on first use,
/// then shared (PKCS#11 allows one C_Initialize per process).
pub fn context(module: &Path) -> Result<Pkcs11, String> {
    let mut contexts = contexts().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = contexts.get(module) {
        return Ok(ctx.clone());
    }
    if module.is_absolute() && !module.exists() {
        return Err(format!("PKCS#11 module {}: no such file", module.display()));
    }
    let ctx = Pkcs11::new(module).map_err(|e| format!("cannot load PKCS#11 module {}: {e}", module.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("C_Initialize of {}: {}", module.display(), short(&e))),
    }
    contexts.insert(module.to_owned(), ctx.clone());
    crate::exit::finalize_at_exit();
    Ok(ctx)
}

fn contexts() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    CONTEXTS.get_or_init(Default::default)
}

/// C_Finalize every module this process initialized (at exit, once no
/// worker is inside one).
pub(crate) fn finalize_all() {
    let Ok(mut contexts) = contexts().try_lock() else {
        return;
    };
    for (_, ctx) in contexts.drain() {
        let _ = ctx.finalize();
    }
}

/// Which token a URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSelector {
    pub label: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
}

impl From<&Pkcs11Uri> for TokenSelector {
    fn from(uri: &Pkcs11Uri) -> TokenSelector {
        TokenSelector {
            label: uri.token.clone(),
            serial: uri.serial.clone(),
            manufacturer: uri.manufacturer.clone(),
            model: uri.model.clone(),
            slot_id: uri.slot_id,
        }
    }
}

impl TokenSelector {
    /// The slot whose token matches every given attribute.
    pub fn find(&self, ctx: &Pkcs11) -> Result<Slot, String> {
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| format!("cannot list slots: {}", short(&e)))?;
        let mut seen = Vec::new();
        for slot in slots {
            if self.slot_id.is_some_and(|id| id != slot.id()) {
                continue;
            }
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            let matches = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w.trim() == have.trim());
            if matches(&self.label, info.label())
                && matches(&self.serial, info.serial_number())
                && matches(&self.manufacturer, info.manufacturer_id())
                && matches(&self.model, info.model())
            {
                return Ok(slot);
            }
            seen.push(format!("{:?}", info.label().trim()));
        }
        Err(format!(
            "no token matches {} (tokens present: {})",
            self.describe(),
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ))
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.label {
            parts.push(format!("token={l}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial={s}"));
        }
        if let Some(s) = self.slot_id {
            parts.push(format!("slot-id={s}"));
        }
        parts.join(";")
    }
}

/// Log in as the user. Logging in is per application and token: a session
/// that finds the user already logged in (by another session) is fine.
pub fn login(session: &Session, pin: &Zeroizing<String>) -> Result<(), String> {
    let pin = AuthPin::from(pin.as_str().to_owned());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(Error::Pkcs11(RvError::PinIncorrect, _)) => Err("login refused: wrong PIN (CKR_PIN_INCORRECT)".into()),
        Err(Error::Pkcs11(RvError::PinLocked, _)) => Err("login refused: the PIN is locked (CKR_PIN_LOCKED)".into()),
        Err(e) => Err(format!("login failed: {}", short(&e))),
    }
}

/// An error in a few words: `C_Sign: KeyHandleInvalid`, not the spec's paragraph.
pub fn short(e: &Error) -> String {
    match e {
        Error::Pkcs11(rv, function) => format!("{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}
