//! What the module's tests share: a development PKI with one key of each
//! kind, a real key server holding those keys on loopback, the module's
//! configuration, a raw PKCS#11 caller (the function list, as C programs
//! use it, for our module and SoftHSM2's alike), and `openssl` to verify.

#![allow(dead_code)] // each test binary uses some of these

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use cryptoki_sys::*;
use keyless_engine::runtime::RuntimeConfig;
use keyless_pki::{DevPki, KeyType};

pub const KEYS: &[(&str, KeyType)] = &[
    ("p256", KeyType::EcdsaP256),
    ("p384", KeyType::EcdsaP384),
    ("p521", KeyType::EcdsaP521),
    ("rsa2048", KeyType::Rsa2048),
    ("ed25519", KeyType::Ed25519),
];

pub struct Fixture {
    pub pki: DevPki,
    pub dir: tempfile::TempDir,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(&dir.path().join("pki"), KEYS, 0).unwrap();
        Fixture { pki, dir }
    })
}

/// A key server with the fixture's keys on `addr` (port 0: any).
pub fn key_server(addr: SocketAddr) -> keyless_server::RunningServer {
    let pki = &fixture().pki;
    let tls = keyless_server::tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca_cert).unwrap();
    let keys = keyless_keys::load_sources(&[keyless_keys::KeySource::Dir(pki.keys_dir.clone())]).unwrap();
    keyless_server::start_with(
        &addr.into(),
        tls,
        keys,
        RuntimeConfig {
            cores: 1,
            ..RuntimeConfig::default()
        },
        keyless_server::connection::Limits {
            drain_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Stop a key server: its links close and its port stops listening.
pub fn stop(server: keyless_server::RunningServer) {
    server.shared.start_drain();
    server.wait().unwrap();
}

/// The module's configuration for key servers at `servers`, written to a
/// new file (mode 0600) in the fixture's directory; `extra` is appended.
pub fn module_config(name: &str, servers: &[SocketAddr], extra: &str) -> PathBuf {
    let all: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    module_config_with(name, servers, &all, extra)
}

/// [`module_config`] with only the fixture keys named in `keys`.
pub fn module_config_with(name: &str, servers: &[SocketAddr], keys: &[&str], extra: &str) -> PathBuf {
    let pki = &fixture().pki;
    let servers: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    let mut yaml = format!(
        "key_servers: [{}]\nkey_server_name: localhost\nkey_server_ca: {}\nclient_cert: {}\nclient_key: {}\n\
         request_timeout: 2s\nconnect_timeout: 2s\nhealth_interval: 200ms\nkeys:\n",
        servers.join(", "),
        pki.ca_cert.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    );
    for key in keys {
        yaml.push_str(&format!(
            "  - certificate: {}\n    label: {key}\n",
            pki.sites_dir.join(format!("{key}.pem")).display()
        ));
    }
    yaml.push_str(extra);
    let path = fixture().dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `libkeyless_pkcs11.so`, as this source builds it. Cargo does not
/// build a cdylib for integration tests, so the first call builds it
/// (into the same target directory and profile as this test binary).
pub fn module_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--lib", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building the module: {status}");
        let path = profile_dir.join("libkeyless_pkcs11.so");
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
    .clone()
}

/// A PKCS#11 module as a C program holds it: the library and its function list.
pub struct Module {
    _lib: libloading::Library,
    f: &'static CK_FUNCTION_LIST,
}

/// One raw call's code and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub rv: CK_RV,
    pub len: CK_ULONG,
    pub bytes: Vec<u8>,
}

impl Module {
    pub fn load(path: &Path) -> Module {
        // SAFETY: loading a PKCS#11 module runs no initializer that needs
        // anything from us; both modules tested are built for this.
        let lib = unsafe { libloading::Library::new(path) }.unwrap();
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList has this type in every PKCS#11 module,
        // and writes one pointer to the module's static list.
        let rv = unsafe {
            let get: libloading::Symbol<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
                lib.get(b"C_GetFunctionList").unwrap();
            get(&mut list)
        };
        assert_eq!(rv, CKR_OK);
        // SAFETY: the list is static in the module, which lives as long as
        // `lib`; the 'static reference never outlives Module.
        let f = unsafe { &*list };
        Module { _lib: lib, f }
    }

    /// C_Initialize with CKF_OS_LOCKING_OK and, if given, the
    /// configuration's path in pReserved.
    pub fn initialize(&self, config: Option<&Path>) -> CK_RV {
        let path = config.map(|p| std::ffi::CString::new(p.to_str().unwrap()).unwrap());
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: path
                .as_ref()
                .map_or(std::ptr::null_mut(), |p| p.as_ptr() as *mut std::ffi::c_void),
        };
        // SAFETY: a valid CK_C_INITIALIZE_ARGS for the call.
        unsafe { self.f.C_Initialize.unwrap()(&mut args as *mut _ as *mut std::ffi::c_void) }
    }

    pub fn initialize_null(&self) -> CK_RV {
        // SAFETY: NULL init arguments are allowed.
        unsafe { self.f.C_Initialize.unwrap()(std::ptr::null_mut()) }
    }

    pub fn first_slot(&self) -> CK_SLOT_ID {
        let mut slots = [0 as CK_SLOT_ID; 8];
        let mut count = slots.len() as CK_ULONG;
        // SAFETY: `slots` holds `count` entries.
        let rv = unsafe { self.f.C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), &mut count) };
        assert_eq!(rv, CKR_OK);
        assert!(count >= 1);
        slots[0]
    }

    pub fn open(&self, slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
        let mut session = 0;
        // SAFETY: no callback; `session` is writable.
        let rv = unsafe {
            self.f.C_OpenSession.unwrap()(
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                std::ptr::null_mut(),
                None,
                &mut session,
            )
        };
        assert_eq!(rv, CKR_OK);
        session
    }

    pub fn login(&self, session: CK_SESSION_HANDLE, pin: &str) -> CK_RV {
        let mut pin = pin.as_bytes().to_vec();
        // SAFETY: `pin` holds its length in bytes.
        unsafe { self.f.C_Login.unwrap()(session, CKU_USER, pin.as_mut_ptr(), pin.len() as CK_ULONG) }
    }

    /// Handles of the objects matching class and label.
    pub fn find(&self, session: CK_SESSION_HANDLE, class: CK_OBJECT_CLASS, label: &str) -> Vec<CK_OBJECT_HANDLE> {
        let mut class = class;
        let mut label = label.as_bytes().to_vec();
        let mut template = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: &mut class as *mut _ as *mut std::ffi::c_void,
                ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: label.as_mut_ptr() as *mut std::ffi::c_void,
                ulValueLen: label.len() as CK_ULONG,
            },
        ];
        let mut found = [0 as CK_OBJECT_HANDLE; 16];
        let mut n = 0;
        // SAFETY: the template's values live through the calls; `found` holds 16 handles.
        unsafe {
            assert_eq!(
                self.f.C_FindObjectsInit.unwrap()(session, template.as_mut_ptr(), 2),
                CKR_OK
            );
            assert_eq!(
                self.f.C_FindObjects.unwrap()(session, found.as_mut_ptr(), 16, &mut n),
                CKR_OK
            );
            assert_eq!(self.f.C_FindObjectsFinal.unwrap()(session), CKR_OK);
        }
        found[..n as usize].to_vec()
    }

    /// One attribute's value (None: the module's code for why not).
    pub fn attribute(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, CK_RV> {
        let mut a = CK_ATTRIBUTE {
            type_: kind,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        };
        // SAFETY: a null pValue asks for the length.
        let rv = unsafe { self.f.C_GetAttributeValue.unwrap()(session, object, &mut a, 1) };
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut value = vec![0u8; a.ulValueLen as usize];
        a.pValue = value.as_mut_ptr() as *mut std::ffi::c_void;
        // SAFETY: pValue holds ulValueLen bytes.
        let rv = unsafe { self.f.C_GetAttributeValue.unwrap()(session, object, &mut a, 1) };
        if rv != CKR_OK {
            return Err(rv);
        }
        value.truncate(a.ulValueLen as usize);
        Ok(value)
    }

    /// C_SignInit with `mechanism` (and PSS parameters, if any).
    pub fn sign_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        pss: Option<CK_RSA_PKCS_PSS_PARAMS>,
        key: CK_OBJECT_HANDLE,
    ) -> CK_RV {
        let mut params = pss;
        let mut m = CK_MECHANISM {
            mechanism,
            pParameter: params
                .as_mut()
                .map_or(std::ptr::null_mut(), |p| p as *mut _ as *mut std::ffi::c_void),
            ulParameterLen: if params.is_some() {
                std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG
            } else {
                0
            },
        };
        // SAFETY: the mechanism and its parameters live through the call.
        unsafe { self.f.C_SignInit.unwrap()(session, &mut m, key) }
    }

    /// C_Sign with an output buffer of `room` bytes (None: a null buffer,
    /// a length query).
    pub fn sign(&self, session: CK_SESSION_HANDLE, data: &[u8], room: Option<usize>) -> Out {
        let mut data = data.to_vec();
        let mut out = vec![0u8; room.unwrap_or(0)];
        let mut len = out.len() as CK_ULONG;
        let out_ptr = if room.is_some() {
            out.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: `data` holds its length; `out` holds `len` bytes.
        let rv =
            unsafe { self.f.C_Sign.unwrap()(session, data.as_mut_ptr(), data.len() as CK_ULONG, out_ptr, &mut len) };
        out.truncate((len as usize).min(out.len()));
        Out { rv, len, bytes: out }
    }

    pub fn sign_update(&self, session: CK_SESSION_HANDLE, part: &[u8]) -> CK_RV {
        let mut part = part.to_vec();
        // SAFETY: `part` holds its length.
        unsafe { self.f.C_SignUpdate.unwrap()(session, part.as_mut_ptr(), part.len() as CK_ULONG) }
    }

    pub fn sign_final(&self, session: CK_SESSION_HANDLE, room: usize) -> Out {
        let mut out = vec![0u8; room];
        let mut len = room as CK_ULONG;
        // SAFETY: `out` holds `len` bytes.
        let rv = unsafe { self.f.C_SignFinal.unwrap()(session, out.as_mut_ptr(), &mut len) };
        out.truncate((len as usize).min(room));
        Out { rv, len, bytes: out }
    }

    pub fn decrypt_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
    ) -> CK_RV {
        let mut m = CK_MECHANISM {
            mechanism,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: the mechanism lives through the call.
        unsafe { self.f.C_DecryptInit.unwrap()(session, &mut m, key) }
    }

    pub fn decrypt(&self, session: CK_SESSION_HANDLE, ciphertext: &[u8], room: Option<usize>) -> Out {
        let mut input = ciphertext.to_vec();
        let mut out = vec![0u8; room.unwrap_or(0)];
        let mut len = out.len() as CK_ULONG;
        let out_ptr = if room.is_some() {
            out.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: `input` holds its length; `out` holds `len` bytes.
        let rv = unsafe {
            self.f.C_Decrypt.unwrap()(session, input.as_mut_ptr(), input.len() as CK_ULONG, out_ptr, &mut len)
        };
        out.truncate((len as usize).min(out.len()));
        Out { rv, len, bytes: out }
    }

    /// Sign in one call with a buffer big enough: the signature, or the code.
    pub fn sign_once(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        pss: Option<CK_RSA_PKCS_PSS_PARAMS>,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Result<Vec<u8>, CK_RV> {
        let rv = self.sign_init(session, mechanism, pss, key);
        if rv != CKR_OK {
            return Err(rv);
        }
        let out = self.sign(session, data, Some(1024));
        if out.rv == CKR_OK {
            Ok(out.bytes)
        } else {
            Err(out.rv)
        }
    }

    /// The function list itself, for calls the helpers above do not make.
    pub fn functions(&self) -> &'static CK_FUNCTION_LIST {
        self.f
    }

    pub fn finalize(&self) -> CK_RV {
        // SAFETY: pReserved must be null.
        unsafe { self.f.C_Finalize.unwrap()(std::ptr::null_mut()) }
    }
}

/// Our module, loaded and initialized once per test binary with the
/// configuration at `config` (in pReserved, as kmsp11 takes it).
pub fn ours(config: &Path) -> &'static Module {
    static M: OnceLock<Module> = OnceLock::new();
    M.get_or_init(|| {
        let m = Module::load(&module_path());
        assert_eq!(m.initialize(Some(config)), CKR_OK);
        m
    })
}

/// A child process killed when the test lets go of it, panicking or not.
pub struct Spawned(pub std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Run `program` with `args`; its stdout, or a panic with its stderr.
pub fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Vec<u8> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Check `signature` over `input` with the `openssl` binary and the key's
/// public key: `input` is the digest (`digest` names its hash) or, for
/// Ed25519, the message. `pss`: RSASSA-PSS with a salt as long as the hash.
pub fn openssl_verify(key: &str, input: &[u8], signature: &[u8], digest: Option<&str>, pss: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (data, sig) = (dir.path().join("data"), dir.path().join("sig"));
    std::fs::write(&data, input).unwrap();
    let der = if key.starts_with('p') {
        keyless_keys::spki::ecdsa_der(signature).unwrap()
    } else {
        signature.to_vec()
    };
    std::fs::write(&sig, der).unwrap();
    let public = fixture().pki.pubkeys_dir.join(format!("{key}.pem"));
    let mut args: Vec<String> = ["pkeyutl", "-verify", "-pubin", "-inkey"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(public.display().to_string());
    args.extend([
        "-in".into(),
        data.display().to_string(),
        "-sigfile".into(),
        sig.display().to_string(),
    ]);
    if key == "ed25519" {
        args.push("-rawin".into());
    }
    if let Some(d) = digest {
        args.extend(["-pkeyopt".into(), format!("digest:{d}")]);
    }
    if pss {
        args.extend(
            ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:digest"]
                .iter()
                .map(|s| s.to_string()),
        );
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("openssl", &args, &[]);
    assert!(
        String::from_utf8_lossy(&out).contains("Signature Verified Successfully"),
        "{key}: {}",
        String::from_utf8_lossy(&out)
    );
}

/// The public RSA operation on `signature` with the `openssl` binary (no
/// padding removed): what the key's private operation was applied to.
pub fn openssl_recover(key: &str, signature: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let sig = dir.path().join("sig");
    std::fs::write(&sig, signature).unwrap();
    let public = fixture().pki.pubkeys_dir.join(format!("{key}.pem"));
    run(
        "openssl",
        &[
            "pkeyutl",
            "-verifyrecover",
            "-pubin",
            "-inkey",
            public.to_str().unwrap(),
            "-in",
            sig.to_str().unwrap(),
            "-pkeyopt",
            "rsa_padding_mode:none",
        ],
        &[],
    )
}

/// The private key labelled `label` (exactly one).
pub fn private_key(m: &Module, session: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
    let found = m.find(session, CKO_PRIVATE_KEY, label);
    assert_eq!(found.len(), 1, "one private key labelled {label}");
    found[0]
}

/// CK_RSA_PKCS_PSS_PARAMS for a C_SignInit.
pub fn pss(hash: CK_MECHANISM_TYPE, mgf: CK_RSA_PKCS_MGF_TYPE, len: CK_ULONG) -> Option<CK_RSA_PKCS_PSS_PARAMS> {
    Some(CK_RSA_PKCS_PSS_PARAMS {
        hashAlg: hash,
        mgf,
        sLen: len,
    })
}

/// A free loopback port (bound, then let go, for a server that takes a port number).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An OpenSSL configuration that loads libp11's engine with our module.
pub fn engine_conf(dir: &Path) -> PathBuf {
    let path = dir.join("openssl-engine.cnf");
    std::fs::write(
        &path,
        format!(
            "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n\
             [engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n\
             dynamic_path = /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so\nMODULE_PATH = {}\ninit = 0\n",
            module_path().display()
        ),
    )
    .unwrap();
    path
}

/// `openssl s_client` to `port`: its output (it must verify the chain).
pub fn s_client(port: u16, args: &[&str]) -> String {
    let ca = fixture().pki.ca_cert.clone();
    let connect = format!("127.0.0.1:{port}");
    let mut all = vec![
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        ca.to_str().unwrap(),
        "-verify_return_error",
    ];
    all.extend_from_slice(args);
    let out = Command::new("openssl")
        .args(&all)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "s_client {args:?}:\n{text}");
    text
}
