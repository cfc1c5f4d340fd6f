//! `keyless-tool man`: manual pages and shell completions, written from
//! the same clap definitions the binaries parse their arguments with, so
//! they cannot drift from what the binaries accept. Every subcommand gets
//! its page (the SEE ALSO of its parent names it), and each binary's page
//! ends with FILES, ENVIRONMENT and SIGNALS. The edge's file has its own
//! page, `edge.yaml(5)` ([`crate::edge_yaml`]).

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

/// One entry of a FILES, ENVIRONMENT or SIGNALS section.
type Entry = (&'static str, &'static str);

/// What a binary's page says beyond its options.
struct Extra {
    files: &'static [Entry],
    environment: &'static [Entry],
    signals: &'static [Entry],
    see_also: &'static str,
}

const DOCS: &str = "/usr/share/doc/keyless";

fn extra(name: &str) -> Extra {
    match name {
        "keyless-server" => Extra {
            files: &[
                ("./gokeyless.yaml, /etc/keyless/gokeyless.yaml", "The configuration, searched in this order when -c is not given (as gokeyless). Its settings: /usr/share/doc/keyless/operating.md."),
                ("/etc/keyless/keys/", "The package's key folder: every *.key below it (mode 0600, user keyless)."),
                ("/run/keyless/keyless.pid", "The package's pid_file, written at start, removed at exit."),
            ],
            environment: &[
                ("KEYLESS_*", "Each option's variable, named beside it above; a flag wins over its variable, a variable over the file."),
                ("KEYLESS_LOG_FORMAT", "json: one JSON object per log line."),
                ("HTTPS_PROXY, https_proxy, NO_PROXY", "The proxy a key server that dials out goes through, unless dial_proxy says otherwise."),
            ],
            signals: &[
                ("SIGHUP", "Read the configuration again; reload the key stores, the server certificate and the client CA without dropping a connection. A reload that fails changes nothing and says why."),
                ("SIGTERM, SIGINT", "Stop accepting, answer what was already received (within drain_timeout), exit 0."),
            ],
            see_also: "keyless-edge(1), keyless-tool(1), keyless-bench(1)",
        },
        "keyless-edge" => Extra {
            files: &[
                ("./edge.yaml, /etc/keyless/edge.yaml", "The configuration when -c is not given: listen, certificates, key_servers, key_server_ca, client_cert, client_key, tickets, upstream, limits and timeouts. Every setting with its default: edge.yaml(5)."),
                ("tickets.key_file", "The session-ticket keys shared by a fleet (keyless-tool ticket-keys), followed as it changes."),
            ],
            environment: &[
                ("KEYLESS_EDGE_CONFIG", "The configuration file, as -c."),
                ("KEYLESS_LOGLEVEL", "The log level, as -l."),
                ("KEYLESS_LOG_FORMAT", "json: one JSON object per log line."),
            ],
            signals: &[
                ("SIGHUP", "Reload the certificates (new connections get them); settings that need a restart are named."),
                ("SIGTERM, SIGINT", "Stop accepting, let open connections finish within drain_timeout, exit 0."),
            ],
            see_also: "edge.yaml(5), keyless-server(1), keyless-tool(1), keyless-bench(1)",
        },
        "keyless-tool" => Extra {
            files: &[
                ("./dev-pki/", "The development PKI that dev and gen-pki write and use."),
                ("./gokeyless.yaml, /etc/keyless/gokeyless.yaml", "What keystore-debug reads when -c is not given, as the server would."),
            ],
            environment: &[("KEYLESS_CONFIG_FILE", "keystore-debug's configuration file, as -c.")],
            signals: &[
                ("SIGHUP", "dev: reload the key server's keys and the edge's certificates."),
                ("SIGTERM, SIGINT", "dev: drain the key server and the edge it runs, then exit."),
            ],
            see_also: "keyless-server(1), keyless-edge(1), keyless-bench(1)",
        },
        _ => Extra {
            files: &[("./dev-pki/", "The development PKI the defaults point at (ca.pem, client.pem, pubkeys/).")],
            environment: &[],
            signals: &[],
            see_also: "keyless-server(1), keyless-edge(1), keyless-tool(1)",
        },
    }
}

/// roff for the sections of `extra`.
fn sections(extra: &Extra) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('-', "\\-");
    let mut out = String::new();
    for (title, entries) in [
        ("FILES", extra.files),
        ("ENVIRONMENT", extra.environment),
        ("SIGNALS", extra.signals),
    ] {
        if entries.is_empty() {
            continue;
        }
        out.push_str(&format!(".SH {title}\n"));
        for (name, text) in entries {
            out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", escape(name), escape(text)));
        }
    }
    out.push_str(&format!(
        ".SH \"SEE ALSO\"\n{}\n.PP\nThe documents in {}.\n",
        escape(extra.see_also),
        escape(DOCS)
    ));
    out
}

/// Write `man1/<name>.1` (and a page per subcommand),
/// `man5/edge.yaml.5` and `completions/{bash,zsh,fish}/...` under `out`;
/// how many files.
pub fn write(out: &Path) -> Result<usize, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let man = out.join("man1");
    std::fs::create_dir_all(&man).map_err(|e| io(&man, e))?;
    let man5 = out.join("man5");
    std::fs::create_dir_all(&man5).map_err(|e| io(&man5, e))?;
    let edge_yaml = man5.join("edge.yaml.5");
    std::fs::write(&edge_yaml, crate::edge_yaml::page()).map_err(|e| io(&edge_yaml, e))?;
    let mut written = 1;
    for mut cmd in commands() {
        let name = cmd.get_name().to_string();
        // Every subcommand's page, then the binary's own with its sections.
        let mut built = cmd.clone().disable_help_subcommand(true);
        built.build();
        for sub in built.get_subcommands().filter(|s| !s.is_hide_set()) {
            let page = clap_mangen::Man::new(sub.clone());
            page.generate_to(&man).map_err(|e| io(&man, e))?;
            written += 1;
        }
        let page = man.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(built.clone())
            .render(&mut text)
            .map_err(|e| io(&page, e))?;
        text.extend_from_slice(sections(&extra(&name)).as_bytes());
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
