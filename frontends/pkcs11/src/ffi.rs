//! Every raw pointer the caller hands the module, turned into checked Rust
//! values here and nowhere else, and the guard that keeps a panic from
//! crossing into C.
//!
//! Each constructor is `unsafe`: its contract is what the PKCS#11 standard
//! requires of the caller for that argument (a buffer valid for the length
//! given with it, an output pointer valid for writes). Within that
//! contract, null pointers and impossible lengths are refused with
//! CKR_ARGUMENTS_BAD instead of being read. Values are read and written
//! unaligned and buffers copied as bytes, so no alignment is assumed of the
//! caller's pointers.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cryptoki_sys::*;

/// Run one entry point: its result as a CK_RV, and CKR_GENERAL_ERROR
/// (logged once) if it panicked. The panic stops here.
pub fn guard(f: impl FnOnce() -> Result<(), CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            crate::log::once(
                "panic",
                format_args!("internal error (a panic, stopped at the module's edge): {what}"),
            );
            CKR_GENERAL_ERROR
        }
    }
}

/// Input bytes: `ptr` valid for `len` bytes (null only when `len` is 0).
///
/// # Safety
/// `ptr` must be null or valid for reads of `len` bytes for `'a`.
pub unsafe fn input<'a>(ptr: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8], CK_RV> {
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= isize::MAX as usize)
        .ok_or(CKR_ARGUMENTS_BAD)?;
    if ptr.is_null() {
        return if len == 0 { Ok(&[]) } else { Err(CKR_ARGUMENTS_BAD) };
    }
    // SAFETY: non-null, a byte pointer (no alignment needed), `len` is at
    // most isize::MAX, and the caller guarantees `len` bytes readable and
    // not written elsewhere for the call (the slice lives no longer).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An output buffer of exactly `len` bytes (C_GenerateRandom's).
///
/// # Safety
/// `ptr` must be null or valid for writes of `len` bytes for `'a`.
pub unsafe fn output<'a>(ptr: *mut CK_BYTE, len: CK_ULONG) -> Result<&'a mut [u8], CK_RV> {
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= isize::MAX as usize)
        .ok_or(CKR_ARGUMENTS_BAD)?;
    if ptr.is_null() {
        return if len == 0 { Ok(&mut []) } else { Err(CKR_ARGUMENTS_BAD) };
    }
    // SAFETY: non-null, a byte pointer (no alignment needed), `len` is at
    // most isize::MAX, and the caller guarantees `len` bytes writable and
    // used by nothing else for the call (the slice lives no longer).
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A value the call writes (`*ptr = value`), refused when null.
///
/// # Safety
/// `ptr` must be null or valid for writes of one `T`.
pub unsafe fn write<T>(ptr: *mut T, value: T) -> Result<(), CK_RV> {
    if ptr.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null and writable for one T, as the caller guarantees;
    // written unaligned, so no alignment is assumed.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// An output buffer with its length in and out (`pSignature`,
/// `pulSignatureLen`), with the standard's length-query rules.
pub struct OutBuf {
    ptr: *mut CK_BYTE,
    len: *mut CK_ULONG,
}

/// What an [`OutBuf`] has room for.
#[derive(Debug, PartialEq, Eq)]
pub enum Room {
    /// A null buffer: the caller asks only for the length (now written).
    Query,
    /// Room for the whole output.
    Fits,
}

impl OutBuf {
    /// # Safety
    /// `len` must be null or valid for reads and writes of one CK_ULONG;
    /// `ptr` must be null or valid for writes of `*len` bytes.
    pub unsafe fn new(ptr: *mut CK_BYTE, len: *mut CK_ULONG) -> Result<OutBuf, CK_RV> {
        if len.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        Ok(OutBuf { ptr, len })
    }

    /// A null buffer: the call only asks how long the output is.
    pub fn is_query(&self) -> bool {
        self.ptr.is_null()
    }

    fn capacity(&self) -> usize {
        // SAFETY: `len` is non-null and readable (new's contract).
        usize::try_from(unsafe { self.len.read_unaligned() }).unwrap_or(usize::MAX)
    }

    fn set_len(&self, n: usize) {
        // SAFETY: `len` is non-null and writable (new's contract).
        unsafe { self.len.write_unaligned(n as CK_ULONG) };
    }

    /// Whether `needed` bytes fit: a null buffer is a length query (the
    /// length is written, CKR_OK); a short one is CKR_BUFFER_TOO_SMALL
    /// with the length written.
    pub fn room(&self, needed: usize) -> Result<Room, CK_RV> {
        if self.ptr.is_null() {
            self.set_len(needed);
            Ok(Room::Query)
        } else if self.capacity() < needed {
            self.set_len(needed);
            Err(CKR_BUFFER_TOO_SMALL)
        } else {
            Ok(Room::Fits)
        }
    }

    /// Write `data` (after [`room`](Self::room) said it fits).
    pub fn put(&self, data: &[u8]) -> Result<(), CK_RV> {
        if self.room(data.len())? == Room::Query {
            return Ok(());
        }
        // SAFETY: `ptr` is non-null and writable for `capacity()` bytes
        // (new's contract), and room() checked data.len() <= capacity().
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, data.len()) };
        self.set_len(data.len());
        Ok(())
    }
}

/// A handle array the call fills (`phObject` with `ulMaxObjectCount`,
/// `pSlotList` with `pulCount`, `pMechanismList`).
///
/// # Safety
/// `ptr` must be null or valid for writes of `max` CK_ULONG values.
pub unsafe fn fill_ulongs(ptr: *mut CK_ULONG, max: usize, values: &[CK_ULONG]) -> Result<usize, CK_RV> {
    let n = values.len().min(max);
    if n == 0 {
        return Ok(0);
    }
    if ptr.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null and writable for `max` >= n values (the contract);
    // copied as bytes, so no alignment is assumed of `ptr`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            values.as_ptr() as *const u8,
            ptr as *mut u8,
            n * std::mem::size_of::<CK_ULONG>(),
        )
    };
    Ok(n)
}

/// A template (`pTemplate`, `ulCount`): read its types and values, and
/// write values into it for C_GetAttributeValue.
pub struct Template {
    ptr: *mut CK_ATTRIBUTE,
    count: usize,
}

impl Template {
    /// # Safety
    /// `ptr` must be null or valid for reads and writes of `count`
    /// CK_ATTRIBUTEs, each `pValue` null or valid for `ulValueLen` bytes.
    pub unsafe fn new(ptr: *mut CK_ATTRIBUTE, count: CK_ULONG) -> Result<Template, CK_RV> {
        let count = usize::try_from(count).map_err(|_| CKR_ARGUMENTS_BAD)?;
        if ptr.is_null() && count > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        Ok(Template { ptr, count })
    }

    fn get(&self, i: usize) -> CK_ATTRIBUTE {
        assert!(i < self.count);
        // SAFETY: i < count, and `ptr` is valid for reads of `count`
        // attributes (new's contract); read unaligned, as a copy.
        unsafe { self.ptr.add(i).read_unaligned() }
    }

    fn set_len(&mut self, i: usize, len: CK_ULONG) {
        assert!(i < self.count);
        // SAFETY: i < count, and `ptr` is valid for writes of `count`
        // attributes (new's contract); the field is written unaligned
        // through a raw pointer, no reference is made.
        unsafe { std::ptr::addr_of_mut!((*self.ptr.add(i)).ulValueLen).write_unaligned(len) };
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Every attribute's type and value, for matching (C_FindObjectsInit).
    pub fn read(&self) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>, CK_RV> {
        (0..self.count)
            .map(|i| {
                let a = self.get(i);
                // SAFETY: pValue is null or valid for ulValueLen bytes (new's contract).
                let value = unsafe { input(a.pValue as *const CK_BYTE, a.ulValueLen)? };
                Ok((a.type_, value.to_vec()))
            })
            .collect()
    }

    pub fn kind(&self, i: usize) -> CK_ATTRIBUTE_TYPE {
        self.get(i).type_
    }

    /// C_GetAttributeValue's rules for one attribute: `None` (unknown or
    /// sensitive) sets the length to CK_UNAVAILABLE_INFORMATION; a null
    /// pValue gets the length; a short buffer gets
    /// CK_UNAVAILABLE_INFORMATION and CKR_BUFFER_TOO_SMALL.
    pub fn answer(&mut self, i: usize, value: Option<&[u8]>) -> Result<(), CK_RV> {
        let a = self.get(i);
        let Some(value) = value else {
            self.set_len(i, crate::objects::UNAVAILABLE);
            return Ok(());
        };
        if a.pValue.is_null() {
            self.set_len(i, value.len() as CK_ULONG);
            return Ok(());
        }
        if (a.ulValueLen as usize) < value.len() {
            self.set_len(i, crate::objects::UNAVAILABLE);
            return Err(CKR_BUFFER_TOO_SMALL);
        }
        // SAFETY: pValue is non-null and writable for ulValueLen >= value.len() bytes (new's contract).
        unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), a.pValue as *mut u8, value.len()) };
        self.set_len(i, value.len() as CK_ULONG);
        Ok(())
    }
}

/// The caller's mechanism: its type and, for PSS, its parameters.
///
/// # Safety
/// `ptr` must be null or point to a valid CK_MECHANISM whose pParameter is
/// null or valid for ulParameterLen bytes.
pub unsafe fn mechanism(
    ptr: *const CK_MECHANISM,
) -> Result<(CK_MECHANISM_TYPE, Option<crate::mechanism::PssParams>, bool), CK_RV> {
    if ptr.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null and valid for reads (the contract).
    let m = unsafe { ptr.read_unaligned() };
    let has_params = !m.pParameter.is_null() && m.ulParameterLen > 0;
    let pss = if has_params && m.ulParameterLen as usize == std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() {
        // SAFETY: pParameter is valid for ulParameterLen bytes, which is
        // exactly one CK_RSA_PKCS_PSS_PARAMS; read_unaligned asks no alignment.
        let p = unsafe { (m.pParameter as *const CK_RSA_PKCS_PSS_PARAMS).read_unaligned() };
        Some(crate::mechanism::PssParams {
            hash_alg: p.hashAlg,
            mgf: p.mgf,
            salt_len: p.sLen,
        })
    } else {
        None
    };
    Ok((m.mechanism, pss, has_params))
}

/// C_Initialize's arguments: whether the caller requires locking we
/// cannot give, and pReserved read as a configuration path (kmsp11's
/// convention).
///
/// # Safety
/// `ptr` must be null or point to a valid CK_C_INITIALIZE_ARGS whose
/// pReserved is null or a NUL-terminated string.
pub unsafe fn init_args(ptr: *const CK_C_INITIALIZE_ARGS) -> Result<Option<String>, CK_RV> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null and valid for reads (the contract).
    let args = unsafe { ptr.read_unaligned() };
    let supplied = [
        args.CreateMutex.is_some(),
        args.DestroyMutex.is_some(),
        args.LockMutex.is_some(),
        args.UnlockMutex.is_some(),
    ];
    if supplied.iter().any(|s| *s) && !supplied.iter().all(|s| *s) {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // Locking functions without CKF_OS_LOCKING_OK: the caller requires
    // its own locks, and this module locks with the operating system's.
    if supplied[0] && args.flags & CKF_OS_LOCKING_OK == 0 {
        return Err(CKR_CANT_LOCK);
    }
    if args.pReserved.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-null pReserved is a NUL-terminated string (the contract).
    let path = unsafe { std::ffi::CStr::from_ptr(args.pReserved as *const std::ffi::c_char) };
    Ok(Some(path.to_str().map_err(|_| CKR_ARGUMENTS_BAD)?.to_string()))
}

/// `text` in a blank-padded, unterminated PKCS#11 string field.
pub fn padded<const N: usize>(text: &str) -> [CK_UTF8CHAR; N] {
    let mut field = [b' '; N];
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    field[..end].copy_from_slice(&text.as_bytes()[..end]);
    field
}
