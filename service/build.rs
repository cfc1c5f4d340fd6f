//! The commit a binary was built from, for `--version`: git's, when the
//! source is a checkout; `KEYLESS_COMMIT` when a packager sets it.
fn main() {
    println!("cargo:rerun-if-env-changed=KEYLESS_COMMIT");
    let commit = std::env::var("KEYLESS_COMMIT").ok().or_else(|| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    if let Ok(head) = std::process::Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        let dir = String::from_utf8_lossy(&head.stdout).trim().to_string();
        if !dir.is_empty() {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/refs");
        }
    }
    println!(
        "cargo:rustc-env=KEYLESS_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
