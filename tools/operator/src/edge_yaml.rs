//! `edge.yaml(5)`: the edge's configuration file, every setting with its
//! default, as a manual page. The edge's settings are a YAML file (serde),
//! not flags, so clap cannot write this page: the table below is it, and a
//! test holds it to the fields of `keyless_edge::config::EdgeConfig`.

/// `(setting, default, what it does)`; nested settings as `parent.child`.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("listen", "required", "Where clients connect, ADDRESS:PORT; every core listens (SO_REUSEPORT)."),
    ("metrics_listen", "none", "Where /metrics, /healthz and /readyz (a key server reachable) are served."),
    ("workers", "every core", "Cores to serve on."),
    ("certificates", "required", "The sites: a list of entries, each with cert, names, default."),
    ("certificates[].cert", "required", "PEM chain, leaf first (RSA, ECDSA or Ed25519). The leaf's public key names, by its SKI, the key a key server signs with."),
    ("certificates[].names", "the certificate's DNS names", "SNI names served with this chain (\"*.example.com\" matches one label)."),
    ("certificates[].default", "false", "Serve this chain when SNI is absent or matches no entry."),
    ("certificates[].local_key", "none", "Benchmarks only: sign with this local private key in the handshake, as a plain TLS server would."),
    ("key_servers", "none", "Key servers to dial, HOST:PORT; a name with several addresses counts as several, and names are looked up again every resolve_interval. May be empty when key servers dial in."),
    ("key_server_listen", "none", "Where key servers that dial out (dial in their configuration) connect to this edge, with mutual TLS."),
    ("key_server_name", "each HOST", "The name the key servers' certificates carry."),
    ("key_server_ca", "required", "CA of the key servers' certificates."),
    ("client_cert", "required", "The edge's certificate for mutual TLS with key servers."),
    ("client_key", "required", "Its private key."),
    ("key_server_connections", "2, or the cores if fewer", "Connections to each dialed key server for the whole process, spread over its cores; a core holding none hands its requests to one that does."),
    ("connections_per_server", "none", "Connections to each dialed key server from every core instead of key_server_connections (not both)."),
    ("nameservers", "the system's", "DNS servers for the key_servers names, IP:PORT each; by default /etc/resolv.conf and /etc/hosts."),
    ("resolve_interval", "30s", "Time between lookups of the key_servers names (a SIGHUP looks them up at once): new addresses get connections, those gone finish their requests and close."),
    ("request_timeout", "2s", "How long a remote signature may take before the handshake fails (request_timeout_ms: the old spelling)."),
    ("health_interval", "1s", "Time between health pings per connection; a failed ping replaces the connection (health_interval_ms: the old spelling)."),
    ("handshake_mode", "coroutine", "Where a handshake waits for its signature: coroutine (suspended on its core) or threads (a blocked handshake thread)."),
    ("handshake_threads", "256", "threads mode: signatures in flight at once."),
    ("handshake_timeout", "10s", "How long a client has to finish its handshake (handshake_timeout_s: the old spelling)."),
    ("drain_timeout", "30s", "On SIGTERM, how long open connections may take to finish (drain_timeout_s: the old spelling)."),
    ("idle_timeout", "60s", "A connection with no traffic (proxy) or no request (built-in page) for this long is closed; 0: never."),
    ("max_connections_per_core", "16384", "Connections one core holds, handshakes included; more are closed at once."),
    ("allow_core_dumps", "false", "true: a crash may write a core file, which holds the session-ticket keys (for a bug report only)."),
    ("disable_mlock", "false", "true: memory, ticket keys included, may be swapped to disk."),
    ("upstream", "none", "Where decrypted traffic goes, ADDRESS:PORT; without it, a built-in HTTP/1.1 page answers."),
    ("proxy_protocol", "false", "Send a PROXY protocol v2 header first: the client's address, ALPN, SNI, TLS version and cipher."),
    ("access_log", "false", "One line per connection (target access): client, SNI, TLS version, cipher, ALPN, full or resumed, signing time, bytes, duration."),
    ("alpn", "none", "ALPN protocols offered to clients, in order of preference; only those the upstream speaks."),
    ("upstream_protocols", "[http/1.1]", "The ALPN protocols the upstream speaks (the edge passes bytes; it does not translate between HTTP versions)."),
    ("tickets", "in memory", "Session tickets: key_file, rotation, lifetime."),
    ("tickets.key_file", "none", "Ticket keys shared by every edge of a fleet (keyless-tool ticket-keys), followed as the file changes; without it, keys live in memory."),
    ("tickets.rotation", "1h", "Time between key rotations of in-memory keys (rotation_s: the old spelling, seconds)."),
    ("tickets.lifetime", "18h", "Ticket lifetime hint and window (lifetime_s: the old spelling, seconds)."),
];

/// The page, in roff.
pub fn page() -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('-', "\\-");
    let mut out = String::from(
        ".TH edge.yaml 5 \"\" \"keyless\" \"File Formats\"\n\
         .SH NAME\nedge.yaml \\- keyless\\-edge's configuration\n\
         .SH SYNOPSIS\n/etc/keyless/edge.yaml, ./edge.yaml, or the file given with \\fBkeyless\\-edge \\-c\\fR\n\
         .SH DESCRIPTION\nA YAML file. A top\\-level key the edge does not know is ignored and said at start\\-up; \
         inside a certificate entry or tickets it is an error, since a typo there would change what is served. \
         Durations are written as 500ms, 2s, 18h. \\fBkeyless\\-edge \\-t\\fR checks a file without serving.\n\
         .SH SETTINGS\n",
    );
    for (name, default, text) in SETTINGS {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR (default: {})\n{}\n",
            escape(name),
            escape(default),
            escape(text)
        ));
    }
    out.push_str(
        ".SH EXAMPLE\n.nf\nlisten: 0.0.0.0:443\nmetrics_listen: 127.0.0.1:8406\ncertificates:\n  \\- cert: /etc/keyless/sites/example.pem\n    default: true\n\
         key_servers: [\"ks1.example.net:2407\", \"ks2.example.net:2407\"]\nkey_server_ca: /etc/keyless/keyless_cacert.pem\n\
         client_cert: /etc/keyless/edge.pem\nclient_key: /etc/keyless/edge\\-key.pem\nupstream: 127.0.0.1:8080\n\
         tickets:\n  key_file: /etc/keyless/ticket\\-keys.json\n.fi\n\
         .SH \"SEE ALSO\"\nkeyless\\-edge(1), keyless\\-tool(1)\n.PP\nThe documents in /usr/share/doc/keyless (edge.md).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    /// Every field of the edge's configuration types is on the page, and
    /// nothing else: the page cannot drift from what the edge reads.
    #[test]
    fn the_page_lists_exactly_the_edge_settings() {
        let source = include_str!("../../../frontends/edge/src/config.rs");
        let fields = |start: &str, prefix: &str| -> Vec<String> {
            let body = &source[source.find(start).unwrap()..];
            let body = &body[..body.find("\n}\n").unwrap()];
            body.lines()
                .filter_map(|l| l.trim().strip_prefix("pub ")?.split_once(':'))
                .map(|(name, _)| format!("{prefix}{name}"))
                .filter(|n| !n.ends_with("unknown_keys"))
                .collect()
        };
        let mut expected = fields("pub struct EdgeConfig {", "");
        expected.extend(fields("pub struct CertEntry {", "certificates[]."));
        expected.extend(fields("pub struct TicketSettings {", "tickets."));
        expected.sort();
        let mut listed: Vec<String> = super::SETTINGS.iter().map(|(n, ..)| n.to_string()).collect();
        listed.sort();
        assert_eq!(listed, expected);
    }
}
