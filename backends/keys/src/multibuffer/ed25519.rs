//! Ed25519 lanes: the message itself (RFC 8032 hashes it inside), one call,
//! `R || S` out. Deterministic, so each signature is AWS-LC's byte for byte.

use super::{EdLane, EdLaneKey, Lane, LaneKey, LaneMath, Outcome, LANES};
use crate::{CryptoError, Operation};

pub(super) fn sign(math: &dyn LaneMath, lanes: &[Lane<'_>]) -> Vec<Outcome> {
    let mut results: Vec<Outcome> = Vec::with_capacity(lanes.len());
    // (lane index, key, message) of the lanes that go into the call.
    let mut ready: Vec<(usize, &EdLaneKey, &[u8])> = Vec::with_capacity(LANES);
    for (i, lane) in lanes.iter().enumerate() {
        match (lane.key, lane.op) {
            // The library takes a 32-bit length; a longer message (the
            // protocol's bodies are at most 64 KiB) would go alone.
            (LaneKey::Ed(key), Operation::Ed25519) if u32::try_from(lane.input.len()).is_ok() => {
                ready.push((i, key, lane.input));
                results.push(Outcome::Refused); // until computed
            }
            (LaneKey::Ed(_), Operation::Ed25519) => results.push(Outcome::Refused),
            _ => results.push(Outcome::Done(Err(CryptoError("operation does not match the key type")))),
        }
    }
    if ready.is_empty() {
        return results;
    }
    let call: Vec<EdLane<'_>> = ready.iter().map(|&(_, key, msg)| EdLane { key, msg }).collect();
    let mut sig = vec![[0u8; 64]; call.len()];
    let good = math.ed25519(&call, &mut sig);
    for (j, (i, ..)) in ready.iter().enumerate() {
        results[*i] = if good[j] {
            Outcome::Done(Ok(sig[j].to_vec()))
        } else {
            Outcome::Refused
        };
    }
    results
}
