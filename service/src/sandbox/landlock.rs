//! Files and TCP ports, through the Landlock project's crate: a ruleset
//! that handles every file access and TCP bind (and connect, when the plan
//! knows the ports), plus the signal and abstract-socket scopes, with rules
//! for exactly the plan's paths and ports.
//!
//! Landlock restricts the thread that applies it and the threads it starts
//! afterwards (until ABI 8's process-wide flag), so [`apply`] runs on the
//! main thread before any other exists. io_uring's file and socket
//! operations go through the same kernel hooks, so they are held too.

use std::fmt;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, LandlockStatus, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::{Plan, SYSTEM_READS};

/// The newest ABI whose rights this code asks for (TCP ports: 4, scopes:
/// 6). Older kernels enforce what they know (best effort), and start-up
/// says how much.
const ABI_USED: ABI = ABI::V6;

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Fully, partly (an older kernel), or not at all (no Landlock).
    pub status: String,
    pub kernel_abi: Option<i32>,
    pub read: usize,
    pub write: usize,
    pub bind_tcp: Vec<u16>,
    pub connect_tcp: Option<Vec<u16>>,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = |p: &[u16]| {
            if p.is_empty() {
                "none".to_string()
            } else {
                p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            }
        };
        write!(f, "landlock {}", self.status)?;
        if let Some(abi) = self.kernel_abi {
            write!(f, " (kernel ABI {abi})")?;
        }
        write!(
            f,
            ": {} places read-only, {} writable; TCP bind: {}; TCP connect: {}",
            self.read,
            self.write,
            ports(&self.bind_tcp),
            self.connect_tcp.as_deref().map_or(
                "any port (a PKCS#11 module is loaded; list its ports in sandbox_connect_ports)".to_string(),
                ports
            )
        )
    }
}

fn is_dir(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_dir())
}

fn read_rights(dir: bool) -> BitFlags<AccessFs> {
    if dir {
        AccessFs::ReadFile | AccessFs::ReadDir
    } else {
        AccessFs::ReadFile.into()
    }
}

fn write_rights(dir: bool) -> BitFlags<AccessFs> {
    let file = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;
    if dir {
        file | AccessFs::ReadDir | AccessFs::MakeReg | AccessFs::MakeSock | AccessFs::RemoveFile
    } else {
        file
    }
}

/// Every place the process may read: the system's, this binary (profiles
/// read its symbols) and the plan's; only those that exist.
fn reads(plan: &Plan) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = SYSTEM_READS.iter().map(PathBuf::from).collect();
    // /proc/self resolves to /proc/<pid> when opened: this process's
    // entries and its threads', no other process's.
    out.push("/proc/self".into());
    if let Ok(exe) = std::env::current_exe() {
        let mut dwp = exe.clone().into_os_string();
        dwp.push(".dwp");
        out.push(exe);
        out.push(dwp.into());
    }
    out.extend(plan.read.iter().cloned());
    out.retain(|p| p.exists());
    out
}

fn rule(created: RulesetCreated, path: &Path, rights: BitFlags<AccessFs>) -> Result<RulesetCreated, String> {
    let fd = PathFd::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
    created
        .add_rule(PathBeneath::new(fd, rights))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Restrict this thread and every thread it starts later to the plan.
pub fn apply(plan: &Plan) -> Result<Applied, String> {
    let e = |e: landlock::RulesetError| e.to_string();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_USED))
        .map_err(e)?
        .handle_access(AccessNet::BindTcp)
        .map_err(e)?;
    if plan.connect_tcp.is_some() {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp).map_err(e)?;
    }
    let ruleset = ruleset.scope(Scope::from_all(ABI_USED)).map_err(e)?;
    let mut created = ruleset.create().map_err(e)?;
    let reads = reads(plan);
    for p in &reads {
        created = rule(created, p, read_rights(is_dir(p)))?;
    }
    let writes: Vec<&PathBuf> = plan.write.iter().filter(|p| p.exists()).collect();
    for p in &writes {
        created = rule(created, p, write_rights(is_dir(p)))?;
    }
    for port in &plan.bind_tcp {
        created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp)).map_err(e)?;
    }
    for port in plan.connect_tcp.iter().flatten() {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(e)?;
    }
    let status = created.restrict_self().map_err(e)?;
    let kernel_abi = match status.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => Some(kernel_abi.unwrap_or(effective_abi as i32)),
        _ => None,
    };
    Ok(Applied {
        status: match status.ruleset {
            RulesetStatus::FullyEnforced => "enforced",
            RulesetStatus::PartiallyEnforced => "partly enforced (an older kernel)",
            RulesetStatus::NotEnforced => "not enforced (this kernel has no Landlock)",
        }
        .to_string(),
        kernel_abi,
        read: reads.len(),
        write: writes.len(),
        bind_tcp: plan.bind_tcp.clone(),
        connect_tcp: plan.connect_tcp.clone(),
    })
}
