//! Throughput and latency across concurrency levels: a table and an SVG
//! plot of throughput against p99, what a capacity test needs.

use std::path::Path;

use plotters::prelude::*;

use super::report::LoadReport;

/// Print the sweep as a table.
pub fn print_table(rows: &[LoadReport]) {
    println!(
        "{:>6} {:>9} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "conns", "in-flight", "ops/s", "p50 us", "p99 us", "p99.9 us", "errors"
    );
    for r in rows {
        let errors: u64 = r.errors.values().sum();
        println!(
            "{:>6} {:>9} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>8}",
            r.connections, r.in_flight, r.ops_per_sec, r.latency.p50_us, r.latency.p99_us, r.latency.p999_us, errors
        );
    }
}

/// Write throughput (x) against p99 latency (y) as an SVG.
pub fn write_svg(rows: &[LoadReport], path: &Path, title: &str) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let max_x = rows.iter().map(|r| r.ops_per_sec).fold(1.0, f64::max) * 1.1;
    let max_y = rows.iter().map(|r| r.latency.p99_us).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("throughput (ops/s)")
        .y_desc("p99 latency (us)")
        .draw()
        .map_err(|e| err(&e))?;
    let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.ops_per_sec, r.latency.p99_us)).collect();
    chart
        .draw_series(LineSeries::new(points.clone(), &BLUE))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(rows.iter().map(|r| {
            let label = format!("{}x{}", r.connections, r.in_flight);
            EmptyElement::at((r.ops_per_sec, r.latency.p99_us))
                + Circle::new((0, 0), 4, BLUE.filled())
                + Text::new(label, (6, -14), ("sans-serif", 12))
        }))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
