//! The `keyless-edge` binary's command line: version flags as on every
//! binary of ours, and the configuration it reads without `-c`.

use std::process::Command;

fn edge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyless-edge"));
    cmd.env_remove("KEYLESS_EDGE_CONFIG");
    cmd
}

#[test]
fn v_and_capital_v_print_version_and_commit() {
    for flag in ["-v", "-V", "--version"] {
        let out = edge().arg(flag).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}");
        assert!(text.starts_with("keyless-edge 0.1.0 (commit "), "{flag}: {text}");
    }
}

#[test]
fn without_c_it_reads_the_installed_configuration_or_says_where_it_looked() {
    let out = edge().arg("-t").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/etc/keyless/edge.yaml").exists() {
        // A machine with the package installed: that file was checked
        // (packaging/test-deb.sh checks this where it installs it).
        assert!(said.contains("keyless-edge: /etc/keyless/edge.yaml"), "{said}");
    } else {
        assert!(!out.status.success());
        assert!(
            said.contains("no configuration: use -c edge.yaml (or --dev); /etc/keyless/edge.yaml does not exist"),
            "{said}"
        );
    }
}

/// The edge holds the session-ticket keys: like the key server, it
/// forbids core files whatever limit it starts with, and locks its memory.
#[test]
fn ticket_keys_stay_out_of_core_files_and_swap() {
    use keyless_tools::process::{free_port, KillOnDrop};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("edge.log");
    let child = Command::new("prlimit")
        .args(["--core=unlimited", "--"])
        .arg(env!("CARGO_BIN_EXE_keyless-edge"))
        .current_dir(dir.path())
        .args(["--dev", "--dev-dir"])
        .arg(dir.path().join("dev-pki"))
        .args(["--dev-port", &free_port().to_string()])
        .args(["--dev-metrics-port", &free_port().to_string()])
        .args(["--dev-key-server-port", &free_port().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("memory locked (mlockall)")
    {
        assert!(
            Instant::now() < deadline,
            "no `memory locked` line: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.0.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().collect::<Vec<_>>()[4..6], ["0", "0"], "{core}");
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap()
    };
    let (locked, pss) = (kb("Locked:"), kb("Pss:"));
    assert!(locked * 10 >= pss * 9, "{locked} kB locked of {pss} kB (Pss)");
}
