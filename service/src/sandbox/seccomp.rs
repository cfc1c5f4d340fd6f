//! System calls, through rust-vmm's seccompiler (Firecracker's filters):
//! an allow-list of what the engine, its io_uring rings, the TLS stack,
//! the cloud SDKs' tokio threads, PKCS#11 worker threads and crypto_mb
//! call once serving, found by tracing each path and kept by the tests
//! that run each path under the filter. Anything else traps: [`super::sigsys`]
//! names the call on stderr and stops the process (a thread that died
//! alone would leave a core silently missing from the mesh).
//!
//! Some calls are allowed only with some arguments: `tgkill` and `kill`
//! only to this process, `socket` only for IP, Unix and netlink (the resolver's)
//! sockets, `prctl` only to name threads. `clone3`, whose flags a filter
//! cannot read, answers ENOSYS, so the C library starts threads with
//! `clone`; a `clone` that would start a process answers EPERM. Not on the list, among others: `execve`, `ptrace`,
//! `process_vm_*`, `listen`, `mount`, `bpf`, `io_uring_setup`.
//!
//! io_uring's own operations do not pass through seccomp: files and TCP
//! ports are held for them by Landlock ([`super::landlock`]).

use std::collections::BTreeMap;
use std::fmt;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub allowed: usize,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seccomp on every thread: {} system calls allowed, any other stops the process and is named in the log",
            self.allowed
        )
    }
}

/// Allowed whatever the arguments.
const ALWAYS: &[libc::c_long] = &[
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_membarrier,
    // Files and descriptors (which files: Landlock's part).
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_lseek,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_flock,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_unlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_getcwd,
    // Sockets (which ports: Landlock's part; no listen).
    libc::SYS_connect,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_bind,
    libc::SYS_shutdown,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_socketpair,
    // Waiting.
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_restart_syscall,
    // Threads.
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_getcpu,
    // Signals (SIGHUP and SIGTERM handling, CPU profiles' SIGPROF).
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_sigaltstack,
    libc::SYS_setitimer,
    libc::SYS_getitimer,
    // Time and facts about the process.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_capget,
];

/// The same on x86-64's older numbers, which its C library still uses.
#[cfg(target_arch = "x86_64")]
const ALWAYS_X86_64: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_unlink,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_create,
    libc::SYS_getdents,
    libc::SYS_time,
    libc::SYS_arch_prctl,
    libc::SYS_getrlimit,
];
#[cfg(not(target_arch = "x86_64"))]
const ALWAYS_X86_64: &[libc::c_long] = &[];

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).expect("argument index below 6")
}

fn one_of(arg: u8, values: &[u64]) -> Vec<SeccompRule> {
    values
        .iter()
        .map(|v| SeccompRule::new(vec![condition(arg, SeccompCmpOp::Eq, *v)]).expect("one condition"))
        .collect()
}

/// Allowed only with the arguments these rules match.
fn with_arguments() -> Vec<(libc::c_long, Vec<SeccompRule>)> {
    let pid = u64::from(std::process::id());
    let dword = |arg, op, value| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).expect("valid");
    vec![
        // Signals to this process's own threads, or to itself.
        (libc::SYS_tgkill, one_of(0, &[pid])),
        (libc::SYS_kill, one_of(0, &[pid])),
        (
            libc::SYS_socket,
            [libc::AF_INET, libc::AF_INET6, libc::AF_UNIX, libc::AF_NETLINK]
                .iter()
                .map(|f| SeccompRule::new(vec![dword(0, SeccompCmpOp::Eq, *f as u64)]).expect("one condition"))
                .collect(),
        ),
        // Thread and mapping names, and reading whether the process is dumpable.
        (
            libc::SYS_prctl,
            one_of(
                0,
                &[
                    libc::PR_SET_NAME as u64,
                    libc::PR_GET_NAME as u64,
                    libc::PR_GET_DUMPABLE as u64,
                    // mimalloc names its mappings.
                    libc::PR_SET_VMA as u64,
                ],
            ),
        ),
    ]
}

/// The allow-list's filter: allowed calls pass, the rest trap.
fn allow_list() -> Result<(BpfProgram, usize), String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in ALWAYS.iter().chain(ALWAYS_X86_64) {
        rules.insert(*nr, vec![]);
    }
    // These pass this filter and are answered by the others: clone3 with
    // ENOSYS, a clone that makes a process with EPERM.
    rules.insert(libc::SYS_clone3, vec![]);
    rules.insert(libc::SYS_clone, vec![]);
    #[cfg(target_arch = "x86_64")]
    {
        rules.insert(libc::SYS_fork, vec![]);
        rules.insert(libc::SYS_vfork, vec![]);
    }
    for (nr, r) in with_arguments() {
        rules.insert(nr, r);
    }
    let count = rules.len();
    Ok((compile(rules, SeccompAction::Trap, SeccompAction::Allow)?, count))
}

/// Compile `rules` for this architecture: calls they match get `matched`,
/// every other call `otherwise`.
fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    otherwise: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    let arch = std::env::consts::ARCH.try_into().map_err(|e| format!("{e:?}"))?;
    let filter = SeccompFilter::new(rules, otherwise, matched, arch).map_err(|e| e.to_string())?;
    filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())
}

/// `clone3` answers ENOSYS (the C library then uses `clone`, whose flags
/// the allow-list reads); everything else passes to the allow-list.
fn no_clone3() -> Result<BpfProgram, String> {
    let rules = [(libc::SYS_clone3, vec![])].into_iter().collect();
    compile(rules, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32))
}

/// No new process: `clone` without `CLONE_THREAD` (fork, vfork,
/// posix_spawn), `fork` and `vfork` answer EPERM. An error, not a trap: the
/// C library's posix_spawn blocks every signal first, so a trap would stop
/// the process without its line; a caller gets "operation not permitted".
fn no_processes() -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(
        libc::SYS_clone,
        vec![
            SeccompRule::new(vec![condition(0, SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64), 0)])
                .map_err(|e| e.to_string())?,
        ],
    );
    #[cfg(target_arch = "x86_64")]
    {
        rules.insert(libc::SYS_fork, vec![]);
        rules.insert(libc::SYS_vfork, vec![]);
    }
    compile(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32))
}

/// Install the SIGSYS reporter, then the three filters on every thread of the
/// process (TSYNC): threads started later inherit them.
pub fn apply() -> Result<Applied, String> {
    let (list, allowed) = allow_list()?;
    let clone3 = no_clone3()?;
    let processes = no_processes()?;
    super::sigsys::install().map_err(|e| format!("SIGSYS handler: {e}"))?;
    // This order: applying a filter calls prctl(PR_SET_NO_NEW_PRIVS),
    // which the allow-list does not allow.
    seccompiler::apply_filter_all_threads(&clone3).map_err(|e| e.to_string())?;
    seccompiler::apply_filter_all_threads(&processes).map_err(|e| e.to_string())?;
    seccompiler::apply_filter_all_threads(&list).map_err(|e| e.to_string())?;
    Ok(Applied { allowed })
}
