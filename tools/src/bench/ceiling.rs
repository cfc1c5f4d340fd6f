//! The signing ceiling: the same key, signed in-process on one core with
//! the same AWS-LC code the server uses, no network and no protocol; and
//! beside it, in the same run, the multi-buffer ceiling of that key (full
//! 8-lane calls) where the lanes can run.

use std::path::Path;
use std::time::{Duration, Instant};

use keyless_keys::memory::KeyMaterial;
use keyless_keys::multibuffer::{self, Lane};
use keyless_keys::PrivateKey;
use serde::Serialize;

use super::op::BenchOp;

#[derive(Debug, Clone, Serialize)]
pub struct CeilingReport {
    pub key: String,
    pub operation: String,
    pub ops: u64,
    pub duration_s: f64,
    pub ops_per_sec: f64,
    pub us_per_op: f64,
    /// What computed the multi-buffer lanes, or why there is no figure.
    pub multibuffer: String,
    pub multibuffer_ops_per_sec: Option<f64>,
}

/// Sign for `duration` on the calling thread.
pub fn measure(
    key_file: &Path,
    op: Option<BenchOp>,
    duration: Duration,
    multibuffer_library: Option<&Path>,
) -> Result<CeilingReport, String> {
    let material = KeyMaterial::load(key_file).map_err(|e| e.to_string())?;
    let alg = material.public().algorithm;
    let op = op.unwrap_or_else(|| BenchOp::default_for(alg));
    let operation = op
        .operation
        .ok_or("the ceiling needs a private-key operation, not ping")?;
    let key = material.instantiate().map_err(|e| e.to_string())?;
    let mut input = vec![0x5Au8; op.payload_len(alg)];
    if input.len() > 1 {
        input[0] = 0; // below the modulus for raw decrypt
    }
    key.perform(operation, &input).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        for _ in 0..16 {
            std::hint::black_box(
                key.perform(operation, std::hint::black_box(&input))
                    .map_err(|e| e.to_string())?,
            );
        }
        ops += 16;
    }
    let secs = start.elapsed().as_secs_f64();
    let (multibuffer, multibuffer_ops_per_sec) =
        multibuffer_ceiling(&key, operation, &input, duration, multibuffer_library)?;
    Ok(CeilingReport {
        key: format!("{} ({alg})", key_file.display()),
        operation: op.name(),
        ops,
        duration_s: secs,
        ops_per_sec: ops as f64 / secs,
        us_per_op: secs * 1e6 / ops as f64,
        multibuffer,
        multibuffer_ops_per_sec,
    })
}

/// Full 8-lane calls with `key` in every lane, for `duration`.
fn multibuffer_ceiling(
    key: &dyn PrivateKey,
    operation: keyless_keys::Operation,
    input: &[u8],
    duration: Duration,
    library: Option<&Path>,
) -> Result<(String, Option<f64>), String> {
    let selected = multibuffer::select(multibuffer::Mode::Auto, library)?;
    let Some(math) = selected.math else {
        return Ok((selected.reason, None));
    };
    let Some(lane_key) = key.lane_key().filter(|k| k.serves(operation)) else {
        return Ok((format!("{operation:?} with this key has no lane class"), None));
    };
    let lanes: Vec<Lane<'_>> = (0..multibuffer::LANES)
        .map(|_| Lane {
            key: lane_key,
            op: operation,
            input,
        })
        .collect();
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        for result in multibuffer::sign(math.as_ref(), std::hint::black_box(&lanes)).results {
            std::hint::black_box(result.map_err(|e| e.to_string())?);
        }
        ops += lanes.len() as u64;
    }
    Ok((selected.reason, Some(ops as f64 / start.elapsed().as_secs_f64())))
}
