//! Flame graphs from `perf record --call-graph dwarf` output, and a short
//! summary of where the time went (the leaf frames with most samples).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use inferno::collapse::perf::Folder;
use inferno::collapse::Collapse;

/// Fold `perf script` text, write the SVG, and return the `top` leaf frames
/// with their share of all samples.
pub fn from_perf_script(script: &Path, svg: &Path, top: usize) -> Result<Vec<(String, f64)>, String> {
    let input = File::open(script).map_err(|e| format!("{}: {e}", script.display()))?;
    let mut folded = Vec::new();
    Folder::default()
        .collapse(BufReader::new(input), &mut folded)
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&folded);
    if text.trim().is_empty() {
        return Err(format!("{}: no samples", script.display()));
    }
    let out = File::create(svg).map_err(|e| format!("{}: {e}", svg.display()))?;
    let mut options = inferno::flamegraph::Options::default();
    options.title = "keyless-server (perf record)".into();
    inferno::flamegraph::from_lines(&mut options, text.lines(), out).map_err(|e| format!("{}: {e}", svg.display()))?;
    Ok(top_leaves(&text, top))
}

/// The leaf frames of folded stacks (`a;b;c 42` lines) with most samples.
pub fn top_leaves(folded: &str, top: usize) -> Vec<(String, f64)> {
    let mut leaves: HashMap<&str, u64> = HashMap::new();
    let mut total = 0u64;
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else { continue };
        let leaf = stack.rsplit(';').next().unwrap_or(stack);
        *leaves.entry(leaf).or_default() += count;
        total += count;
    }
    let mut sorted: Vec<_> = leaves.into_iter().collect();
    sorted.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    sorted
        .into_iter()
        .take(top)
        .map(|(name, n)| (name.to_owned(), n as f64 * 100.0 / total.max(1) as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn leaves_are_summed_and_ranked() {
        let folded = "main;sign;ecdsa 70\nmain;write;send 20\nmain;other;ecdsa 10\n";
        let top = super::top_leaves(folded, 2);
        assert_eq!(top[0].0, "ecdsa");
        assert!((top[0].1 - 80.0).abs() < 1e-9);
        assert_eq!(top[1].0, "send");
    }
}
