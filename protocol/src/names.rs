//! The names gokeyless gives opcodes and errors in its metrics and logs
//! (`Op.String()`, `Op.Type()`, `Error.String()`), so that an operator's
//! dashboards, alerts and log searches keep working after the switch.

use crate::{ErrorCode, Opcode};

impl Opcode {
    /// gokeyless's name for this opcode (`OpECDSASignSHA256`); opcodes it
    /// has no name for are `Op(N)`, N in decimal, as Go's stringer writes.
    pub fn gokeyless_name(self) -> String {
        let name = match self.0 {
            0x01 => "OpRSADecrypt",
            0x02 => "OpRSASignMD5SHA1",
            0x03 => "OpRSASignSHA1",
            0x04 => "OpRSASignSHA224",
            0x05 => "OpRSASignSHA256",
            0x06 => "OpRSASignSHA384",
            0x07 => "OpRSASignSHA512",
            0x12 => "OpECDSASignMD5SHA1",
            0x13 => "OpECDSASignSHA1",
            0x14 => "OpECDSASignSHA224",
            0x15 => "OpECDSASignSHA256",
            0x16 => "OpECDSASignSHA384",
            0x17 => "OpECDSASignSHA512",
            0x18 => "OpEd25519Sign",
            0x21 => "OpSeal",
            0x22 => "OpUnseal",
            0x23 => "OpRPC",
            0x24 => "OpCustom",
            0x35 => "OpRSAPSSSignSHA256",
            0x36 => "OpRSAPSSSignSHA384",
            0x37 => "OpRSAPSSSignSHA512",
            0xF0 => "OpResponse",
            0xF1 => "OpPing",
            0xF2 => "OpPong",
            0xFF => "OpError",
            n => return format!("Op({n})"),
        };
        name.to_owned()
    }

    /// The family gokeyless's duration histograms label `type`: its
    /// `Op.Type()`, case for case (pings, seal and answers are `other`,
    /// an opcode it does not know is `unknown`).
    pub fn family(self) -> OpFamily {
        match self.0 {
            0x01..=0x07 | 0x35..=0x37 => OpFamily::Rsa,
            0x12..=0x17 => OpFamily::Ecdsa,
            0x18 => OpFamily::Ed25519,
            0x24 => OpFamily::Custom,
            0x23 => OpFamily::Rpc,
            0x21 | 0x22 | 0xF0 | 0xF1 | 0xF2 | 0xFF => OpFamily::Other,
            _ => OpFamily::Unknown,
        }
    }
}

/// What kind of operation an opcode is, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpFamily {
    Rsa,
    Ecdsa,
    Ed25519,
    Custom,
    Rpc,
    Other,
    Unknown,
}

impl OpFamily {
    pub const ALL: [OpFamily; 7] = [
        OpFamily::Rsa,
        OpFamily::Ecdsa,
        OpFamily::Ed25519,
        OpFamily::Custom,
        OpFamily::Rpc,
        OpFamily::Other,
        OpFamily::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpFamily::Rsa => "rsa",
            OpFamily::Ecdsa => "ecdsa",
            OpFamily::Ed25519 => "ed25519",
            OpFamily::Custom => "custom",
            OpFamily::Rpc => "rpc",
            OpFamily::Other => "other",
            OpFamily::Unknown => "unknown",
        }
    }

    /// Position in [`OpFamily::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// gokeyless's `Error.String()` for an answer's error byte (`None`: the
/// answer was not an error).
pub fn gokeyless_error(code: Option<u8>) -> &'static str {
    match code {
        None | Some(0) => "no error",
        Some(b) => ErrorCode::from_byte(b).map_or("unknown error", ErrorCode::description),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_gokeyless_spellings() {
        assert_eq!(Opcode::ECDSA_SIGN_SHA256.gokeyless_name(), "OpECDSASignSHA256");
        assert_eq!(Opcode::RSA_PSS_SIGN_SHA384.gokeyless_name(), "OpRSAPSSSignSHA384");
        assert_eq!(Opcode::PING.gokeyless_name(), "OpPing");
        assert_eq!(Opcode(0x20).gokeyless_name(), "Op(32)");
        assert_eq!(Opcode::ECDSA_SIGN_SHA256.family().as_str(), "ecdsa");
        assert_eq!(Opcode::RSA_PSS_SIGN_SHA256.family().as_str(), "rsa");
        // gokeyless's protocol.Op.Type(), every case.
        for (op, family) in [
            (0x01, "rsa"),
            (0x07, "rsa"),
            (0x37, "rsa"),
            (0x12, "ecdsa"),
            (0x17, "ecdsa"),
            (0x18, "ed25519"),
            (0x21, "other"),
            (0x22, "other"),
            (0x23, "rpc"),
            (0x24, "custom"),
            (0xF0, "other"),
            (0xF1, "other"),
            (0xF2, "other"),
            (0xFF, "other"),
            (0x08, "unknown"),
            (0x30, "unknown"),
        ] {
            assert_eq!(Opcode(op).family().as_str(), family, "opcode {op:#x}");
        }
        assert_eq!(gokeyless_error(None), "no error");
        assert_eq!(
            gokeyless_error(Some(ErrorCode::KeyNotFound as u8)),
            "key not found due to no matching SKI/SNI/ServerIP"
        );
        assert_eq!(gokeyless_error(Some(0x7f)), "unknown error");
        for (i, f) in OpFamily::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
    }
}
