//! Keys stay in the key server's memory: no core file on a crash, no ptrace
//! by the same user, no swap. Against the real binary, with the limits a
//! crash would meet set by `prlimit` and capabilities dropped by `setpriv`
//! (util-linux).

mod running;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use running::Running;

/// `/proc/<pid>/<file>`'s `name:` in kB (`status`, `smaps_rollup`).
fn kb(pid: u32, file: &str, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// Kill with SIGABRT, as a crash would, and wait for the process: whether
/// the kernel says it dumped core.
fn abort(server: &mut Running) -> bool {
    server.signal("-ABRT");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert_eq!(status.signal(), Some(6), "{status:?}");
            return status.core_dumped();
        }
        assert!(Instant::now() < deadline, "the server did not die of SIGABRT");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn core_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("core"))
        .collect()
}

/// Where this machine's kernel writes cores: the process's folder, as
/// Debian's default `core` pattern says (a pipe to a collector would take
/// them elsewhere, and the test could not see them).
fn cores_go_to_the_folder() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/core_pattern").is_ok_and(|p| !p.starts_with('|'))
}

#[test]
fn a_crash_writes_no_core_file_unless_allowed() {
    assert!(
        cores_go_to_the_folder(),
        "kernel.core_pattern pipes cores elsewhere; this test needs the default `core`"
    );
    // Cores allowed by the limit the server starts with, as after
    // `ulimit -c unlimited`: the server itself must say no.
    let mut server = Running::start_wrapped(&["prlimit", "--core=unlimited", "--"], &["--workers", "1"]);
    let pid = server.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().collect::<Vec<_>>()[4..6], ["0", "0"], "{core}");
    let folder = server.pid_file.parent().unwrap().to_owned();
    assert!(!abort(&mut server), "the kernel dumped core");
    assert_eq!(core_files(&folder), Vec::<std::path::PathBuf>::new());

    // allow_core_dumps: the same crash leaves a core, which this test sees:
    // it can fail.
    let mut server = Running::start_wrapped(
        &["prlimit", "--core=unlimited", "--"],
        &["--workers", "1", "--allow-core-dumps"],
    );
    let folder = server.pid_file.parent().unwrap().to_owned();
    assert!(
        server
            .log()
            .contains("allow_core_dumps: true: a crash can write the private keys into a core file"),
        "{}",
        server.log()
    );
    assert!(abort(&mut server), "no core dumped with allow_core_dumps");
    let cores = core_files(&folder);
    assert_eq!(cores.len(), 1, "{cores:?}");
    std::fs::remove_file(&cores[0]).unwrap();
}

#[test]
fn memory_is_locked_unless_disabled_or_not_allowed() {
    // Root holds CAP_IPC_LOCK: locked whatever the limit.
    let server = Running::start(&["--workers", "1"]);
    let pid = server.child.id();
    assert!(server.log().contains("memory locked (mlockall)"), "{}", server.log());
    // MCL_ONFAULT: every mapping is locked (VmLck counts them whole,
    // reserved stacks and arenas too), each page as it is touched: what is
    // resident is locked. smaps counts Locked as its share of each page
    // (Pss: a page of the binary shared with another process counts half),
    // so it is compared with Pss.
    let (mappings, rss) = (kb(pid, "status", "VmLck:"), kb(pid, "status", "VmRSS:"));
    let (locked, pss) = (kb(pid, "smaps_rollup", "Locked:"), kb(pid, "smaps_rollup", "Pss:"));
    eprintln!("VmLck {mappings} kB, VmRSS {rss} kB, Pss {pss} kB of which locked {locked} kB");
    assert!(mappings >= rss, "VmLck {mappings} kB, VmRSS {rss} kB");
    assert!(locked * 10 >= pss * 9, "{locked} kB locked of {pss} kB (Pss)");

    let server = Running::start(&["--workers", "1", "--disable-mlock"]);
    assert_eq!(kb(server.child.id(), "status", "VmLck:"), 0);
    assert!(
        server
            .log()
            .contains("disable_mlock: true: memory may be swapped to disk"),
        "{}",
        server.log()
    );

    // Without CAP_IPC_LOCK and with a finite limit, locking everything
    // could make later mappings fail: not tried, and said.
    let server = Running::start_wrapped(
        &[
            "setpriv",
            "--inh-caps=-ipc_lock",
            "--bounding-set=-ipc_lock",
            "--",
            "prlimit",
            "--memlock=8388608",
            "--",
        ],
        &["--workers", "1"],
    );
    assert_eq!(kb(server.child.id(), "status", "VmLck:"), 0);
    assert!(
        server.log().contains(
            "memory not locked: RLIMIT_MEMLOCK is 8192 KiB and the process lacks CAP_IPC_LOCK; set \
             LimitMEMLOCK=infinity (the packaged unit does) or disable_mlock: true"
        ),
        "{}",
        server.log()
    );
    // And it serves: the conformance suite passes.
    let keys = keyless_tools::conformance::load_expected_keys(&server.pki.pubkeys_dir).unwrap();
    running::block_on(async {
        let conn = keyless_client::connect(server.addr, "localhost", running::client_tls(&server.pki))
            .await
            .unwrap();
        let report = keyless_tools::conformance::run(&conn, &keys).await;
        assert_eq!(report.failed().count(), 0);
    });
}
