//! Signing and decrypting: the only calls that reach a key server, one
//! round trip each, blocking the calling thread for at most the
//! configured request timeout.

use cryptoki_sys::*;

use crate::ffi::{OutBuf, Room};
use crate::mechanism::{self, PssParams};
use crate::objects::locate;
use crate::state::{module, Decrypting, Module, Session, Signing};

/// The key whose private-key object `handle` is.
fn private_key(module: &Module, handle: CK_OBJECT_HANDLE) -> Result<usize, CK_RV> {
    match locate(handle) {
        Some((key, 2)) if key < module.config.keys.len() => Ok(key),
        // A public key or certificate of ours: it cannot sign or decrypt.
        Some((key, _)) if key < module.config.keys.len() => Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
        _ => Err(CKR_KEY_HANDLE_INVALID),
    }
}

/// The parameters a mechanism may carry: PSS's, for the PSS mechanisms.
fn params(kind: CK_MECHANISM_TYPE, pss: Option<PssParams>, has_params: bool) -> Result<Option<PssParams>, CK_RV> {
    let is_pss = matches!(
        kind,
        CKM_RSA_PKCS_PSS | CKM_SHA256_RSA_PKCS_PSS | CKM_SHA384_RSA_PKCS_PSS | CKM_SHA512_RSA_PKCS_PSS
    );
    match (is_pss, has_params) {
        (true, _) => Ok(pss),
        (false, false) => Ok(None),
        (false, true) => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

/// C_SignInit; `None` (a null mechanism) cancels an active operation.
pub fn sign_init(
    session: CK_SESSION_HANDLE,
    mechanism: Option<(CK_MECHANISM_TYPE, Option<PssParams>, bool)>,
    key: CK_OBJECT_HANDLE,
) -> Result<(), CK_RV> {
    let module = module()?;
    module.with_session(session, |s| {
        let Some((kind, pss, has_params)) = mechanism else {
            s.signing = None;
            return Ok(());
        };
        if s.signing.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let key = private_key(&module, key)?;
        let plan = mechanism::sign_plan(kind, params(kind, pss, has_params)?, module.config.keys[key].kind)?;
        s.signing = Some(Signing {
            key,
            plan,
            data: Vec::new(),
        });
        Ok(())
    })
}

pub fn sign_update(session: CK_SESSION_HANDLE, part: &[u8]) -> Result<(), CK_RV> {
    module()?.with_session(session, |s| {
        let signing = s.signing.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        signing.data.extend_from_slice(part);
        Ok(())
    })
}

/// C_Sign (`data` is `Some`) and C_SignFinal (`None`: the data from
/// C_SignUpdate). A length query or a short buffer keeps the operation;
/// anything else ends it.
pub fn sign(session: CK_SESSION_HANDLE, data: Option<&[u8]>, out: &OutBuf) -> Result<(), CK_RV> {
    let module = module()?;
    module.with_session(session, |s| {
        let signing = s.signing.as_ref().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let kind = module.config.keys[signing.key].kind;
        if out.room(kind.signature_len())? == Room::Query {
            return Ok(());
        }
        let signing = s.signing.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let key = &module.config.keys[signing.key];
        let data = data.unwrap_or(&signing.data);
        let (opcode, payload) = mechanism::sign_request(signing.plan, kind, data)?;
        let answer = module.remote.perform(&module.config, opcode, key.ski, payload)?;
        out.put(&mechanism::signature(signing.plan, kind, &answer)?)
    })
}

/// C_DecryptInit; `None` cancels an active operation.
pub fn decrypt_init(
    session: CK_SESSION_HANDLE,
    mechanism: Option<(CK_MECHANISM_TYPE, Option<PssParams>, bool)>,
    key: CK_OBJECT_HANDLE,
) -> Result<(), CK_RV> {
    let module = module()?;
    module.with_session(session, |s| {
        let Some((kind, _, has_params)) = mechanism else {
            s.decrypting = None;
            return Ok(());
        };
        if s.decrypting.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        if has_params {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        let key = private_key(&module, key)?;
        let plan = mechanism::decrypt_plan(kind, module.config.keys[key].kind)?;
        s.decrypting = Some(Decrypting {
            key,
            plan,
            result: None,
        });
        Ok(())
    })
}

/// C_Decrypt. A length query (before any decryption) answers the most
/// the plaintext can be, without asking the key server; a buffer too small
/// for the plaintext gets its exact length and keeps it for the retry.
pub fn decrypt(session: CK_SESSION_HANDLE, ciphertext: &[u8], out: &OutBuf) -> Result<(), CK_RV> {
    let module = module()?;
    module.with_session(session, |s: &mut Session| {
        let op = s.decrypting.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let key = &module.config.keys[op.key];
        if op.result.is_none() {
            if out.is_query() {
                out.room(mechanism::plaintext_bound(op.plan, key.kind))?;
                return Ok(());
            }
            let done = mechanism::decrypt_request(key.kind, ciphertext)
                .and_then(|(opcode, payload)| module.remote.perform(&module.config, opcode, key.ski, payload))
                .and_then(|answer| mechanism::plaintext(op.plan, key.kind, &answer));
            match done {
                Ok(plaintext) => op.result = Some(plaintext),
                Err(rv) => {
                    s.decrypting = None;
                    return Err(rv);
                }
            }
        }
        let plaintext = op.result.as_ref().ok_or(CKR_GENERAL_ERROR)?;
        let query = out.is_query();
        match out.put(plaintext) {
            Err(CKR_BUFFER_TOO_SMALL) => Err(CKR_BUFFER_TOO_SMALL),
            Ok(()) if query => Ok(()),
            other => {
                s.decrypting = None;
                other
            }
        }
    })
}

/// C_DigestInit; `None` cancels an active digest.
pub fn digest_init(
    session: CK_SESSION_HANDLE,
    mechanism: Option<(CK_MECHANISM_TYPE, Option<PssParams>, bool)>,
) -> Result<(), CK_RV> {
    module()?.with_session(session, |s| {
        let Some((kind, _, has_params)) = mechanism else {
            s.digesting = None;
            return Ok(());
        };
        if s.digesting.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        if has_params {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        s.digesting = Some(mechanism::digest_context(kind)?);
        Ok(())
    })
}

pub fn digest_update(session: CK_SESSION_HANDLE, part: &[u8]) -> Result<(), CK_RV> {
    module()?.with_session(session, |s| {
        s.digesting.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?.update(part);
        Ok(())
    })
}

/// C_Digest (`data` is `Some`) and C_DigestFinal, with the length rules
/// of C_Sign.
pub fn digest(session: CK_SESSION_HANDLE, data: Option<&[u8]>, out: &OutBuf) -> Result<(), CK_RV> {
    module()?.with_session(session, |s| {
        let context = s.digesting.as_ref().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if out.room(context.algorithm().output_len())? == Room::Query {
            return Ok(());
        }
        let mut context = s.digesting.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if let Some(data) = data {
            context.update(data);
        }
        out.put(context.finish().as_ref())
    })
}
