//! What a key server that dials out says about itself in its pings.
//!
//! A key server that connects out to an edge (`dial`) pings the edge over
//! that connection: the edge answers each ping with a pong, as any keyless
//! peer does, and reads the ping's payload. The payload names the key
//! server process (so the edge groups a process's connections, however
//! many it opens) and the version of its key set (so the edge re-learns
//! which keys it holds after a reload). The wire format is gokeyless's:
//! an ordinary ping whose payload is this text.
//!
//! ```text
//! keyless-server instance=<16 hex digits> keys=<decimal>
//! ```

/// The identity and key-set version a dialing key server announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerHello {
    /// Random per process: a restarted key server is a new instance.
    pub instance: u64,
    /// Bumped on every key reload.
    pub keys: u64,
}

const PREFIX: &str = "keyless-server instance=";

impl PeerHello {
    pub fn encode(&self) -> Vec<u8> {
        format!("{PREFIX}{:016x} keys={}", self.instance, self.keys).into_bytes()
    }

    /// The hello in a ping's payload; `None` for any other payload.
    pub fn parse(payload: &[u8]) -> Option<PeerHello> {
        let text = std::str::from_utf8(payload).ok()?;
        let rest = text.strip_prefix(PREFIX)?;
        let (instance, keys) = rest.split_once(" keys=")?;
        if instance.len() != 16 {
            return None;
        }
        Some(PeerHello {
            instance: u64::from_str_radix(instance, 16).ok()?,
            keys: keys.parse().ok()?,
        })
    }

    /// How logs name the instance.
    pub fn instance_name(&self) -> String {
        format!("{:016x}", self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_reads_back_and_other_payloads_are_not_hellos() {
        let hello = PeerHello {
            instance: 0x0123_4567_89ab_cdef,
            keys: 7,
        };
        let bytes = hello.encode();
        assert_eq!(bytes, b"keyless-server instance=0123456789abcdef keys=7");
        assert_eq!(PeerHello::parse(&bytes), Some(hello));
        for other in [&b"hello"[..], b"", b"keyless-server instance=12 keys=1", b"\xff\xfe"] {
            assert_eq!(PeerHello::parse(other), None);
        }
    }
}
