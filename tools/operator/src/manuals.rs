//! `keyless-tool man`: manual pages and shell completions, written from
//! the same clap definitions the binaries parse their arguments with, so
//! they cannot drift from what the binaries accept.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

/// Every binary's command line.
fn commands() -> Vec<clap::Command> {
    vec![
        keyless_server::config::Options::command(),
        keyless_edge::config::Cli::command(),
        crate::command(),
        keyless_tools::bench::cli::Cli::command(),
    ]
}

/// Write `man1/<name>.1` and `completions/{bash,zsh,fish}/...` under
/// `out`; how many files.
pub fn write(out: &Path) -> Result<usize, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let man = out.join("man1");
    std::fs::create_dir_all(&man).map_err(|e| io(&man, e))?;
    let mut written = 0;
    for mut cmd in commands() {
        let name = cmd.get_name().to_string();
        let page = man.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut text)
            .map_err(|e| io(&page, e))?;
        std::fs::write(&page, text).map_err(|e| io(&page, e))?;
        written += 1;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            clap_complete::generate_to(shell, &mut cmd, &name, &dir).map_err(|e| io(&dir, e))?;
            written += 1;
        }
    }
    Ok(written)
}
