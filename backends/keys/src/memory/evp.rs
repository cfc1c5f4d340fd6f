//! Where this crate calls AWS-LC's C API directly (with `multibuffer`, which
//! prepares the lanes of a multi-buffer call from the same keys).
//!
//! aws-lc-rs's safe API signs digests only for matching curve/hash pairs and
//! has no raw RSA operation; gokeyless serves any hash on any ECDSA curve,
//! PKCS#1 with SHA-1/SHA-224/MD5SHA1 and raw RSA decryption. The EVP_PKEY API
//! covers all of them with one code path. Every `unsafe` block below calls an
//! AWS-LC function with pointers this module owns, and frees what it allocates.

use std::os::raw::{c_int, c_long};
use std::ptr::{self, NonNull};

use aws_lc_sys as ffi;
use keyless_protocol::Hash;

use crate::{CryptoError, KeyAlgorithm, Operation};

/// An owned `EVP_PKEY` holding a private key (or, from [`EvpKey::from_spki`], a public one).
///
/// AWS-LC's allocator cleanses memory on free, so the key's bignums are
/// zeroized when this is dropped.
pub(crate) struct EvpKey {
    pkey: NonNull<ffi::EVP_PKEY>,
}

// SAFETY: an EVP_PKEY may be moved between threads: AWS-LC counts its
// references atomically. This type is not Sync and not Clone; its one second
// owner is `share`'s, which only the multi-buffer lane material of an
// `InMemoryKey` holds, inside that same key (`LaneKey` is built crate-private
// and only lent out), so both owners always move together and the object is
// never used from two threads at once.
unsafe impl Send for EvpKey {}

impl Drop for EvpKey {
    fn drop(&mut self) {
        // SAFETY: we own the only reference to `pkey`, allocated by d2i_AutoPrivateKey.
        unsafe { ffi::EVP_PKEY_free(self.pkey.as_ptr()) }
    }
}

/// RAII for an `EVP_PKEY_CTX`.
struct PkeyCtx(NonNull<ffi::EVP_PKEY_CTX>);

impl Drop for PkeyCtx {
    fn drop(&mut self) {
        // SAFETY: allocated by EVP_PKEY_CTX_new and owned here.
        unsafe { ffi::EVP_PKEY_CTX_free(self.0.as_ptr()) }
    }
}

/// RAII for an `EVP_MD_CTX`.
struct MdCtx(NonNull<ffi::EVP_MD_CTX>);

impl Drop for MdCtx {
    fn drop(&mut self) {
        // SAFETY: allocated by EVP_MD_CTX_new and owned here.
        unsafe { ffi::EVP_MD_CTX_free(self.0.as_ptr()) }
    }
}

/// Turn an AWS-LC return code into a result, clearing the thread's error
/// queue on failure so one bad request cannot leave state for the next.
pub(crate) fn check(rc: c_int, what: &'static str) -> Result<(), CryptoError> {
    if rc == 1 {
        Ok(())
    } else {
        // SAFETY: clears this thread's error queue; no pointers involved.
        unsafe { ffi::ERR_clear_error() };
        Err(CryptoError(what))
    }
}

pub(crate) fn md(hash: Hash) -> *const ffi::EVP_MD {
    // SAFETY: these return pointers to static method tables.
    unsafe {
        match hash {
            Hash::Md5Sha1 => ffi::EVP_md5_sha1(),
            Hash::Sha1 => ffi::EVP_sha1(),
            Hash::Sha224 => ffi::EVP_sha224(),
            Hash::Sha256 => ffi::EVP_sha256(),
            Hash::Sha384 => ffi::EVP_sha384(),
            Hash::Sha512 => ffi::EVP_sha512(),
        }
    }
}

impl EvpKey {
    /// Parse a DER private key: PKCS#8, PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey.
    pub(crate) fn from_der(der: &[u8]) -> Result<EvpKey, CryptoError> {
        let len = c_long::try_from(der.len()).map_err(|_| CryptoError("key too large"))?;
        let mut p = der.as_ptr();
        // SAFETY: `p` points to `len` readable bytes; AWS-LC only reads them
        // and returns a new EVP_PKEY (or null) that we then own.
        let pkey = unsafe { ffi::d2i_AutoPrivateKey(ptr::null_mut(), &mut p, len) };
        match NonNull::new(pkey) {
            Some(pkey) => Ok(EvpKey { pkey }),
            None => check(0, "not a private key in PKCS#8, PKCS#1 or SEC1 DER")
                .map(|_| unreachable!("check(0) always fails")),
        }
    }

    /// The key for AWS-LC calls made elsewhere in this crate (the
    /// multi-buffer lanes); valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut ffi::EVP_PKEY {
        self.pkey.as_ptr()
    }

    /// A second owner of the same key (AWS-LC counts references atomically).
    pub(crate) fn share(&self) -> EvpKey {
        // SAFETY: `pkey` is live; the up-ref is balanced by the new owner's
        // EVP_PKEY_free in Drop. See the Send note above for where it may go.
        unsafe { ffi::EVP_PKEY_up_ref(self.pkey.as_ptr()) };
        EvpKey { pkey: self.pkey }
    }

    /// Parse a DER SubjectPublicKeyInfo (for verification and encryption).
    pub(crate) fn from_spki(der: &[u8]) -> Result<EvpKey, CryptoError> {
        let len = c_long::try_from(der.len()).map_err(|_| CryptoError("key too large"))?;
        let mut p = der.as_ptr();
        // SAFETY: as in from_der: AWS-LC reads `len` bytes and returns an owned key or null.
        let pkey = unsafe { ffi::d2i_PUBKEY(ptr::null_mut(), &mut p, len) };
        match NonNull::new(pkey) {
            Some(pkey) => Ok(EvpKey { pkey }),
            None => check(0, "not a SubjectPublicKeyInfo").map(|_| unreachable!("check(0) always fails")),
        }
    }

    pub(crate) fn algorithm(&self) -> Result<KeyAlgorithm, CryptoError> {
        let p = self.pkey.as_ptr();
        // SAFETY: `p` is a valid EVP_PKEY for the lifetime of self; the EC_KEY
        // and EC_GROUP pointers are borrowed from it and not kept.
        unsafe {
            match ffi::EVP_PKEY_id(p) {
                ffi::EVP_PKEY_RSA => Ok(KeyAlgorithm::Rsa {
                    bits: ffi::EVP_PKEY_bits(p) as u32,
                }),
                ffi::EVP_PKEY_ED25519 => Ok(KeyAlgorithm::Ed25519),
                ffi::EVP_PKEY_EC => {
                    let ec = ffi::EVP_PKEY_get0_EC_KEY(p);
                    if ec.is_null() {
                        return Err(CryptoError("EC key without parameters"));
                    }
                    match ffi::EC_GROUP_get_curve_name(ffi::EC_KEY_get0_group(ec)) {
                        ffi::NID_X9_62_prime256v1 => Ok(KeyAlgorithm::EcdsaP256),
                        ffi::NID_secp384r1 => Ok(KeyAlgorithm::EcdsaP384),
                        ffi::NID_secp521r1 => Ok(KeyAlgorithm::EcdsaP521),
                        _ => Err(CryptoError("unsupported elliptic curve")),
                    }
                }
                _ => Err(CryptoError("unsupported key type")),
            }
        }
    }

    /// DER SubjectPublicKeyInfo of the public half.
    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, CryptoError> {
        // SAFETY: a null output pointer asks only for the length.
        let len = unsafe { ffi::i2d_PUBKEY(self.pkey.as_ptr(), ptr::null_mut()) };
        if len <= 0 {
            check(0, "cannot encode public key")?;
        }
        let mut out = vec![0u8; len as usize];
        let mut p = out.as_mut_ptr();
        // SAFETY: `out` has exactly `len` writable bytes, as AWS-LC just told us.
        let written = unsafe { ffi::i2d_PUBKEY(self.pkey.as_ptr(), &mut p) };
        if written != len {
            check(0, "cannot encode public key")?;
        }
        Ok(out)
    }

    /// Maximum output size of any operation with this key.
    fn max_output(&self) -> usize {
        // SAFETY: valid EVP_PKEY.
        unsafe { ffi::EVP_PKEY_size(self.pkey.as_ptr()) as usize }
    }

    fn ctx(&self) -> Result<PkeyCtx, CryptoError> {
        // SAFETY: valid EVP_PKEY; the new context holds its own reference.
        let ctx = unsafe { ffi::EVP_PKEY_CTX_new(self.pkey.as_ptr(), ptr::null_mut()) };
        NonNull::new(ctx)
            .map(PkeyCtx)
            .ok_or(CryptoError("cannot allocate context"))
    }

    /// The single path: `op` on `input` with this key (of `algorithm`),
    /// one request at a time. What a multi-buffer lane falls back to.
    pub(crate) fn perform(&self, algorithm: KeyAlgorithm, op: Operation, input: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if !op.applies_to(algorithm) {
            return Err(CryptoError("operation does not match the key type"));
        }
        if let Some(hash) = op.digest() {
            if input.len() != hash.len() {
                return Err(CryptoError("payload length does not match the digest algorithm"));
            }
        }
        match op {
            Operation::RsaPkcs1(hash) => self.sign_digest(hash, Some(PKCS1), input),
            Operation::RsaPss(hash) => self.sign_digest(hash, Some(PSS), input),
            Operation::Ecdsa(hash) => self.sign_digest(hash, None, input),
            Operation::Ed25519 => self.sign_message(input),
            Operation::RsaRawDecrypt => self.rsa_raw_decrypt(input),
        }
    }

    /// Sign a digest. `padding` is `None` for ECDSA, which takes any digest
    /// length and needs no hash identifier.
    pub(crate) fn sign_digest(
        &self,
        hash: Hash,
        padding: Option<c_int>,
        digest: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let ctx = self.ctx()?;
        let c = ctx.0.as_ptr();
        // SAFETY: `c` is a live context we own; EVP_MD pointers are static.
        unsafe {
            check(ffi::EVP_PKEY_sign_init(c), "sign init failed")?;
            if let Some(padding) = padding {
                Self::set_rsa_params(c, hash, padding)?;
            }
        }
        let mut out = vec![0u8; self.max_output()];
        let mut out_len = out.len();
        // SAFETY: `out` has `out_len` writable bytes and `digest` is readable;
        // AWS-LC writes at most `out_len` bytes and updates it.
        let rc = unsafe { ffi::EVP_PKEY_sign(c, out.as_mut_ptr(), &mut out_len, digest.as_ptr(), digest.len()) };
        check(rc, "signing failed")?;
        out.truncate(out_len);
        Ok(out)
    }

    /// Ed25519: sign the message itself.
    pub(crate) fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        // SAFETY: allocates a new context that MdCtx frees.
        let mctx = NonNull::new(unsafe { ffi::EVP_MD_CTX_new() })
            .map(MdCtx)
            .ok_or(CryptoError("cannot allocate context"))?;
        let mut out = vec![0u8; self.max_output()];
        let mut out_len = out.len();
        // SAFETY: the context and key are live; `out` has `out_len` writable bytes.
        unsafe {
            check(
                ffi::EVP_DigestSignInit(
                    mctx.0.as_ptr(),
                    ptr::null_mut(),
                    ptr::null(),
                    ptr::null_mut(),
                    self.pkey.as_ptr(),
                ),
                "sign init failed",
            )?;
            check(
                ffi::EVP_DigestSign(
                    mctx.0.as_ptr(),
                    out.as_mut_ptr(),
                    &mut out_len,
                    message.as_ptr(),
                    message.len(),
                ),
                "signing failed",
            )?;
        }
        out.truncate(out_len);
        Ok(out)
    }

    /// The raw RSA private operation (no padding).
    pub(crate) fn rsa_raw_decrypt(&self, input: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let ctx = self.ctx()?;
        let c = ctx.0.as_ptr();
        let mut out = vec![0u8; self.max_output()];
        let mut out_len = out.len();
        // SAFETY: live context; `out` has `out_len` writable bytes, `input` is readable.
        unsafe {
            check(ffi::EVP_PKEY_decrypt_init(c), "decrypt init failed")?;
            check(ffi::EVP_PKEY_CTX_set_rsa_padding(c, ffi::RSA_NO_PADDING), "bad padding")?;
            check(
                ffi::EVP_PKEY_decrypt(c, out.as_mut_ptr(), &mut out_len, input.as_ptr(), input.len()),
                "decryption failed",
            )?;
        }
        out.truncate(out_len);
        Ok(out)
    }
}

impl EvpKey {
    /// Configure a sign or verify context for RSA padding and hash.
    ///
    /// # Safety
    /// `c` must be a live context initialised for signing or verifying.
    unsafe fn set_rsa_params(c: *mut ffi::EVP_PKEY_CTX, hash: Hash, padding: c_int) -> Result<(), CryptoError> {
        check(ffi::EVP_PKEY_CTX_set_rsa_padding(c, padding), "bad padding")?;
        check(ffi::EVP_PKEY_CTX_set_signature_md(c, md(hash)), "bad hash")?;
        if padding == ffi::RSA_PKCS1_PSS_PADDING {
            check(
                ffi::EVP_PKEY_CTX_set_rsa_pss_saltlen(c, ffi::RSA_PSS_SALTLEN_DIGEST),
                "bad PSS salt length",
            )?;
        }
        Ok(())
    }

    /// Verify a signature over a digest (`padding` `None` for ECDSA).
    pub(crate) fn verify_digest(
        &self,
        hash: Hash,
        padding: Option<c_int>,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<(), CryptoError> {
        let ctx = self.ctx()?;
        let c = ctx.0.as_ptr();
        // SAFETY: live context; `digest` and `sig` are readable slices.
        unsafe {
            check(ffi::EVP_PKEY_verify_init(c), "verify init failed")?;
            if let Some(padding) = padding {
                Self::set_rsa_params(c, hash, padding)?;
            }
            check(
                ffi::EVP_PKEY_verify(c, sig.as_ptr(), sig.len(), digest.as_ptr(), digest.len()),
                "signature does not verify",
            )
        }
    }

    /// Verify an Ed25519 signature over a message.
    pub(crate) fn verify_message(&self, message: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        // SAFETY: allocates a new context that MdCtx frees.
        let mctx = NonNull::new(unsafe { ffi::EVP_MD_CTX_new() })
            .map(MdCtx)
            .ok_or(CryptoError("cannot allocate context"))?;
        // SAFETY: live context and key; slices are readable.
        unsafe {
            check(
                ffi::EVP_DigestVerifyInit(
                    mctx.0.as_ptr(),
                    ptr::null_mut(),
                    ptr::null(),
                    ptr::null_mut(),
                    self.pkey.as_ptr(),
                ),
                "verify init failed",
            )?;
            check(
                ffi::EVP_DigestVerify(
                    mctx.0.as_ptr(),
                    sig.as_ptr(),
                    sig.len(),
                    message.as_ptr(),
                    message.len(),
                ),
                "signature does not verify",
            )
        }
    }

    /// The raw RSA public operation (`m^e mod n`), no padding.
    pub(crate) fn rsa_raw_encrypt(&self, input: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let ctx = self.ctx()?;
        let c = ctx.0.as_ptr();
        let mut out = vec![0u8; self.max_output()];
        let mut out_len = out.len();
        // SAFETY: live context; `out` has `out_len` writable bytes, `input` is readable.
        unsafe {
            check(ffi::EVP_PKEY_encrypt_init(c), "encrypt init failed")?;
            check(ffi::EVP_PKEY_CTX_set_rsa_padding(c, ffi::RSA_NO_PADDING), "bad padding")?;
            check(
                ffi::EVP_PKEY_encrypt(c, out.as_mut_ptr(), &mut out_len, input.as_ptr(), input.len()),
                "encryption failed",
            )?;
        }
        out.truncate(out_len);
        Ok(out)
    }
}

pub(crate) const PKCS1: c_int = ffi::RSA_PKCS1_PADDING;
pub(crate) const PSS: c_int = ffi::RSA_PKCS1_PSS_PADDING;
