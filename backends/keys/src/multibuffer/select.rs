//! Choosing the signing path at start-up: `multibuffer: auto|on|off`.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use super::{CryptoMb, LaneMath, Reference};

/// The `multibuffer` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Multi-buffer where crypto_mb loads and the CPU has AVX-512 IFMA,
    /// else AWS-LC single signatures.
    #[default]
    Auto,
    /// Multi-buffer or refuse to start.
    On,
    /// AWS-LC single signatures only.
    Off,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            other => Err(format!("`{other}` is not auto, on or off")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::On => "on",
            Mode::Off => "off",
        })
    }
}

/// The path chosen, and in words why (logged once at start-up).
#[derive(Clone)]
pub struct Selected {
    pub math: Option<Arc<dyn LaneMath>>,
    pub reason: String,
}

/// Test builds only: `KEYLESS_TEST_LANE_MATH=reference` (or
/// `reference:faults=N`) puts the AWS-LC reference behind the lanes, so the
/// engine's batching is exercised on CPUs without IFMA. Release builds
/// ignore it unless built with the `lane-reference` feature (benchmarks of
/// the path's own cost).
const TEST_HOOK: &str = "KEYLESS_TEST_LANE_MATH";

fn test_hook() -> Option<Result<Reference, String>> {
    if !cfg!(debug_assertions) && !cfg!(feature = "lane-reference") {
        return None;
    }
    let value = std::env::var(TEST_HOOK).ok()?;
    Some(match value.as_str() {
        "reference" => Ok(Reference::new()),
        v => match v.strip_prefix("reference:faults=").map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Ok(Reference::with_faults(n)),
            _ => Err(format!("{TEST_HOOK}={v}: expected reference or reference:faults=N")),
        },
    })
}

/// The signing path for `mode`; `library` overrides where crypto_mb is
/// looked for. `on` fails with the reason the library cannot be used.
pub fn select(mode: Mode, library: Option<&Path>) -> Result<Selected, String> {
    if mode == Mode::Off {
        return Ok(Selected {
            math: None,
            reason: "multibuffer: off".into(),
        });
    }
    if let Some(reference) = test_hook() {
        let reference = reference?;
        return Ok(Selected {
            reason: format!("{} ({TEST_HOOK})", reference.describe()),
            math: Some(Arc::new(reference)),
        });
    }
    match CryptoMb::load(library) {
        Ok(lib) => Ok(Selected {
            reason: lib.describe(),
            math: Some(Arc::new(lib)),
        }),
        Err(why) if mode == Mode::On => Err(format!("multibuffer: on, but crypto_mb cannot be used: {why}")),
        Err(why) => Ok(Selected {
            math: None,
            reason: format!("crypto_mb not used: {why}"),
        }),
    }
}
