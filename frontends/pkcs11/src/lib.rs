//! `libkeyless_pkcs11.so`: a PKCS#11 module whose private keys are served
//! by keyless key servers (ours or gokeyless), over the keyless protocol
//! and mutual TLS. nginx, Apache httpd, HAProxy, Java (SunPKCS11) and
//! GnuTLS programs load it as they would an HSM's module and terminate TLS
//! without holding a private key.
//!
//! - `config`: the YAML file (`KEYLESS_PKCS11_CONFIG`), read at C_Initialize.
//! - `objects`: per key a certificate, a public and a private key object,
//!   made from the configured certificate; no network to list them.
//! - `mechanism`: PKCS#11 mechanisms to keyless opcodes and back (sans-I/O).
//! - `remote`: the client core's pool, started at the first signature,
//!   started anew after a fork.
//! - `state`: the module and its sessions; `api`: each entry point's work;
//!   `ffi`: every raw pointer checked, and the panic guard.
//!
//! One slot, one token, no PIN required. C_Sign and C_Decrypt block the
//! calling thread for one round trip to a key server (at most the
//! configured `request_timeout`); everything else is local.

#![deny(unsafe_op_in_unsafe_fn)]
// The entry points' safety contract is the PKCS#11 standard's for each
// function (buffers valid for the lengths given with them), restated on
// the `ffi` helpers that read them.
#![allow(clippy::missing_safety_doc, non_snake_case)]

mod api;
mod config;
mod ffi;
mod log;
mod mechanism;
mod objects;
mod remote;
mod state;

use std::ffi::c_void;

use cryptoki_sys::*;

use crate::api::{crypto, general, objects as objs};
use crate::ffi::{guard, OutBuf, Template};

/// Write `values` as C_GetSlotList and C_GetMechanismList do: a null list
/// asks for the count; a short one is CKR_BUFFER_TOO_SMALL with the count.
unsafe fn list_out(list: *mut CK_ULONG, count: *mut CK_ULONG, values: &[CK_ULONG]) -> Result<(), CK_RV> {
    if count.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: `count` is non-null and, per the standard, readable and writable.
    let room = unsafe { count.read_unaligned() } as usize;
    // SAFETY: as above.
    unsafe { count.write_unaligned(values.len() as CK_ULONG) };
    if list.is_null() {
        return Ok(());
    }
    if room < values.len() {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: `list` is writable for `room` >= values.len() entries (the standard's contract).
    unsafe { ffi::fill_ulongs(list, room, values) }.map(drop)
}

#[no_mangle]
pub unsafe extern "C" fn C_Initialize(pInitArgs: *mut c_void) -> CK_RV {
    guard(|| {
        // SAFETY: pInitArgs is null or a CK_C_INITIALIZE_ARGS (the standard's contract).
        let reserved = unsafe { ffi::init_args(pInitArgs as *const CK_C_INITIALIZE_ARGS)? };
        state::initialize(reserved)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_Finalize(pReserved: *mut c_void) -> CK_RV {
    guard(|| {
        if !pReserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        state::finalize()
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetInfo(pInfo: *mut CK_INFO) -> CK_RV {
    // SAFETY: pInfo is null or writable (the standard's contract).
    guard(|| unsafe { ffi::write(pInfo, general::info()?) })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(ppFunctionList: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        let list = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST;
        // SAFETY: ppFunctionList is null or writable (the standard's
        // contract). Callers only read the list through the pointer.
        unsafe { ffi::write(ppFunctionList, list) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetSlotList(
    tokenPresent: CK_BBOOL,
    pSlotList: *mut CK_SLOT_ID,
    pulCount: *mut CK_ULONG,
) -> CK_RV {
    let _ = tokenPresent; // the one slot always holds its token
                          // SAFETY: pSlotList holds *pulCount entries (the standard's contract).
    guard(|| unsafe { list_out(pSlotList, pulCount, &general::slots()?) })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_SLOT_INFO) -> CK_RV {
    // SAFETY: pInfo is null or writable (the standard's contract).
    guard(|| unsafe { ffi::write(pInfo, general::slot_info(slotID)?) })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_TOKEN_INFO) -> CK_RV {
    // SAFETY: pInfo is null or writable (the standard's contract).
    guard(|| unsafe { ffi::write(pInfo, general::token_info(slotID)?) })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismList(
    slotID: CK_SLOT_ID,
    pMechanismList: *mut CK_MECHANISM_TYPE,
    pulCount: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: pMechanismList holds *pulCount entries (the standard's contract).
    guard(|| unsafe { list_out(pMechanismList, pulCount, &general::mechanisms(slotID)?) })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismInfo(
    slotID: CK_SLOT_ID,
    type_: CK_MECHANISM_TYPE,
    pInfo: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    // SAFETY: pInfo is null or writable (the standard's contract).
    guard(|| unsafe { ffi::write(pInfo, general::mechanism_info(slotID, type_)?) })
}

#[no_mangle]
pub unsafe extern "C" fn C_OpenSession(
    slotID: CK_SLOT_ID,
    flags: CK_FLAGS,
    pApplication: *mut c_void,
    Notify: CK_NOTIFY,
    phSession: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    let _ = (pApplication, Notify); // no callbacks are made
    guard(|| {
        if phSession.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let session = general::open_session(slotID, flags)?;
        // SAFETY: phSession is non-null and writable (the standard's contract).
        unsafe { ffi::write(phSession, session) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_CloseSession(hSession: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| general::close_session(hSession))
}

#[no_mangle]
pub unsafe extern "C" fn C_CloseAllSessions(slotID: CK_SLOT_ID) -> CK_RV {
    guard(|| general::close_all_sessions(slotID))
}

#[no_mangle]
pub unsafe extern "C" fn C_GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: *mut CK_SESSION_INFO) -> CK_RV {
    // SAFETY: pInfo is null or writable (the standard's contract).
    guard(|| unsafe { ffi::write(pInfo, general::session_info(hSession)?) })
}

#[no_mangle]
pub unsafe extern "C" fn C_Login(
    hSession: CK_SESSION_HANDLE,
    userType: CK_USER_TYPE,
    pPin: *mut CK_UTF8CHAR,
    ulPinLen: CK_ULONG,
) -> CK_RV {
    let _ = (pPin, ulPinLen); // never read: see general::login
    guard(|| general::login(hSession, userType))
}

#[no_mangle]
pub unsafe extern "C" fn C_Logout(hSession: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| general::logout(hSession))
}

#[no_mangle]
pub unsafe extern "C" fn C_GetAttributeValue(
    hSession: CK_SESSION_HANDLE,
    hObject: CK_OBJECT_HANDLE,
    pTemplate: *mut CK_ATTRIBUTE,
    ulCount: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: pTemplate holds ulCount attributes, each pValue valid
        // for its ulValueLen (the standard's contract).
        let mut template = unsafe { Template::new(pTemplate, ulCount)? };
        objs::get_attributes(hSession, hObject, &mut template)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsInit(
    hSession: CK_SESSION_HANDLE,
    pTemplate: *mut CK_ATTRIBUTE,
    ulCount: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: pTemplate holds ulCount attributes (the standard's contract).
        let template = unsafe { Template::new(pTemplate, ulCount)? };
        objs::find_init(hSession, &template)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjects(
    hSession: CK_SESSION_HANDLE,
    phObject: *mut CK_OBJECT_HANDLE,
    ulMaxObjectCount: CK_ULONG,
    pulObjectCount: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        if pulObjectCount.is_null() || (phObject.is_null() && ulMaxObjectCount > 0) {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let found = objs::find(hSession, ulMaxObjectCount as usize)?;
        // SAFETY: phObject holds ulMaxObjectCount handles, pulObjectCount
        // is writable (the standard's contract), both checked non-null.
        unsafe {
            let n = ffi::fill_ulongs(phObject, ulMaxObjectCount as usize, &found)?;
            ffi::write(pulObjectCount, n as CK_ULONG)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| objs::find_final(hSession))
}

/// The mechanism argument of an Init call: `None` for a null pointer
/// (which cancels the operation, as PKCS#11 3.0 allows).
unsafe fn init_mechanism(
    ptr: *mut CK_MECHANISM,
) -> Result<Option<(CK_MECHANISM_TYPE, Option<mechanism::PssParams>, bool)>, CK_RV> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-null pMechanism is a valid CK_MECHANISM (the standard's contract).
    unsafe { ffi::mechanism(ptr) }.map(Some)
}

#[no_mangle]
pub unsafe extern "C" fn C_SignInit(
    hSession: CK_SESSION_HANDLE,
    pMechanism: *mut CK_MECHANISM,
    hKey: CK_OBJECT_HANDLE,
) -> CK_RV {
    // SAFETY: pMechanism is null or valid (the standard's contract).
    guard(|| crypto::sign_init(hSession, unsafe { init_mechanism(pMechanism)? }, hKey))
}

#[no_mangle]
pub unsafe extern "C" fn C_Sign(
    hSession: CK_SESSION_HANDLE,
    pData: *mut CK_BYTE,
    ulDataLen: CK_ULONG,
    pSignature: *mut CK_BYTE,
    pulSignatureLen: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: pData holds ulDataLen bytes, pSignature *pulSignatureLen
        // bytes (the standard's contract).
        let (data, out) = unsafe { (ffi::input(pData, ulDataLen)?, OutBuf::new(pSignature, pulSignatureLen)?) };
        crypto::sign(hSession, Some(data), &out)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_SignUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG) -> CK_RV {
    // SAFETY: pPart holds ulPartLen bytes (the standard's contract).
    guard(|| crypto::sign_update(hSession, unsafe { ffi::input(pPart, ulPartLen)? }))
}

#[no_mangle]
pub unsafe extern "C" fn C_SignFinal(
    hSession: CK_SESSION_HANDLE,
    pSignature: *mut CK_BYTE,
    pulSignatureLen: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: pSignature holds *pulSignatureLen bytes (the standard's contract).
        let out = unsafe { OutBuf::new(pSignature, pulSignatureLen)? };
        crypto::sign(hSession, None, &out)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_DecryptInit(
    hSession: CK_SESSION_HANDLE,
    pMechanism: *mut CK_MECHANISM,
    hKey: CK_OBJECT_HANDLE,
) -> CK_RV {
    // SAFETY: pMechanism is null or valid (the standard's contract).
    guard(|| crypto::decrypt_init(hSession, unsafe { init_mechanism(pMechanism)? }, hKey))
}

#[no_mangle]
pub unsafe extern "C" fn C_Decrypt(
    hSession: CK_SESSION_HANDLE,
    pEncryptedData: *mut CK_BYTE,
    ulEncryptedDataLen: CK_ULONG,
    pData: *mut CK_BYTE,
    pulDataLen: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: pEncryptedData holds ulEncryptedDataLen bytes, pData
        // *pulDataLen bytes (the standard's contract).
        let (input, out) = unsafe {
            (
                ffi::input(pEncryptedData, ulEncryptedDataLen)?,
                OutBuf::new(pData, pulDataLen)?,
            )
        };
        crypto::decrypt(hSession, input, &out)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM) -> CK_RV {
    // SAFETY: pMechanism is null or valid (the standard's contract).
    guard(|| crypto::digest_init(hSession, unsafe { init_mechanism(pMechanism)? }))
}

#[no_mangle]
pub unsafe extern "C" fn C_Digest(
    hSession: CK_SESSION_HANDLE,
    pData: *mut CK_BYTE,
    ulDataLen: CK_ULONG,
    pDigest: *mut CK_BYTE,
    pulDigestLen: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: pData holds ulDataLen bytes, pDigest *pulDigestLen bytes (the standard's contract).
        let (data, out) = unsafe { (ffi::input(pData, ulDataLen)?, OutBuf::new(pDigest, pulDigestLen)?) };
        crypto::digest(hSession, Some(data), &out)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_DigestUpdate(
    hSession: CK_SESSION_HANDLE,
    pPart: *mut CK_BYTE,
    ulPartLen: CK_ULONG,
) -> CK_RV {
    // SAFETY: pPart holds ulPartLen bytes (the standard's contract).
    guard(|| crypto::digest_update(hSession, unsafe { ffi::input(pPart, ulPartLen)? }))
}

#[no_mangle]
pub unsafe extern "C" fn C_DigestFinal(
    hSession: CK_SESSION_HANDLE,
    pDigest: *mut CK_BYTE,
    pulDigestLen: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: pDigest holds *pulDigestLen bytes (the standard's contract).
        let out = unsafe { OutBuf::new(pDigest, pulDigestLen)? };
        crypto::digest(hSession, None, &out)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GenerateRandom(
    hSession: CK_SESSION_HANDLE,
    RandomData: *mut CK_BYTE,
    ulRandomLen: CK_ULONG,
) -> CK_RV {
    // SAFETY: RandomData holds ulRandomLen bytes (the standard's contract).
    guard(|| general::random(hSession, unsafe { ffi::output(RandomData, ulRandomLen)? }))
}

#[no_mangle]
pub extern "C" fn C_SeedRandom(hSession: CK_SESSION_HANDLE, _seed: *mut CK_BYTE, _len: CK_ULONG) -> CK_RV {
    guard(|| general::seed_random(hSession))
}

/// Entry points this token has no use for: CKR_FUNCTION_NOT_SUPPORTED
/// (CKR_CRYPTOKI_NOT_INITIALIZED before C_Initialize). None reads its
/// arguments.
macro_rules! not_supported {
    ($($name:ident($($arg:ty),*);)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($(_: $arg),*) -> CK_RV {
            guard(|| {
                state::module()?;
                Err(CKR_FUNCTION_NOT_SUPPORTED)
            })
        }
    )*};
}

not_supported! {
    C_InitToken(CK_SLOT_ID, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR);
    C_InitPIN(CK_SESSION_HANDLE, *mut CK_UTF8CHAR, CK_ULONG);
    C_SetPIN(CK_SESSION_HANDLE, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR, CK_ULONG);
    C_GetOperationState(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    C_SetOperationState(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE);
    C_CreateObject(CK_SESSION_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    C_CopyObject(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    C_DestroyObject(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
    C_GetObjectSize(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, *mut CK_ULONG);
    C_SetAttributeValue(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG);
    C_EncryptInit(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    C_Encrypt(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_EncryptUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_EncryptFinal(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    C_DecryptUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_DecryptFinal(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
        C_DigestKey(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
    C_SignRecoverInit(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    C_SignRecover(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_VerifyInit(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    C_Verify(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, CK_ULONG);
    C_VerifyUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG);
    C_VerifyFinal(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG);
    C_VerifyRecoverInit(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    C_VerifyRecover(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_DigestEncryptUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_DecryptDigestUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_SignEncryptUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_DecryptVerifyUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_GenerateKey(CK_SESSION_HANDLE, *mut CK_MECHANISM, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    C_GenerateKeyPair(CK_SESSION_HANDLE, *mut CK_MECHANISM, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE, *mut CK_OBJECT_HANDLE);
    C_WrapKey(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    C_UnwrapKey(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    C_DeriveKey(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    C_GetFunctionStatus(CK_SESSION_HANDLE);
    C_CancelFunction(CK_SESSION_HANDLE);
    C_WaitForSlotEvent(CK_FLAGS, *mut CK_SLOT_ID, *mut c_void);
}

static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION { major: 2, minor: 40 },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};
