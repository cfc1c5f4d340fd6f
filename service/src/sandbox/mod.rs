//! The sandbox a key server puts itself in, in two layers the kernel
//! enforces, so a parser bug that gives code execution gets neither the
//! host's files nor its network nor new programs:
//!
//! - [`landlock`]: which files may be read or written and which TCP ports
//!   bound or connected to. Applied before the first thread starts (the
//!   kernel restricts the calling thread and the threads it starts later).
//! - [`seccomp`]: which system calls may be made at all. Applied once keys,
//!   certificates and sockets are ready, to every thread at once; a call
//!   off the list stops the process with a log line naming it ([`sigsys`]).
//!
//! A test hook ([`probe`]) tries what the sandbox must refuse.

pub mod landlock;
pub mod probe;
pub mod seccomp;
mod sigsys;

use std::path::PathBuf;

/// What the process will need once it runs: everything else is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Files and folders (with what is beneath them) it reads: its
    /// configuration, keys, certificates, libraries it loads later.
    pub read: Vec<PathBuf>,
    /// Files it writes, and folders where it makes and removes files (a
    /// pid file's folder, a Unix socket's folder).
    pub write: Vec<PathBuf>,
    /// TCP ports it listens on (0: any port the kernel picks).
    pub bind_tcp: Vec<u16>,
    /// TCP ports it connects to; `None` when that cannot be known (a
    /// PKCS#11 module that reaches a network HSM on its own terms).
    pub connect_tcp: Option<Vec<u16>>,
}

/// Read-only places every process of ours needs after start: libraries
/// loaded later (crypto_mb, a PKCS#11 module's dependencies), the CA roots
/// and resolver files cloud SDKs read, CPU topology and cgroup limits read
/// when a thread pool starts, this process's own /proc entries (profiles
/// read its maps), randomness and the null device. Missing ones are skipped.
pub const SYSTEM_READS: &[&str] = &[
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
    "/sys/fs/cgroup",
    "/dev/urandom",
    "/dev/null",
];

/// What start-up says about each layer, once.
pub fn describe(landlock: &Result<landlock::Applied, String>, seccomp: &Result<seccomp::Applied, String>) -> String {
    let l = match landlock {
        Ok(a) => a.to_string(),
        Err(e) => format!("landlock not applied: {e}"),
    };
    let s = match seccomp {
        Ok(a) => a.to_string(),
        Err(e) => format!("seccomp not applied: {e}"),
    };
    format!("sandbox: {l}; {s}")
}

/// A temporary folder of this user's own (`<temp>/keyless-<uid>`, mode
/// 0700), made the process's `TMPDIR`: the sandbox lets the process write
/// there (CPU profiles keep their samples in temporary files) and not in
/// the shared temporary folder, where other programs' files are. Call
/// before any thread starts (it sets an environment variable).
pub fn private_temp_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = rustix::process::getuid().as_raw();
    let dir = std::env::temp_dir().join(format!("keyless-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    // Not a link, this user's, nobody else's to enter: another user could
    // have made it first in a shared /tmp.
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{}: not a folder of uid {uid} with mode 0700; remove it",
            dir.display()
        ));
    }
    std::env::set_var("TMPDIR", &dir);
    Ok(dir)
}
