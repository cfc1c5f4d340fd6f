//! Finding objects and reading their attributes.

use cryptoki_sys::*;

use crate::ffi::Template;
use crate::objects::{handle, locate, Object, Value};
use crate::state::{module, Module};

/// The object a handle names.
pub fn object(module: &Module, object: CK_OBJECT_HANDLE) -> Result<&Object, CK_RV> {
    let (key, which) = locate(object).ok_or(CKR_OBJECT_HANDLE_INVALID)?;
    module
        .config
        .keys
        .get(key)
        .map(|k| &k.objects[which])
        .ok_or(CKR_OBJECT_HANDLE_INVALID)
}

/// C_GetAttributeValue: every attribute answered; the result is the
/// standard's code for the last one that could not be (sensitive,
/// unknown, or a buffer too small), CKR_OK if none.
pub fn get_attributes(
    session: CK_SESSION_HANDLE,
    handle: CK_OBJECT_HANDLE,
    template: &mut Template,
) -> Result<(), CK_RV> {
    let module = module()?;
    module.session(session)?;
    let object = object(&module, handle)?;
    let mut result = Ok(());
    for i in 0..template.len() {
        let outcome = match object.get(template.kind(i)) {
            Some(Value::Bytes(v)) => template.answer(i, Some(v)),
            Some(Value::Sensitive) => template.answer(i, None).and(Err(CKR_ATTRIBUTE_SENSITIVE)),
            None => template.answer(i, None).and(Err(CKR_ATTRIBUTE_TYPE_INVALID)),
        };
        if outcome.is_err() {
            result = outcome;
        }
    }
    result
}

pub fn find_init(session: CK_SESSION_HANDLE, template: &Template) -> Result<(), CK_RV> {
    let module = module()?;
    let wanted = template.read()?;
    let found: Vec<CK_OBJECT_HANDLE> = module
        .config
        .keys
        .iter()
        .enumerate()
        .flat_map(|(k, key)| {
            (0..3)
                .filter(|w| key.objects[*w].matches(&wanted))
                .map(move |w| handle(k, w))
        })
        .collect();
    module.with_session(session, |s| {
        if s.found.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        s.found = Some(found);
        Ok(())
    })
}

/// Up to `max` more handles.
pub fn find(session: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
    module()?.with_session(session, |s| {
        let found = s.found.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let n = max.min(found.len());
        Ok(found.drain(..n).collect())
    })
}

pub fn find_final(session: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
    module()?.with_session(session, |s| {
        s.found.take().map(drop).ok_or(CKR_OPERATION_NOT_INITIALIZED)
    })
}
