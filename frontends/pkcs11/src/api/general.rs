//! Library, slot, token, mechanism, session and login calls: all local,
//! none touches the network.

use std::sync::atomic::Ordering;

use cryptoki_sys::*;

use crate::ffi::padded;
use crate::mechanism;
use crate::state::{module, SLOT};

const MANUFACTURER: &str = "keyless";
const VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

pub fn info() -> Result<CK_INFO, CK_RV> {
    module()?;
    Ok(CK_INFO {
        cryptokiVersion: CK_VERSION { major: 2, minor: 40 },
        manufacturerID: padded(MANUFACTURER),
        flags: 0,
        libraryDescription: padded("keys on keyless key servers"),
        libraryVersion: VERSION,
    })
}

pub fn slots() -> Result<Vec<CK_SLOT_ID>, CK_RV> {
    module()?;
    Ok(vec![SLOT])
}

fn check_slot(slot: CK_SLOT_ID) -> Result<(), CK_RV> {
    module()?;
    if slot == SLOT {
        Ok(())
    } else {
        Err(CKR_SLOT_ID_INVALID)
    }
}

pub fn slot_info(slot: CK_SLOT_ID) -> Result<CK_SLOT_INFO, CK_RV> {
    check_slot(slot)?;
    Ok(CK_SLOT_INFO {
        slotDescription: padded("keyless key servers"),
        manufacturerID: padded(MANUFACTURER),
        flags: CKF_TOKEN_PRESENT,
        hardwareVersion: VERSION,
        firmwareVersion: VERSION,
    })
}

pub fn token_info(slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO, CK_RV> {
    check_slot(slot)?;
    let module = module()?;
    let (sessions, rw) = module.session_count();
    Ok(CK_TOKEN_INFO {
        label: padded(&module.config.token_label),
        manufacturerID: padded(MANUFACTURER),
        model: padded("keyless-pkcs11"),
        serialNumber: padded("1"),
        // No CKF_LOGIN_REQUIRED: nothing asks for a PIN (a worker forked
        // after start-up cannot prompt), and C_Login is accepted anyway.
        flags: CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_RNG,
        ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
        ulSessionCount: sessions as CK_ULONG,
        ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
        ulRwSessionCount: rw as CK_ULONG,
        ulMaxPinLen: 256,
        ulMinPinLen: 0,
        ulTotalPublicMemory: crate::objects::UNAVAILABLE,
        ulFreePublicMemory: crate::objects::UNAVAILABLE,
        ulTotalPrivateMemory: crate::objects::UNAVAILABLE,
        ulFreePrivateMemory: crate::objects::UNAVAILABLE,
        hardwareVersion: VERSION,
        firmwareVersion: VERSION,
        utcTime: padded(""),
    })
}

pub fn mechanisms(slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>, CK_RV> {
    check_slot(slot)?;
    Ok(mechanism::all_mechanisms())
}

pub fn mechanism_info(slot: CK_SLOT_ID, kind: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO, CK_RV> {
    check_slot(slot)?;
    mechanism::info(kind).ok_or(CKR_MECHANISM_INVALID)
}

pub fn open_session(slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE, CK_RV> {
    check_slot(slot)?;
    if flags & CKF_SERIAL_SESSION == 0 {
        return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    }
    Ok(module()?.open_session(flags))
}

pub fn close_session(session: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
    module()?.close_session(session)
}

pub fn close_all_sessions(slot: CK_SLOT_ID) -> Result<(), CK_RV> {
    check_slot(slot)?;
    module()?.close_all_sessions();
    Ok(())
}

pub fn session_info(session: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO, CK_RV> {
    let module = module()?;
    let logged_in = module.logged_in.load(Ordering::Relaxed);
    let flags = module.session_flags(session)?;
    let rw = flags & CKF_RW_SESSION != 0;
    Ok(CK_SESSION_INFO {
        slotID: SLOT,
        state: match (rw, logged_in) {
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        },
        flags,
        ulDeviceError: 0,
    })
}

/// Any PIN is accepted: the keys' protection is the mutual-TLS link and
/// the key server's policy, not a PIN kept beside this file.
pub fn login(session: CK_SESSION_HANDLE, user: CK_USER_TYPE) -> Result<(), CK_RV> {
    let module = module()?;
    module.session(session)?;
    if !matches!(user, CKU_USER | CKU_SO | CKU_CONTEXT_SPECIFIC) {
        return Err(CKR_USER_TYPE_INVALID);
    }
    module.logged_in.store(true, Ordering::Relaxed);
    Ok(())
}

pub fn logout(session: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
    let module = module()?;
    module.session(session)?;
    if module.logged_in.swap(false, Ordering::Relaxed) {
        Ok(())
    } else {
        Err(CKR_USER_NOT_LOGGED_IN)
    }
}

/// C_GenerateRandom: the operating system's generator (through AWS-LC).
pub fn random(session: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<(), CK_RV> {
    module()?.session(session)?;
    use aws_lc_rs::rand::SecureRandom;
    aws_lc_rs::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| CKR_DEVICE_ERROR)
}

/// C_SeedRandom: the generator takes no seed from the caller.
pub fn seed_random(session: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
    module()?.session(session)?;
    Err(CKR_RANDOM_SEED_NOT_SUPPORTED)
}
