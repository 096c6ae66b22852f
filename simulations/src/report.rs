//! Run outputs: the per-round CSV and SVG plots (round time, throughput, active peers).
//!
//! Every number is formatted with a fixed precision, so one seed gives byte-identical files.

use crate::runner::RoundRecord;
use plotters::prelude::*;
use std::io::Write;
use std::path::Path;
use thiserror::Error;

/// Writing an output failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReportError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// CSV encoding error.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: String,
        /// The encoder's error.
        source: csv::Error,
    },
    /// Plot rendering error.
    #[error("{path}: {message}")]
    Plot {
        /// The file.
        path: String,
        /// What plotters said.
        message: String,
    },
}

/// The CSV header.
pub const CSV_HEADER: [&str; 11] = [
    "round",
    "start_s",
    "end_s",
    "seconds",
    "peers",
    "bytes_per_peer",
    "commits",
    "aborts",
    "resyncs",
    "active_peers",
    "groups",
];

/// Renders the per-round CSV.
pub fn rounds_csv(records: &[RoundRecord]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for r in records {
        w.write_record([
            r.round.to_string(),
            format!("{:.6}", r.start_s),
            format!("{:.6}", r.end_s),
            format!("{:.6}", r.seconds()),
            r.peers.to_string(),
            r.bytes_per_peer.to_string(),
            r.commits.to_string(),
            r.aborts.to_string(),
            r.resyncs.to_string(),
            r.active_peers.to_string(),
            r.groups.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// Writes `rounds.csv`, `round_time.svg`, `throughput.svg` and `active_peers.svg` into `dir`.
pub fn write_all(dir: &Path, records: &[RoundRecord]) -> Result<(), ReportError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let csv_path = dir.join("rounds.csv");
    let bytes = rounds_csv(records).map_err(|source| ReportError::Csv {
        path: csv_path.display().to_string(),
        source,
    })?;
    std::fs::File::create(&csv_path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(io(&csv_path))?;
    let round_time: Vec<(f64, f64)> = records
        .iter()
        .map(|r| (f64::from(r.round), r.seconds()))
        .collect();
    let throughput: Vec<(f64, f64)> = records
        .iter()
        .map(|r| {
            (
                f64::from(r.round),
                r.bytes_per_peer as f64 / r.seconds().max(1e-9) / 1e6,
            )
        })
        .collect();
    let active: Vec<(f64, f64)> = records
        .iter()
        .map(|r| (r.end_s, f64::from(r.active_peers)))
        .collect();
    line_chart(
        &dir.join("round_time.svg"),
        "Round time",
        "round",
        "seconds",
        &round_time,
    )?;
    let tput_label = "MB sent per peer per second";
    line_chart(
        &dir.join("throughput.svg"),
        "Throughput",
        "round",
        tput_label,
        &throughput,
    )?;
    line_chart(
        &dir.join("active_peers.svg"),
        "Active peers",
        "time (s)",
        "peers up",
        &active,
    )
}

/// One line series as an SVG (no fonts needed: the SVG backend emits `<text>` elements).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
) -> Result<(), ReportError> {
    let plot_err = |e: &dyn std::fmt::Display| ReportError::Plot {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let (x_max, y_max) = points
        .iter()
        .fold((1.0_f64, 1e-9_f64), |(x, y), &(px, py)| {
            (x.max(px), y.max(py))
        });
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..y_max * 1.1)
        .map_err(|e| plot_err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| plot_err(&e))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), &BLUE))
        .map_err(|e| plot_err(&e))?;
    root.present().map_err(|e| plot_err(&e))
}
