//! Outputs of `gradmesh-sim fl`: `fl_rounds.csv`, `partition.csv` (per-client label counts) and
//! three SVG plots (test accuracy vs simulated time and vs rounds; the first clients' label
//! histogram as stacked bars, with a legend of the classes). Numbers have fixed precision,
//! so one seed gives byte-identical files.

use super::{FlRecord, FlSummary};
use crate::report::{Axis, ReportError, line_chart, stacked_bars_chart};
use std::path::Path;

/// Clients shown in `label_histogram.svg`.
const HISTOGRAM_CLIENTS_MAX: usize = 30;

/// Writing the outputs failed.
pub type FlReportError = ReportError;

/// The CSV header of `fl_rounds.csv`.
pub const CSV_HEADER: [&str; 11] = [
    "round",
    "sim_time_s",
    "round_s",
    "clients_sampled",
    "completed",
    "dropped",
    "clients_up",
    "samples",
    "test_accuracy",
    "test_loss",
    "epsilon",
];

/// Renders `fl_rounds.csv`.
pub fn rounds_csv(records: &[FlRecord]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for r in records {
        w.write_record([
            r.round.to_string(),
            format!("{:.6}", r.sim_time_s),
            format!("{:.6}", r.round_s),
            r.sampled.to_string(),
            r.completed.to_string(),
            r.dropped.to_string(),
            r.clients_up.to_string(),
            r.samples.to_string(),
            format!("{:.6}", r.accuracy),
            format!("{:.6}", r.loss),
            r.epsilon.map_or(String::new(), |e| format!("{e:.4}")),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

fn partition_csv(summary: &FlSummary) -> Result<Vec<u8>, csv::Error> {
    let counts = summary.histogram.counts();
    let classes = counts.first().map_or(0, Vec::len);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["client".to_owned(), "samples".to_owned()];
    header.extend((0..classes).map(|c| format!("class_{c}")));
    w.write_record(&header)?;
    for (i, row) in counts.iter().enumerate() {
        let mut rec = vec![i.to_string(), row.iter().sum::<u32>().to_string()];
        rec.extend(row.iter().map(u32::to_string));
        w.write_record(&rec)?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes every output into `dir` (created if needed).
pub fn write_all(dir: &Path, summary: &FlSummary) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let csv_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReportError::Csv { path, source }
    };
    let rounds = dir.join("fl_rounds.csv");
    write_file(
        &rounds,
        &rounds_csv(&summary.records).map_err(csv_err(&rounds))?,
    )?;
    let part = dir.join("partition.csv");
    write_file(&part, &partition_csv(summary).map_err(csv_err(&part))?)?;
    label_histogram_svg(
        &dir.join("label_histogram.svg"),
        summary.histogram.counts(),
        HISTOGRAM_CLIENTS_MAX,
    )?;
    let by_time: Vec<(f64, f64)> = summary
        .records
        .iter()
        .map(|r| (r.sim_time_s, 100.0 * r.accuracy))
        .collect();
    let by_round: Vec<(f64, f64)> = summary
        .records
        .iter()
        .map(|r| (f64::from(r.round), 100.0 * r.accuracy))
        .collect();
    line_chart(
        &dir.join("accuracy_vs_time.svg"),
        "Test accuracy vs simulated time",
        Axis::real("simulated time (s)"),
        Axis::real("test accuracy (%)"),
        &by_time,
    )?;
    line_chart(
        &dir.join("accuracy_vs_round.svg"),
        "Test accuracy vs rounds",
        Axis::integer("round"),
        Axis::real("test accuracy (%)"),
        &by_round,
    )
}

/// Stacked bars of the first `clients_max` clients' label counts, one colour per class, named in
/// the legend.
fn label_histogram_svg(
    path: &Path,
    counts: &[Vec<u32>],
    clients_max: usize,
) -> Result<(), ReportError> {
    let shown = &counts[..counts.len().min(clients_max)];
    let classes = shown.first().map_or(0, Vec::len);
    let names: Vec<String> = (0..classes).map(|c| format!("class {c}")).collect();
    stacked_bars_chart(
        path,
        "Label histogram (first clients)",
        "client",
        "samples (stacked by class)",
        shown,
        &names,
    )
}
