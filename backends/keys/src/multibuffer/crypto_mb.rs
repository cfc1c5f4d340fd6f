//! Intel's crypto_mb (IPP Cryptography's multi-buffer library), loaded at
//! run time so the key server starts where it is missing or the CPU lacks
//! AVX-512 IFMA. Only its non-OpenSSL entry points are used: keys go in as
//! limbs, so no BIGNUM crosses between AWS-LC and the library's OpenSSL.

use std::ffi::{c_void, CStr};
use std::os::raw::{c_char, c_int};
use std::path::Path;
use std::ptr;

use libloading::Library;
use zeroize::{Zeroize, Zeroizing};

use super::{EcLane, EdLane, LaneClass, LaneMath, RsaLane, LANES};

/// The names tried when no path is configured: Debian's and Fedora's
/// runtime package, then the development symlink.
const NAMES: [&str; 2] = ["libcrypto_mb.so.11", "libcrypto_mb.so"];

/// `mbcpCPUID_AVX512IFMA` in cpu_features.h.
const CPU_AVX512_IFMA: u64 = 0x1_0000_0000;
/// `MBX_WIDTH_MB8` in cpu_features.h.
const WIDTH_MB8: u64 = 8;

#[repr(C)]
struct MbxVersion {
    major: c_int,
    minor: c_int,
    revision: c_int,
    name: *const c_char,
    build_date: *const c_char,
    str_version: *const c_char,
}

type Status = u32;
type EcdsaSign = unsafe extern "C" fn(
    r: *const *mut u8,
    s: *const *mut u8,
    msg: *const *const u8,
    eph_key: *const *const u64,
    reg_key: *const *const u64,
    buffer: *mut u8,
) -> Status;
type RsaPrivateCrt = unsafe extern "C" fn(
    from: *const *const u8,
    to: *const *mut u8,
    p: *const *const u64,
    q: *const *const u64,
    dp: *const *const u64,
    dq: *const *const u64,
    iq: *const *const u64,
    bits: c_int,
    method: *const c_void,
    buffer: *mut u8,
) -> Status;
type Ed25519Sign = unsafe extern "C" fn(
    r: *const *mut [u8; 32],
    s: *const *mut [u8; 32],
    msg: *const *const u8,
    msg_len: *const u32,
    private: *const *const [u8; 32],
    public: *const *const [u8; 32],
) -> Status;
type RsaPublic = unsafe extern "C" fn(
    from: *const *const u8,
    to: *const *mut u8,
    n: *const *const u64,
    bits: c_int,
    method: *const c_void,
    buffer: *mut u8,
) -> Status;
type RsaMethod = unsafe extern "C" fn(bits: c_int) -> *const c_void;
type RsaBufSize = unsafe extern "C" fn(method: *const c_void) -> c_int;

/// The loaded library, checked applicable on this CPU.
pub struct CryptoMb {
    p256_sign: EcdsaSign,
    p384_sign: EcdsaSign,
    p521_sign: EcdsaSign,
    ed25519_sign: Ed25519Sign,
    rsa_private_crt: RsaPrivateCrt,
    rsa_method: RsaMethod,
    rsa_public: RsaPublic,
    rsa_public_method: RsaMethod,
    rsa_buf_size: RsaBufSize,
    version: String,
    /// Per class ([`LaneClass::index`]): why it is signed alone, if it
    /// failed the self-test at load.
    failed: [Option<String>; LaneClass::ALL.len()],
    /// Why RSA results are checked with AWS-LC, if the library's public
    /// operation failed the self-test at load.
    public_failed: Option<String>,
    // Last: the functions above point into it.
    _library: Library,
}

impl CryptoMb {
    /// Load the library (from `path`, or by its usual names) and check that
    /// it can run here. The error says why not, for the start-up log.
    pub fn load(path: Option<&Path>) -> Result<CryptoMb, String> {
        let library = match path {
            Some(path) => {
                // SAFETY: loading runs the initialisers of crypto_mb and of
                // the OpenSSL 3 libcrypto it links. They touch nothing of
                // ours: AWS-LC's symbols are prefixed (aws_lc_0_47_0_*), so
                // no name clashes with OpenSSL's. The path is the operator's,
                // trusted as the binary is.
                unsafe { Library::new(path) }.map_err(|e| format!("cannot load {}: {e}", path.display()))?
            }
            None => NAMES
                .iter()
                // SAFETY: as above.
                .find_map(|name| unsafe { Library::new(name) }.ok())
                .ok_or_else(|| {
                    format!(
                        "the library is not installed ({} not found; Debian 13 and Ubuntu: libcrypto-mb11, \
                         Fedora: intel-ipp-crypto-mb; elsewhere, point multibuffer_library at it)",
                        NAMES[0]
                    )
                })?,
        };
        // SAFETY: each symbol is looked up with the signature crypto_mb's
        // headers (interface version 11) declare for it; the fn pointers are
        // copied out and the library stays loaded in the returned struct for
        // as long as they are used. mbx_getversion returns a pointer to a
        // static struct whose strings are NUL-terminated (null checked).
        unsafe {
            let version = {
                let f = *symbol::<unsafe extern "C" fn() -> *const MbxVersion>(&library, b"mbx_getversion\0")?;
                let v = f();
                if v.is_null() || (*v).str_version.is_null() {
                    "crypto_mb (unknown version)".to_string()
                } else {
                    CStr::from_ptr((*v).str_version).to_string_lossy().into_owned()
                }
            };
            let features = *symbol::<unsafe extern "C" fn() -> u64>(&library, b"mbx_get_cpu_features\0")?;
            let applicable = *symbol::<unsafe extern "C" fn(u64) -> c_int>(&library, b"mbx_is_crypto_mb_applicable\0")?;
            let algo_info = *symbol::<unsafe extern "C" fn(c_int) -> u64>(&library, b"mbx_get_algo_info\0")?;
            let cpu = features();
            if applicable(0) == 0 {
                let why = if cpu & CPU_AVX512_IFMA == 0 {
                    "this CPU lacks AVX-512 IFMA"
                } else {
                    "the library says it cannot run on this CPU"
                };
                return Err(format!("{why} ({version}, CPU features {cpu:#x})"));
            }
            // MBX_ALGO_RSA_2K, _3K, _4K, MBX_ALGO_EC_NIST_P256, _P384, _P521.
            for (algo, name) in [
                (1, "RSA-2048"),
                (2, "RSA-3072"),
                (3, "RSA-4096"),
                (5, "P-256"),
                (6, "P-384"),
                (7, "P-521"),
            ] {
                if algo_info(algo) & WIDTH_MB8 == 0 {
                    return Err(format!("{version} has no 8-lane {name} on this CPU"));
                }
            }
            let mut lib = CryptoMb {
                p256_sign: *symbol(&library, b"mbx_nistp256_ecdsa_sign_mb8\0")?,
                p384_sign: *symbol(&library, b"mbx_nistp384_ecdsa_sign_mb8\0")?,
                p521_sign: *symbol(&library, b"mbx_nistp521_ecdsa_sign_mb8\0")?,
                ed25519_sign: *symbol(&library, b"mbx_ed25519_sign_mb8\0")?,
                rsa_private_crt: *symbol(&library, b"mbx_rsa_private_crt_mb8\0")?,
                rsa_method: *symbol(&library, b"mbx_RSA_private_crt_Method\0")?,
                rsa_public: *symbol(&library, b"mbx_rsa_public_mb8\0")?,
                rsa_public_method: *symbol(&library, b"mbx_RSA_pub65537_Method\0")?,
                rsa_buf_size: *symbol(&library, b"mbx_RSA_Method_BufSize\0")?,
                version,
                failed: Default::default(),
                public_failed: None,
                _library: library,
            };
            for (class, why) in super::self_test::failures(&lib) {
                lib.failed[class.index()] = Some(why);
            }
            lib.public_failed =
                super::self_test::rsa_public(&|bits, from, n, to| lib.public_65537(bits, from, n, to)).err();
            Ok(lib)
        }
    }
}

/// Run `f` with a 64-byte aligned scratch buffer of at least `size` bytes:
/// one per thread (per core), kept between calls; zeroized after `f` if it
/// held secrets.
fn with_scratch<R>(size: usize, secret: bool, f: impl FnOnce(*mut u8) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Zeroizing<Vec<u8>>> = std::cell::RefCell::new(Zeroizing::new(Vec::new()));
    }
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        if scratch.len() < size + 64 {
            scratch.zeroize();
            **scratch = vec![0u8; size + 64];
        }
        let offset = scratch.as_ptr().align_offset(64);
        let used = offset..offset + size;
        let result = f(scratch[used.clone()].as_mut_ptr());
        if secret {
            scratch[used].zeroize();
        }
        result
    })
}

impl CryptoMb {
    /// `from[i]^65537 mod n[i]` into `to[i]` for 1 to 8 lanes of `bits`
    /// (inputs and outputs big-endian of the modulus' length, moduli in
    /// little-endian limbs); unused lanes repeat lane 0 into spares. Lanes
    /// of the wrong sizes are refused whole (every status bit set).
    /// Also what the self-test runs on moduli it makes up.
    pub(super) fn public_65537(&self, bits: usize, from: &[&[u8]], n: &[&[u64]], to: &mut [&mut [u8]]) -> Status {
        let (len, filled) = (bits / 8, from.len());
        let sized = (1..=LANES).contains(&filled)
            && n.len() == filled
            && to.len() == filled
            && from.iter().all(|x| x.len() == len)
            && n.iter().all(|m| m.len() * 8 == len)
            && to.iter().all(|o| o.len() == len);
        let Ok(c_bits) = c_int::try_from(bits) else {
            return u32::MAX;
        };
        if !sized {
            return u32::MAX;
        }
        let mut spare = vec![vec![0u8; len]; LANES - filled];
        let from_ptrs: [*const u8; LANES] = std::array::from_fn(|i| from[source(i, filled)].as_ptr());
        let n_ptrs: [*const u64; LANES] = std::array::from_fn(|i| n[source(i, filled)].as_ptr());
        let mut to_ptrs = [ptr::null_mut(); LANES];
        for (i, slot) in to_ptrs.iter_mut().enumerate() {
            *slot = if i < filled {
                to[i].as_mut_ptr()
            } else {
                spare[i - filled].as_mut_ptr()
            };
        }
        // SAFETY: every pointer array has 8 entries, each pointing into a
        // live slice checked above to be of the modulus' length (n: its
        // limbs), outputs into distinct slices or `spare`; the method and
        // its scratch (64-byte aligned, of the size the library asks) come
        // from the same library.
        unsafe {
            let method = (self.rsa_public_method)(c_bits);
            if method.is_null() {
                return u32::MAX;
            }
            let size = usize::try_from((self.rsa_buf_size)(method)).unwrap_or(0);
            with_scratch(size, false, |buffer| {
                (self.rsa_public)(
                    from_ptrs.as_ptr(),
                    to_ptrs.as_ptr(),
                    n_ptrs.as_ptr(),
                    c_bits,
                    method,
                    buffer,
                )
            })
        }
    }
}

/// # Safety
/// `T` must be the symbol's true type (a fn pointer type with the C
/// signature the header declares), and whatever is copied out of the
/// returned `Symbol` must not outlive `library`.
unsafe fn symbol<'l, T>(library: &'l Library, name: &[u8]) -> Result<libloading::Symbol<'l, T>, String> {
    library.get(name).map_err(|e| {
        format!(
            "the library has no {}: {e}",
            String::from_utf8_lossy(&name[..name.len() - 1])
        )
    })
}

/// Lane `i`'s index into the call's inputs: unused lanes repeat lane 0
/// (the library then computes a copy nobody reads) rather than pass nulls.
fn source(i: usize, filled: usize) -> usize {
    if i < filled {
        i
    } else {
        0
    }
}

/// Per-lane statuses (4 bits each) to "this lane is good".
fn good(status: Status, filled: usize) -> [bool; LANES] {
    std::array::from_fn(|i| i < filled && (status >> (4 * i)) & 0xf == 0)
}

impl LaneMath for CryptoMb {
    fn describe(&self) -> String {
        let alone: Vec<String> = LaneClass::ALL
            .iter()
            .filter_map(|c| Some(format!("{} ({})", c.name(), self.failed[c.index()].as_ref()?)))
            .collect();
        let mut text = format!("crypto_mb multi-buffer ({})", self.version);
        if !alone.is_empty() {
            text += &format!("; signed alone, failed the self-test on this CPU: {}", alone.join(", "));
        }
        if let Some(why) = &self.public_failed {
            text += &format!("; RSA results checked with AWS-LC ({why})");
        }
        text
    }

    fn runs(&self, class: LaneClass) -> bool {
        self.failed[class.index()].is_none()
    }

    fn rsa_private(&self, class: LaneClass, lanes: &[RsaLane<'_>], out: &mut [Zeroizing<Vec<u8>>]) -> [bool; LANES] {
        let filled = lanes.len().min(LANES);
        if filled == 0 {
            return [false; LANES];
        }
        let bits = lanes[0].key.bits as c_int;
        let len = class.scalar_len();
        let mut spare: Vec<Zeroizing<Vec<u8>>> = (filled..LANES).map(|_| Zeroizing::new(vec![0u8; len])).collect();
        let from: [*const u8; LANES] = std::array::from_fn(|i| lanes[source(i, filled)].input.as_ptr());
        let mut to: [*mut u8; LANES] = [ptr::null_mut(); LANES];
        for (i, slot) in to.iter_mut().enumerate() {
            *slot = if i < filled {
                out[i].as_mut_ptr()
            } else {
                spare[i - filled].as_mut_ptr()
            };
        }
        let limbs = |f: fn(&RsaLane<'_>) -> *const u64| -> [*const u64; LANES] {
            std::array::from_fn(|i| f(&lanes[source(i, filled)]))
        };
        let p = limbs(|l| l.key.p.as_ptr());
        let q = limbs(|l| l.key.q.as_ptr());
        let dp = limbs(|l| l.key.dp.as_ptr());
        let dq = limbs(|l| l.key.dq.as_ptr());
        let iq = limbs(|l| l.key.qinv.as_ptr());
        // SAFETY: every pointer array has 8 entries pointing at live buffers
        // of the sizes the library reads for `bits` (inputs and outputs of
        // the modulus' length, each CRT number of half its limbs); the
        // method and its scratch buffer (64-byte aligned, of the size the
        // library asks) come from the same library.
        let status = unsafe {
            let method = (self.rsa_method)(bits);
            if method.is_null() {
                return [false; LANES];
            }
            let size = usize::try_from((self.rsa_buf_size)(method)).unwrap_or(0);
            // The scratch holds the CRT halves' intermediates: zeroized after.
            with_scratch(size, true, |buffer| {
                (self.rsa_private_crt)(
                    from.as_ptr(),
                    to.as_ptr(),
                    p.as_ptr(),
                    q.as_ptr(),
                    dp.as_ptr(),
                    dq.as_ptr(),
                    iq.as_ptr(),
                    bits,
                    method,
                    buffer,
                )
            })
        };
        spare.clear();
        good(status, filled)
    }

    fn rsa_public(&self, class: LaneClass, lanes: &[RsaLane<'_>], out: &mut [Vec<u8>]) -> [bool; LANES] {
        let filled = lanes.len().min(LANES);
        if filled == 0 || self.public_failed.is_some() {
            return [false; LANES];
        }
        let from: Vec<&[u8]> = lanes[..filled].iter().map(|l| l.input).collect();
        let n: Vec<&[u64]> = lanes[..filled].iter().map(|l| &l.key.n_limbs[..]).collect();
        let mut to: Vec<&mut [u8]> = out[..filled].iter_mut().map(|o| &mut o[..]).collect();
        let status = self.public_65537(class.scalar_len() * 8, &from, &n, &mut to);
        good(status, filled)
    }

    fn ecdsa(&self, class: LaneClass, lanes: &[EcLane<'_>], r: &mut [Vec<u8>], s: &mut [Vec<u8>]) -> [bool; LANES] {
        let filled = lanes.len().min(LANES);
        let sign = match class {
            LaneClass::EcdsaP256 => self.p256_sign,
            LaneClass::EcdsaP384 => self.p384_sign,
            LaneClass::EcdsaP521 => self.p521_sign,
            _ => return [false; LANES],
        };
        if filled == 0 {
            return [false; LANES];
        }
        let len = class.scalar_len();
        let mut spare_r = vec![vec![0u8; len]; LANES - filled];
        let mut spare_s = vec![vec![0u8; len]; LANES - filled];
        let mut r_out: [*mut u8; LANES] = [ptr::null_mut(); LANES];
        let mut s_out: [*mut u8; LANES] = [ptr::null_mut(); LANES];
        for i in 0..LANES {
            (r_out[i], s_out[i]) = if i < filled {
                (r[i].as_mut_ptr(), s[i].as_mut_ptr())
            } else {
                (spare_r[i - filled].as_mut_ptr(), spare_s[i - filled].as_mut_ptr())
            };
        }
        let msg: [*const u8; LANES] = std::array::from_fn(|i| lanes[source(i, filled)].msg.as_ptr());
        let eph: [*const u64; LANES] = std::array::from_fn(|i| lanes[source(i, filled)].nonce.as_ptr());
        let reg: [*const u64; LANES] = std::array::from_fn(|i| lanes[source(i, filled)].key.scalar.as_ptr());
        // SAFETY: 8 entries each, pointing at live buffers of the curve's
        // length (messages and outputs in bytes, keys and nonces in limbs).
        // The ECDSA entry points neither check nor read the scratch buffer
        // (ifma_ecdsa_p256.c, _p384.c, _p521.c: their own setup paths pass
        // 0 for it); Envoy's CryptoMB provider passes null too.
        let status = unsafe {
            sign(
                r_out.as_ptr(),
                s_out.as_ptr(),
                msg.as_ptr(),
                eph.as_ptr(),
                reg.as_ptr(),
                ptr::null_mut(),
            )
        };
        good(status, filled)
    }

    fn ed25519(&self, lanes: &[EdLane<'_>], sig: &mut [[u8; 64]]) -> [bool; LANES] {
        let filled = lanes.len().min(LANES);
        if filled == 0 {
            return [false; LANES];
        }
        // R and S of each lane: the two halves of its 64-byte signature.
        let mut spare = vec![[0u8; 64]; LANES - filled];
        let mut r_out: [*mut [u8; 32]; LANES] = [ptr::null_mut(); LANES];
        let mut s_out: [*mut [u8; 32]; LANES] = [ptr::null_mut(); LANES];
        for (i, (r, s)) in r_out.iter_mut().zip(s_out.iter_mut()).enumerate() {
            let out = if i < filled {
                &mut sig[i]
            } else {
                &mut spare[i - filled]
            };
            let (lo, hi) = out.split_at_mut(32);
            *r = lo.as_mut_ptr().cast();
            *s = hi.as_mut_ptr().cast();
        }
        let msg: [*const u8; LANES] = std::array::from_fn(|i| lanes[source(i, filled)].msg.as_ptr());
        // Lengths fit: the caller sends a longer message alone.
        let msg_len: [u32; LANES] = std::array::from_fn(|i| lanes[source(i, filled)].msg.len() as u32);
        let private: [*const [u8; 32]; LANES] =
            std::array::from_fn(|i| &*lanes[source(i, filled)].key.seed as *const _);
        let public: [*const [u8; 32]; LANES] =
            std::array::from_fn(|i| &lanes[source(i, filled)].key.public as *const _);
        // SAFETY: 8 entries each: outputs point at disjoint 32-byte halves
        // of live 64-byte buffers, messages at live buffers of the given
        // lengths (never null: an empty slice's pointer is dangling but
        // non-null, and the library reads no byte of it), keys at live
        // 32-byte arrays. The library reads and writes nothing else.
        let status = unsafe {
            (self.ed25519_sign)(
                r_out.as_ptr(),
                s_out.as_ptr(),
                msg.as_ptr(),
                msg_len.as_ptr(),
                private.as_ptr(),
                public.as_ptr(),
            )
        };
        good(status, filled)
    }
}
