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
