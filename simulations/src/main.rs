//! `gradmesh-sim`: validate the collective models, run scenarios, benchmark scale.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gradmesh_sim::bench::{self, BenchConfig, BenchShape};
use gradmesh_sim::collective::Algorithm;
#[cfg(feature = "fl")]
use gradmesh_sim::fl;
use gradmesh_sim::mesh::{self, MeshSpec};
use gradmesh_sim::net::RecomputeScope;
use gradmesh_sim::scenario::Scenario;
use gradmesh_sim::{report, runner, validate};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "gradmesh-sim",
    version,
    about = "gradmesh's discrete-event network simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print simulated all-reduce times against the α-β closed forms (p = 4..1024, 1 MB..1 GB).
    Validate,
    /// Run a scenario; write rounds.csv and SVG plots into --out.
    Run {
        /// The scenario TOML file.
        scenario: PathBuf,
        /// Master seed (mandatory: the same seed gives byte-identical outputs).
        #[arg(long)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Predict one all-reduce of F floats among N peers on identical links, e.g. namespaces
    /// shaped by `scripts/netns.sh up N RATE_MBIT`, to compare with a real run.
    PredictAllreduce {
        /// Peers.
        #[arg(long)]
        peers: usize,
        /// Floats in the vector (4 bytes each).
        #[arg(long)]
        floats: u64,
        /// Shaped rate per peer and direction in Mbit/s.
        #[arg(long)]
        mbit_s: f64,
        /// Fraction of the shaped rate that carries payload (TCP/IP headers, framing): measured
        /// 0.95–0.97 through `tc tbf` here, see docs/simulator.md.
        #[arg(long, default_value_t = 0.956)]
        efficiency: f64,
        /// One-way latency in ms (veth and bridge add tens of microseconds).
        #[arg(long, default_value_t = 0.05)]
        latency_ms: f64,
        /// ring, butterfly or all-to-all.
        #[arg(long, default_value = "butterfly")]
        algorithm: String,
    },
    /// Run a federated-learning scenario on the digits set; write fl_rounds.csv, partition.csv
    /// and accuracy plots into --out. (Trains with LibTorch: needs the default `fl` feature.)
    #[cfg(feature = "fl")]
    Fl {
        /// The federated scenario TOML file (see simulations/scenarios/fl/).
        scenario: PathBuf,
        /// Master seed (mandatory: the same seed gives byte-identical outputs).
        #[arg(long)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// The digits set written by scripts/setup.sh.
        #[arg(long, default_value = "data/digits.safetensors")]
        data: PathBuf,
        /// Label-histogram rows to print (clients).
        #[arg(long, default_value_t = 10)]
        histogram_rows: usize,
    },
    /// Time a large homogeneous run: global butterfly and Moshpit groups.
    BenchScale {
        /// Peers.
        #[arg(long, default_value_t = 10_000)]
        peers: u32,
        /// Rounds per shape.
        #[arg(long, default_value_t = 10)]
        rounds: u32,
        /// Bytes all-reduced per round.
        #[arg(long, default_value_t = 100_000_000)]
        bytes: u64,
        /// Moshpit group sizes to compare.
        #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
        groups: Vec<u32>,
        /// Skip the global butterfly.
        #[arg(long)]
        no_butterfly: bool,
        /// Access bandwidth per direction in Mbit/s.
        #[arg(long, default_value_t = 1000.0)]
        mbit_s: f64,
        /// Per-endpoint latency share in ms (one-way latency is twice this).
        #[arg(long, default_value_t = 10.0)]
        latency_ms: f64,
        /// Master seed (the benchmark is deterministic; this fixes it explicitly).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Recompute max-min rates over all flows at every change (to measure the saving of the
        /// default connected-component scope).
        #[arg(long)]
        global_recompute: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Validate => run_validate(),
        Command::Run {
            scenario,
            seed,
            out,
        } => run_scenario(&scenario, seed, &out),
        Command::PredictAllreduce {
            peers,
            floats,
            mbit_s,
            efficiency,
            latency_ms,
            algorithm,
        } => predict_allreduce(peers, floats, mbit_s * efficiency, latency_ms, &algorithm),
        #[cfg(feature = "fl")]
        Command::Fl {
            scenario,
            seed,
            out,
            data,
            histogram_rows,
        } => run_fl(&scenario, seed, &out, &data, histogram_rows),
        Command::BenchScale {
            peers,
            rounds,
            bytes,
            groups,
            no_butterfly,
            mbit_s,
            latency_ms,
            seed,
            global_recompute,
        } => {
            let cfg = BenchConfig {
                peers,
                rounds,
                bytes,
                mbit_s,
                latency_ms,
                step_s: 0.0,
                seed,
                scope: if global_recompute {
                    RecomputeScope::Global
                } else {
                    RecomputeScope::Component
                },
            };
            let mut shapes: Vec<BenchShape> = groups.into_iter().map(BenchShape::Moshpit).collect();
            if !no_butterfly {
                shapes.insert(0, BenchShape::Butterfly);
            }
            run_bench(&cfg, &shapes)
        }
    }
}

fn run_validate() -> anyhow::Result<()> {
    let started = Instant::now();
    let rows = validate::run_grid(&validate::full_grid()).context("validation grid")?;
    print!("{}", validate::format_table(&rows));
    let worst = rows
        .iter()
        .map(validate::ValidationRow::relative_error)
        .fold(0.0, f64::max);
    println!(
        "alpha = {} s one-way, bandwidth = {} B/s per direction; worst error {:.4}%; wall {:.1} s",
        validate::ALPHA_S,
        validate::BANDWIDTH_BYTES_PER_S,
        100.0 * worst,
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        worst < 0.05,
        "a simulated time is off its closed form by more than 5%"
    );
    Ok(())
}

fn run_scenario(path: &std::path::Path, seed: u64, out: &std::path::Path) -> anyhow::Result<()> {
    let scenario =
        Scenario::from_file(path).with_context(|| format!("scenario {}", path.display()))?;
    let bar = progress_bar(scenario.rounds())?;
    if let Some(spec) = scenario.mesh_spec() {
        return run_protocol_scenario(&scenario, &spec, seed, out, &bar);
    }
    let summary = runner::run(&scenario, seed, |r| {
        bar.inc(1);
        bar.set_message(format!("t = {:.1} s", r.end_s));
    });
    bar.finish_and_clear();
    report::write_all(out, &summary.records).context("writing outputs")?;
    let aborts: u32 = summary.records.iter().map(|r| r.aborts).sum();
    let resyncs: u32 = summary.records.iter().map(|r| r.resyncs).sum();
    println!(
        "{}: seed {seed}, {} of {} rounds ({:?}), simulated {}, {} events, {} aborts, {} resyncs, \
         {} messages delivered; outputs in {}",
        scenario.name(),
        summary.records.len(),
        scenario.rounds(),
        summary.stop,
        summary.sim_time,
        summary.events,
        aborts,
        resyncs,
        summary.net.delivered,
        out.display()
    );
    Ok(())
}

fn predict_allreduce(
    peers: usize,
    floats: u64,
    goodput_mbit_s: f64,
    latency_ms: f64,
    algorithm: &str,
) -> anyhow::Result<()> {
    let algorithm = match algorithm {
        "ring" => Algorithm::Ring,
        "butterfly" => Algorithm::Butterfly,
        "all-to-all" => Algorithm::AllToAll,
        other => anyhow::bail!("unknown algorithm {other:?} (ring, butterfly, all-to-all)"),
    };
    anyhow::ensure!(peers >= 2, "need at least 2 peers");
    let link = validate::Link {
        bytes_per_s: goodput_mbit_s * 1e6 / 8.0,
        one_way_latency_s: latency_ms / 1e3,
    };
    let bytes = floats * 4;
    let row = validate::simulate_on(algorithm, peers, bytes, link).context("simulating")?;
    println!(
        "predict-allreduce: {} among {peers} peers, {floats} floats ({bytes} bytes), \
         {goodput_mbit_s:.2} Mbit/s goodput per direction, {latency_ms} ms one-way",
        algorithm.name()
    );
    println!(
        "simulated {:.6} s, alpha-beta closed form {:.6} s, {} events",
        row.simulated_s, row.closed_form_s, row.events
    );
    Ok(())
}

fn progress_bar(rounds: u32) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(u64::from(rounds));
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rounds, {msg}")
            .context("progress template")?,
    );
    Ok(bar)
}

fn run_protocol_scenario(
    scenario: &Scenario,
    spec: &MeshSpec,
    seed: u64,
    out: &std::path::Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let run = mesh::run(spec, seed, |n, now| {
        bar.set_position(n as u64);
        bar.set_message(format!("t = {:.1} s", now.as_secs_f64()));
    });
    bar.finish_and_clear();
    report::write_all(out, &run.records).context("writing outputs")?;
    let c = &run.counts;
    println!(
        "{} (protocol): seed {seed}, {} of {} rounds committed, simulated {}, {} events, \
         {} peer commits, {} aborts, {} resyncs, {} kills, {} joins, {} messages delivered, \
         {:.1} MB sent; outputs in {}",
        scenario.name(),
        run.records.len(),
        scenario.rounds(),
        run.sim_time,
        run.events,
        c.commits,
        c.aborts,
        c.resyncs,
        c.kills,
        c.joins,
        run.net.delivered,
        c.bytes_sent as f64 / 1e6,
        out.display()
    );
    println!(
        "invariants: {}{}",
        run.verdict
            .violation
            .as_ref()
            .map_or_else(|| "no violation".to_owned(), |v| format!("VIOLATION {v:?}")),
        if run.verdict.halted_by_design {
            " (halted by design: a majority of the last committee is gone)"
        } else {
            ""
        }
    );
    if !run.verdict.starved.is_empty() {
        println!(
            "starved: {} long-lived peers contributed to no commit in the last part of the run",
            run.verdict.starved.len()
        );
    }
    if let Some(stalled) = &run.verdict.stalled {
        println!("liveness: {stalled}");
    }
    anyhow::ensure!(
        run.verdict.violation.is_none() && run.verdict.survivors_differ.is_none(),
        "a protocol invariant was violated: {:?}",
        run.verdict.survivors_differ
    );
    Ok(())
}

/// A benchmark criterion: lower is better.
type Criterion<'a> = &'a dyn Fn(&bench::BenchOutcome) -> f64;

/// Which shape wins on each criterion (ties go to the earlier shape).
fn print_winners(outcomes: &[bench::BenchOutcome]) {
    let best = |key: Criterion<'_>| {
        outcomes
            .iter()
            .min_by(|a, b| key(a).total_cmp(&key(b)))
            .map(|o| (o.shape.label(), key(o)))
    };
    let criteria: [(&str, Criterion<'_>, f64); 3] = [
        ("fastest round", &|o| o.round_s_mean, 1.0),
        (
            "fastest to the global mean",
            &bench::BenchOutcome::time_to_global_mean_s,
            1.0,
        ),
        (
            "fewest bytes per peer to the global mean",
            &bench::BenchOutcome::bytes_to_global_mean,
            1e-6,
        ),
    ];
    for (name, key, scale) in criteria {
        if let Some((label, value)) = best(key) {
            let unit = if scale < 1.0 { "MB" } else { "s" };
            println!("{name}: {label} ({:.3} {unit})", value * scale);
        }
    }
}

#[cfg(feature = "fl")]
fn run_fl(
    path: &std::path::Path,
    seed: u64,
    out: &std::path::Path,
    data: &std::path::Path,
    histogram_rows: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let scenario =
        fl::FlScenario::from_file(path).with_context(|| format!("scenario {}", path.display()))?;
    let bar = ProgressBar::new(u64::from(scenario.rounds()));
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rounds, {msg}")
            .context("progress template")?,
    );
    let summary = fl::run(&scenario, seed, data, |r| {
        bar.inc(1);
        bar.set_message(format!(
            "t = {:.1} s, accuracy {:.2} %",
            r.sim_time_s,
            100.0 * r.accuracy
        ));
    })
    .context("federated run")?;
    bar.finish_and_clear();
    fl::write_all(out, &summary).context("writing outputs")?;
    print!("{}", summary.histogram.table(histogram_rows));
    if let Some(share) = summary.histogram.mean_max_class_share() {
        println!("mean max-class share over non-empty clients: {share:.3}");
    }
    let last = summary.records.last();
    let best = summary
        .records
        .iter()
        .map(|r| r.accuracy)
        .fold(0.0, f64::max);
    let dropped: usize = summary.records.iter().map(|r| r.dropped).sum();
    let samples: u64 = summary.records.iter().map(|r| r.samples).sum();
    println!(
        "{}: strategy {}, {} clients, seed {seed}: {} rounds, simulated {:.1} s, test accuracy {:.2} % \
         (initial {:.2} %, best {:.2} %), {} samples trained, {} clients dropped, {} events, \
         wall {:.1} s; outputs in {}",
        scenario.name(),
        fl::strategy_name(&scenario),
        scenario.clients(),
        summary.records.len(),
        last.map_or(0.0, |r| r.sim_time_s),
        100.0 * last.map_or(0.0, |r| r.accuracy),
        100.0 * summary.initial_accuracy,
        100.0 * best,
        samples,
        dropped,
        summary.events,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// Peak resident set size of this process in KiB (`VmHWM`), if readable.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets `VmHWM` so each shape reports its own peak (Linux `clear_refs` value 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn run_bench(cfg: &BenchConfig, shapes: &[BenchShape]) -> anyhow::Result<()> {
    println!(
        "bench-scale: {} peers, {} rounds, {} bytes, {} Mbit/s, {} ms one-way, seed {}",
        cfg.peers,
        cfg.rounds,
        cfg.bytes,
        cfg.mbit_s,
        2.0 * cfg.latency_ms,
        cfg.seed
    );
    println!(
        "{:<20} {:>8} {:>12} {:>12} {:>10} {:>11} {:>11} {:>8} {:>12} {:>9} {:>12} {:>10} {:>10}",
        "shape",
        "wall_s",
        "events",
        "events/s",
        "flows_peak",
        "round_s",
        "peak_rss_MB",
        "rounds",
        "to_mean_s",
        "recomp",
        "visits",
        "MB_round",
        "MB_to_mean"
    );
    let mut outcomes = Vec::with_capacity(shapes.len());
    for &shape in shapes {
        reset_peak_rss();
        let started = Instant::now();
        let outcome = bench::run(cfg, shape).context("bench scenario")?;
        let wall_s = started.elapsed().as_secs_f64();
        let s = &outcome.summary;
        println!(
            "{:<20} {:>8.2} {:>12} {:>12.0} {:>10} {:>11.3} {:>11.1} {:>8} {:>12.3} {:>9} {:>12} {:>10.1} {:>10.1}",
            shape.label(),
            wall_s,
            s.events,
            s.events as f64 / wall_s,
            s.net.flows_peak,
            outcome.round_s_mean,
            peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
            outcome.rounds_to_global_mean,
            outcome.time_to_global_mean_s(),
            s.net.recomputes,
            s.net.recompute_visits,
            outcome.bytes_per_peer_mean / 1e6,
            outcome.bytes_to_global_mean() / 1e6
        );
        outcomes.push(outcome);
    }
    print_winners(&outcomes);
    let (secs, flows) = bench::global_all_to_all_estimate(cfg);
    println!(
        "global all-to-all (not simulated): {flows} flows per round, alpha-beta time {secs:.3} s \
         per round"
    );
    Ok(())
}
