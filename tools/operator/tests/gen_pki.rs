//! `keyless-tool gen-pki` never replaces a PKI in use without `--force`.

use std::process::Command;

fn gen_pki(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyless-tool"))
        .arg("gen-pki")
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn an_existing_pki_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dev-pki");
    assert!(gen_pki(&out, &[]).status.success());
    let ca = std::fs::read(out.join("ca.pem")).unwrap();
    let again = gen_pki(&out, &[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "replaced without --force");
    assert!(err.contains("already holds a PKI") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), ca, "the CA was touched");
    assert!(gen_pki(&out, &["--force"]).status.success());
    assert_ne!(std::fs::read(out.join("ca.pem")).unwrap(), ca, "--force makes a new CA");
}

/// The configuration it writes names its files by absolute paths, so it
/// works from any working directory.
#[test]
fn the_written_configuration_uses_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyless-tool"))
        .current_dir(dir.path())
        .args(["gen-pki", "--out", "dev-pki"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = std::fs::read_to_string(dir.path().join("dev-pki/gokeyless.yaml")).unwrap();
    let expected = format!("auth_cert: {}", dir.path().join("dev-pki/server.pem").display());
    assert!(config.contains(&expected), "{config}");
}
