//! The SIGSYS handler a seccomp trap runs: it writes one line naming the
//! refused system call to stderr and stops the process with SIGSYS.
//!
//! The one place in this crate that needs `unsafe`: installing a signal
//! handler and, inside it, reading the kernel's `siginfo_t` and calling
//! `write(2)`. The handler allocates nothing and takes no lock (it may run
//! while the interrupted thread holds the allocator's), so only
//! async-signal-safe calls are made.

use std::fmt::Write as _;

/// A fixed buffer that `write!` fills without allocating; what does not
/// fit is cut.
struct Line {
    bytes: [u8; 256],
    len: usize,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The line for system call `nr` (its name where this architecture's
/// table has it).
fn describe(nr: i32, first: Option<u64>) -> Line {
    let mut line = Line {
        bytes: [0; 256],
        len: 0,
    };
    let name = usize::try_from(nr)
        .ok()
        .and_then(syscalls::Sysno::new)
        .map_or("unknown", |s| s.name());
    let _ = write!(line, "sandbox: system call {name} ({nr}");
    if let Some(first) = first {
        let _ = write!(line, ", first argument {first:#x}");
    }
    let _ = writeln!(
        line,
        ") is not allowed: the process stops (a missing entry is a bug: \
         report this line; `sandbox: off` runs without the sandbox)"
    );
    line
}

/// Byte offset of `_sigsys._syscall` in `siginfo_t` on 64-bit Linux:
/// `si_signo`, `si_errno`, `si_code` and padding (16 bytes), then the
/// union, whose SIGSYS member starts with the `_call_addr` pointer (8).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const SYSCALL_OFFSET: usize = 24;

/// The call's first argument, where this architecture's saved registers
/// are known here (it tells `prctl`'s or `socket`'s refused variant).
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
fn first_argument(context: *mut libc::c_void) -> Option<u64> {
    // SAFETY: the kernel passes a valid ucontext_t as an SA_SIGINFO
    // handler's third argument; its saved RDI holds a system call's first
    // argument on x86-64.
    let context = unsafe { &*context.cast::<libc::ucontext_t>() };
    Some(context.uc_mcontext.gregs[libc::REG_RDI as usize] as u64)
}

#[cfg(not(all(target_arch = "x86_64", target_env = "gnu")))]
fn first_argument(_context: *mut libc::c_void) -> Option<u64> {
    None
}

extern "C" fn on_sigsys(_signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the handler is installed with SA_SIGINFO for SIGSYS only, so
    // the kernel passes a valid siginfo_t; for a seccomp trap it fills the
    // SIGSYS member of the union, whose `_syscall` int is at
    // SYSCALL_OFFSET (an aligned i32 within the 128-byte struct). A SIGSYS
    // sent by another process carries no such member: the number read is
    // then whatever the union holds, only printed.
    let nr = unsafe { info.cast::<u8>().add(SYSCALL_OFFSET).cast::<i32>().read() };
    let line = describe(nr, first_argument(context));
    // SAFETY: write(2) is async-signal-safe; the pointer and length are
    // those of `line`'s buffer, alive for the call.
    unsafe { libc::write(libc::STDERR_FILENO, line.bytes.as_ptr().cast(), line.len) };
    // SAFETY: both are async-signal-safe. With the default action back,
    // the SIGSYS raised here (blocked while this handler runs) is delivered
    // when it returns, and stops the process without a core (RLIMIT_CORE
    // is 0 unless allow_core_dumps).
    unsafe {
        libc::signal(libc::SIGSYS, libc::SIG_DFL);
        libc::raise(libc::SIGSYS);
    }
}

/// Make `on_sigsys` the process's SIGSYS handler.
pub(super) fn install() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags);
    // the handler field gets a function of the SA_SIGINFO signature, which
    // is 'static and only makes async-signal-safe calls.
    let result = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut())
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_names_the_call() {
        let line = super::describe(libc::SYS_execve as i32, Some(0x10));
        let text = std::str::from_utf8(&line.bytes[..line.len]).unwrap();
        assert!(
            text.starts_with(&format!(
                "sandbox: system call execve ({}, first argument 0x10) is not allowed",
                libc::SYS_execve
            )),
            "{text}"
        );
        assert!(text.ends_with('\n'));
        let line = super::describe(-1, None);
        assert!(std::str::from_utf8(&line.bytes[..line.len])
            .unwrap()
            .contains("unknown (-1) is not"));
    }
}
