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

/// `keyless-tool man`: a page for every binary and every subcommand, so
/// every page a SEE ALSO names exists; each binary's page has FILES,
/// ENVIRONMENT and SIGNALS; `man -l` renders every page without a warning.
#[test]
fn manual_pages_exist_for_every_name_they_give_and_render_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyless-tool"))
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let man1 = dir.path().join("man1");
    let pages: Vec<String> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // The edge's configuration file has its page, which keyless-edge(1) names.
    let edge_yaml = dir.path().join("man5/edge.yaml.5");
    let edge_page = std::fs::read_to_string(man1.join("keyless-edge.1")).unwrap();
    assert!(edge_page.contains("edge.yaml(5)"), "{edge_page}");
    let text = std::fs::read_to_string(&edge_yaml).unwrap();
    for setting in ["connections_per_server", "tickets.key_file", "certificates[].names"] {
        assert!(
            text.replace("\\-", "-").contains(setting),
            "{setting} missing from edge.yaml(5)"
        );
    }
    for page in [
        "keyless-server.1",
        "keyless-edge.1",
        "keyless-tool.1",
        "keyless-bench.1",
        "keyless-tool-dev.1",
        "keyless-bench-run.1",
    ] {
        assert!(pages.contains(&page.to_string()), "{page} in {pages:?}");
    }
    for binary in ["keyless-server", "keyless-edge", "keyless-tool"] {
        let text = std::fs::read_to_string(man1.join(format!("{binary}.1"))).unwrap();
        for section in [".SH FILES", ".SH ENVIRONMENT", ".SH SIGNALS", ".SH \"SEE ALSO\""] {
            assert!(text.contains(section), "{binary}: {section}");
        }
    }
    let rendered = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&edge_yaml)
        .env("MANWIDTH", "80")
        .output()
        .expect("man (apt install man-db)");
    let warnings = String::from_utf8_lossy(&rendered.stderr);
    assert!(
        rendered.status.success() && warnings.trim().is_empty(),
        "edge.yaml.5: {warnings}"
    );
    // Every name(1) a page mentions (SEE ALSO, subcommand lists) is a page.
    for page in &pages {
        let text = std::fs::read_to_string(man1.join(page)).unwrap().replace("\\-", "-");
        for (i, _) in text.match_indices("(1)") {
            let name: String = text[..i]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.starts_with("keyless") {
                assert!(
                    pages.contains(&format!("{name}.1")),
                    "{page} names {name}(1), which has no page"
                );
            }
        }
        let rendered = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(man1.join(page))
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .expect("man (apt install man-db)");
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(
            rendered.status.success() && warnings.trim().is_empty(),
            "{page}: {warnings}"
        );
    }
}
