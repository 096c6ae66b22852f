//! Run outputs: the per-round CSV and SVG plots (round time, throughput, active peers), and the
//! chart helpers the federated outputs share (a line chart, stacked bars with a legend).
//!
//! Every number is formatted with a fixed precision, so one seed gives byte-identical files.
//! Axes of whole numbers (rounds, clients, peers, samples) carry integer ticks printed without
//! decimals.

use crate::runner::RoundRecord;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::io::Write;
use std::ops::Range;
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
        Axis::integer("round"),
        Axis::real("seconds"),
        &round_time,
    )?;
    let tput_label = "MB sent per peer per second";
    line_chart(
        &dir.join("throughput.svg"),
        "Throughput",
        Axis::integer("round"),
        Axis::real(tput_label),
        &throughput,
    )?;
    line_chart(
        &dir.join("active_peers.svg"),
        "Active peers",
        Axis::real("time (s)"),
        Axis::integer("peers up"),
        &active,
    )
}

/// One axis of a chart: its description, and whether it counts whole things (rounds, clients,
/// peers), so that its ticks sit on integers and print without decimals.
#[derive(Debug, Clone, Copy)]
pub struct Axis<'a> {
    /// The description printed along the axis.
    pub label: &'a str,
    /// Integer ticks, printed without decimals.
    pub integer: bool,
}

impl<'a> Axis<'a> {
    /// An axis of real values (time, seconds, rates): plotters' own ticks and labels.
    pub const fn real(label: &'a str) -> Self {
        Self {
            label,
            integer: false,
        }
    }

    /// An axis of whole numbers.
    pub const fn integer(label: &'a str) -> Self {
        Self {
            label,
            integer: true,
        }
    }
}

/// Plotters' default number of tick labels per axis.
const LABELS_DEFAULT: usize = 11;

/// How many tick labels an integer axis over `range` asks plotters for: at most `max`, and at
/// most one per unit of the range. Plotters steps its ticks by 1, 2 or 5 × 10ᵏ and takes the
/// smallest step that yields no more labels than asked for, so the step is then at least 1 and
/// every tick a whole number.
fn integer_labels(range: &Range<f64>, max: usize) -> usize {
    // A float-to-int `as` saturates: a NaN or negative width gives 0, hence one label.
    ((range.end - range.start).floor() as usize).clamp(1, max)
}

/// A tick label of an integer axis.
fn whole(v: &f64) -> String {
    format!("{v:.0}")
}

/// The plot's mesh with both axes' descriptions; an integer axis gets at most its paired number
/// of labels, chosen by [`integer_labels`].
fn draw_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    (x, x_labels_max): (Axis<'_>, usize),
    (y, y_labels_max): (Axis<'_>, usize),
) -> Result<(), String> {
    let (x_range, y_range) = (chart.x_range(), chart.y_range());
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x.label).y_desc(y.label);
    if x.integer {
        mesh.x_labels(integer_labels(&x_range, x_labels_max))
            .x_label_formatter(&whole);
    }
    if y.integer {
        mesh.y_labels(integer_labels(&y_range, y_labels_max))
            .y_label_formatter(&whole);
    }
    mesh.draw().map_err(|e| e.to_string())
}

/// One line series as an SVG (no fonts needed: the SVG backend emits `<text>` elements).
pub fn line_chart(
    path: &Path,
    title: &str,
    x: Axis<'_>,
    y: Axis<'_>,
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
    draw_mesh(&mut chart, (x, LABELS_DEFAULT), (y, LABELS_DEFAULT)).map_err(|e| plot_err(&e))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), &BLUE))
        .map_err(|e| plot_err(&e))?;
    root.present().map_err(|e| plot_err(&e))
}

/// Width of the legend column right of a stacked-bar plot, in pixels.
const LEGEND_PX: u32 = 110;
/// Most bars that each get their own tick label.
const BAR_LABELS_MAX: usize = 30;

/// Stacked bars as an SVG: bar `i` stacks `bars[i][0]` at the bottom, then `bars[i][1]`, and
/// so on; segment `j` has colour `j` of plotters' `Palette99` and is named `series[j]` in a
/// legend right of the plot. Both axes count whole things (bar index, and the counts).
pub fn stacked_bars_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    bars: &[Vec<u32>],
    series: &[String],
) -> Result<(), ReportError> {
    let plot_err = |e: &dyn std::fmt::Display| ReportError::Plot {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let y_max = bars
        .iter()
        .map(|r| r.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height) = (800, 480);
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let (plot, legend) = root.split_horizontally(width - LEGEND_PX);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            -0.5..(bars.len() as f64 - 0.5),
            0.0..f64::from(y_max) * 1.05,
        )
        .map_err(|e| plot_err(&e))?;
    draw_mesh(
        &mut chart,
        (Axis::integer(x_label), bars.len().min(BAR_LABELS_MAX)),
        (Axis::integer(y_label), LABELS_DEFAULT),
    )
    .map_err(|e| plot_err(&e))?;
    let mut rects = Vec::new();
    for (i, row) in bars.iter().enumerate() {
        let mut base = 0.0;
        for (j, &n) in row.iter().enumerate() {
            let top = base + f64::from(n);
            let x = i as f64;
            let style = Palette99::pick(j).filled();
            rects.push(Rectangle::new([(x - 0.4, base), (x + 0.4, top)], style));
            base = top;
        }
    }
    chart.draw_series(rects).map_err(|e| plot_err(&e))?;
    draw_legend(&legend, series).map_err(|e| plot_err(&e))?;
    root.present().map_err(|e| plot_err(&e))
}

/// One row per series, top down from the level of the plot's top: its colour swatch, then its
/// name. Rows are 18 pixels apart, closer when that would run past the bottom.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[String],
) -> Result<(), String> {
    let top = 48;
    let height = i32::try_from(area.dim_in_pixel().1).map_err(|e| e.to_string())?;
    let rows = i32::try_from(series.len().max(1)).map_err(|e| e.to_string())?;
    let row = ((height - top) / rows).clamp(1, 18);
    for (j, name) in (0..).zip(series) {
        let y = top + row * j;
        let j = usize::try_from(j).map_err(|e| e.to_string())?;
        let swatch = Rectangle::new([(4, y), (16, y + 12)], Palette99::pick(j).filled());
        area.draw(&swatch).map_err(|e| e.to_string())?;
        let text = Text::new(name.as_str(), (22, y), ("sans-serif", 14).into_font());
        area.draw(&text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders into a fresh file of this process's temporary directory and returns the SVG.
    fn render(name: &str, draw: impl FnOnce(&Path) -> Result<(), ReportError>) -> String {
        let dir = std::env::temp_dir().join(format!("gradmesh-sim-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        draw(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        svg
    }

    /// The contents of every `<text>` element, in document order.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn integer_label_counts_stay_within_one_per_unit() {
        assert_eq!(integer_labels(&(0.0..0.3), 11), 1);
        assert_eq!(integer_labels(&(0.0..1.02), 11), 1);
        assert_eq!(integer_labels(&(0.0..4.08), 11), 4);
        assert_eq!(integer_labels(&(-0.5..29.5), 30), 30);
        assert_eq!(integer_labels(&(0.0..1e9), 11), 11);
        assert_eq!(integer_labels(&(0.0..f64::NAN), 11), 1);
    }

    #[test]
    fn integer_axes_print_whole_numbers_and_real_axes_keep_decimals() {
        for rounds in [1_u32, 2, 3, 7, 12, 20, 40, 99, 1_000] {
            let points: Vec<(f64, f64)> = (1..=rounds)
                .map(|r| (f64::from(r), f64::from(r % 5 + 1)))
                .collect();
            let whole_axes = |path: &Path| {
                let (x, y) = (Axis::integer("round"), Axis::integer("peers"));
                line_chart(path, "t", x, y, &points)
            };
            let ticks = texts(&render("int.svg", whole_axes));
            assert!(ticks.len() > 3, "{rounds} rounds: {ticks:?}");
            for tick in &ticks[3..] {
                assert!(tick.parse::<u64>().is_ok(), "{rounds} rounds: {ticks:?}");
            }
        }
        let points = [(1.0, 0.25), (2.0, 0.5)];
        let real_axes =
            |path: &Path| line_chart(path, "t", Axis::real("s"), Axis::real("v"), &points);
        let ticks = texts(&render("real.svg", real_axes));
        assert!(ticks[3..].iter().any(|t| t.contains('.')), "{ticks:?}");
    }

    #[test]
    fn stacked_bars_name_every_series_and_label_every_bar_with_an_integer() {
        let bars: Vec<Vec<u32>> = (0..30_u32).map(|i| vec![i, 30 - i, i % 7]).collect();
        let series = ["class 0", "class 1", "class 2"].map(str::to_owned);
        let draw = |path: &Path| stacked_bars_chart(path, "title", "client", "n", &bars, &series);
        let texts = texts(&render("bars.svg", draw));
        assert_eq!(texts[texts.len() - 3..], series, "{texts:?}");
        let ticks = &texts[3..texts.len() - 3];
        let numbers: Vec<u64> = ticks.iter().map(|t| t.parse().unwrap()).collect();
        for client in 0..30 {
            assert!(numbers.contains(&client), "client {client}: {ticks:?}");
        }
    }
}
