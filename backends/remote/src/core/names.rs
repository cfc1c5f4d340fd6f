use std::net::{IpAddr, SocketAddr};

use crate::ClientError;

/// The `HOST:PORT` entries of `key_servers` and what each name resolved to
/// last: the key servers to dial are every entry's last good answer. A name
/// with several addresses is several key servers. A lookup that fails (or
/// answers nothing) keeps the last good answer. Each change, failure and
/// recovery is logged once.
#[derive(Debug)]
pub struct Names {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    text: String,
    host: String,
    port: u16,
    /// The name the key server's certificate must carry.
    name: String,
    /// The entry is an address: nothing to look up.
    literal: bool,
    last: Vec<IpAddr>,
    failing: bool,
}

impl Names {
    /// `server_name` overrides the name the key servers' certificates must
    /// carry (default: each HOST).
    pub fn parse(entries: &[String], server_name: Option<&str>) -> Result<Names, ClientError> {
        let mut parsed = Vec::new();
        for text in entries {
            let (host, port) = parse_entry(text)?;
            let literal = host.parse::<IpAddr>().ok();
            parsed.push(Entry {
                text: text.clone(),
                name: server_name.map_or_else(|| host.clone(), str::to_owned),
                host,
                port,
                literal: literal.is_some(),
                last: literal.into_iter().collect(),
                failing: false,
            });
        }
        Ok(Names { entries: parsed })
    }

    /// The names to look up: entry index and host.
    pub fn lookups(&self) -> Vec<(usize, String)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.literal)
            .map(|(i, e)| (i, e.host.clone()))
            .collect()
    }

    /// Entry `i`'s lookup answered `answer` (addresses, or why none).
    /// Whether the key servers to dial changed.
    pub fn answered(&mut self, i: usize, answer: Result<Vec<IpAddr>, String>) -> bool {
        let entry = &mut self.entries[i];
        match answer {
            Ok(mut addrs) if !addrs.is_empty() => {
                addrs.sort();
                addrs.dedup();
                if entry.failing {
                    tracing::info!("key_servers: {} resolves again", entry.text);
                    entry.failing = false;
                }
                if addrs == entry.last {
                    return false;
                }
                tracing::info!(
                    "key_servers: {} now resolves to {} (was {})",
                    entry.text,
                    list(&addrs),
                    list(&entry.last)
                );
                entry.last = addrs;
                true
            }
            failed => {
                let why = failed.err().unwrap_or_else(|| "no address".to_string());
                if !entry.failing {
                    tracing::warn!(
                        "key_servers: cannot resolve {}: {why}; keeping {} until it resolves",
                        entry.text,
                        list(&entry.last)
                    );
                    entry.failing = true;
                }
                false
            }
        }
    }

    /// Entries that resolved to nothing yet.
    pub fn unresolved(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.last.is_empty())
            .map(|e| e.text.as_str())
            .collect()
    }

    /// The key servers to dial: address and the name its certificate
    /// carries, every entry's last good answer.
    pub fn wanted(&self) -> Vec<(SocketAddr, String)> {
        let mut wanted: Vec<(SocketAddr, String)> = Vec::new();
        for e in &self.entries {
            for ip in &e.last {
                let server = (SocketAddr::new(*ip, e.port), e.name.clone());
                if !wanted.contains(&server) {
                    wanted.push(server);
                }
            }
        }
        wanted
    }
}

/// One `HOST:PORT` entry (an IPv6 address in brackets): host and port.
pub fn parse_entry(text: &str) -> Result<(String, u16), ClientError> {
    let bad = |why: &str| ClientError::Config(format!("key server {text:?}: {why}"));
    let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    let host = host.trim_matches(['[', ']']).to_owned();
    if host.is_empty() {
        return Err(bad("expected HOST:PORT"));
    }
    Ok((host, port))
}

fn list(addrs: &[IpAddr]) -> String {
    if addrs.is_empty() {
        return "nothing".into();
    }
    addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_need_no_lookup_and_names_keep_their_last_good_answer() {
        let mut names = Names::parse(
            &["127.0.0.1:2407".into(), "[::1]:2408".into(), "ks.example:2407".into()],
            None,
        )
        .unwrap();
        assert_eq!(names.lookups(), [(2, "ks.example".to_string())]);
        assert_eq!(names.unresolved(), ["ks.example:2407"]);
        let wanted = names.wanted();
        assert_eq!(wanted[0], ("127.0.0.1:2407".parse().unwrap(), "127.0.0.1".into()));
        assert_eq!(wanted[1], ("[::1]:2408".parse().unwrap(), "::1".into()));
        assert!(names.answered(2, Ok(vec![ip("10.0.0.2"), ip("10.0.0.1")])));
        assert!(!names.answered(2, Ok(vec![ip("10.0.0.1"), ip("10.0.0.2")])), "same set");
        assert!(
            !names.answered(2, Err("timed out".into())),
            "a failure keeps the last answer"
        );
        assert!(!names.answered(2, Ok(vec![])), "so does an empty one");
        assert_eq!(names.wanted().len(), 4);
        assert!(names.answered(2, Ok(vec![ip("10.0.0.2")])));
        let wanted = names.wanted();
        assert_eq!(wanted[2], ("10.0.0.2:2407".parse().unwrap(), "ks.example".into()));
        assert_eq!(wanted.len(), 3);
    }

    #[test]
    fn a_bad_entry_says_what_is_wrong() {
        let e = |s: &str| Names::parse(&[s.into()], None).unwrap_err().to_string();
        assert!(e("no-port").contains("HOST:PORT"), "{}", e("no-port"));
        assert!(e("ks:99999").contains("port"), "{}", e("ks:99999"));
        assert!(e(":2407").contains("HOST:PORT"));
        let named = Names::parse(&["127.0.0.1:1".into()], Some("keyserver.test")).unwrap();
        assert_eq!(named.wanted()[0].1, "keyserver.test");
    }
}
