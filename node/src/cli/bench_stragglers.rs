//! `gradmesh bench stragglers`: N node processes on loopback train the byte-level transformer
//! synchronously while one of them runs under a CPU quota (a cgroup), first one batch per round
//! and then with a time budget per contribution (`--compute-time`), in the same run; prints each
//! run's mesh rate (examples and rounds per second) and the slow node's share of the examples,
//! the rounds it contributed to and those it only observed (issue 18, item 4).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use gradmesh_node::cluster::{Cluster, ClusterError};
use gradmesh_node::mesh::Report;
use serde::Serialize;

#[derive(Debug, Args)]
pub(crate) struct StragglersArgs {
    /// Node processes; the last one is the slow node.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The slow node's CPU quota, in cores (a cgroup's `cpu.max`; 0.25 = a quarter of one core).
    /// Needs root to create the cgroup.
    #[arg(long, default_value_t = 0.25)]
    slow_cpus: f64,
    /// The time budget per contribution of the second run (`gradmesh node --compute-time`).
    #[arg(long, default_value = "0.5", value_parser = super::node::seconds)]
    compute_time: Duration,
    /// How long a round's leader waits for late nodes (`gradmesh node --collect-window`; the
    /// node's default when not given).
    #[arg(long, value_parser = super::node::seconds)]
    collect_window: Option<Duration>,
    /// Measured seconds of each run, after every node committed a warm-up round.
    #[arg(long, default_value_t = 45)]
    seconds: u64,
    /// The transformer's size (`gradmesh node --model-size`).
    #[arg(long, default_value = "tiny")]
    model_size: String,
    /// Text windows per batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// The text corpus (`gradmesh node --data`).
    #[arg(long, default_value = "data/corpus.txt")]
    data: PathBuf,
    /// Print one JSON line with both runs' figures at the end.
    #[arg(long)]
    json: bool,
}

/// What one run measured, over its measured window.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    run: String,
    seconds: f64,
    /// Rounds committed (as seen by node 0) per second.
    rounds_per_s: f64,
    /// Examples averaged into committed rounds per second, over all nodes.
    examples_per_s: f64,
    /// The slow node's share of those examples.
    slow_share: f64,
    /// Rounds the slow node contributed to, and rounds it only observed.
    slow_contributed: u64,
    slow_observed: u64,
    /// Whole-state syncs the slow node made (a straggler left out of a roster must resync).
    slow_syncs: u64,
    /// Examples per compute-second of the slow node ÷ the same of the fast nodes: the measured
    /// slowdown.
    slow_speed: f64,
}

pub(crate) fn run(args: &StragglersArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes >= 2,
        "--nodes {} is too few: the bench needs at least 2 (one of them slow)",
        args.nodes
    );
    anyhow::ensure!(
        args.slow_cpus > 0.0,
        "--slow-cpus must be above 0 (0.25 is a quarter of one core)"
    );
    anyhow::ensure!(
        args.data.is_file(),
        "no corpus at {}: run `make setup`, or give --data FILE",
        args.data.display()
    );
    let quota = Quota::create(args.slow_cpus)?;
    let mut runs = Vec::new();
    for budget in [None, Some(args.compute_time)] {
        let name = budget.map_or_else(
            || "one batch per round".to_owned(),
            |b| format!("--compute-time {}", b.as_secs_f64()),
        );
        let dir = std::env::temp_dir().join(format!(
            "gradmesh-bench-stragglers-{}-{}",
            std::process::id(),
            runs.len()
        ));
        let figures = measure(args, &quota, budget, &name, &dir)
            .with_context(|| format!("node logs are in {}", dir.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
        print_figures(&figures);
        runs.push(figures);
    }
    if args.json {
        println!("{}", serde_json::json!({ "runs": runs }));
    }
    Ok(())
}

fn print_figures(f: &Figures) {
    println!(
        "{}: {:.2} rounds/s, {:.1} examples/s; slow node ({:.2}x the fast nodes' speed): \
         {:.1} % of the examples, contributed to {} rounds, observed {}, {} state syncs \
         ({:.0} s measured)",
        f.run,
        f.rounds_per_s,
        f.examples_per_s,
        f.slow_speed,
        100.0 * f.slow_share,
        f.slow_contributed,
        f.slow_observed,
        f.slow_syncs,
        f.seconds,
    );
}

fn measure(
    args: &StragglersArgs,
    quota: &Quota,
    budget: Option<Duration>,
    name: &str,
    dir: &Path,
) -> anyhow::Result<Figures> {
    let mut cluster = Cluster::new(&std::env::current_exe()?, dir)?;
    let common = node_args(args, budget);
    cluster.spawn(&common)?;
    let boot = cluster.address(0).context("node 0 has no address")?;
    for _ in 1..args.nodes {
        let mut a = common.clone();
        a.extend(["--bootstrap".into(), boot.clone()]);
        cluster.spawn(&a)?;
    }
    let slow = args.nodes - 1;
    let pid = cluster.nodes()[slow]
        .pid()
        .context("the slow node is not running")?;
    quota.admit(pid)?;
    // Warm-up: until every node committed a round.
    let mut warm = vec![false; args.nodes];
    while !warm.iter().all(|w| *w) {
        let (i, _) = cluster.wait_for(Duration::from_secs(300), "a warm-up round", |_, r| {
            matches!(r, Report::Committed { .. })
        })?;
        warm[i] = true;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut tally = Tally::default();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match cluster.wait_for(left, "reports", |_, _| true) {
            Ok((i, report)) => tally.add(i == slow, i == 0, &report),
            Err(ClusterError::Timeout(..)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    cluster.shutdown();
    Ok(tally.figures(name, start.elapsed().as_secs_f64()))
}

/// The flags of every node of a run.
fn node_args(args: &StragglersArgs, budget: Option<Duration>) -> Vec<String> {
    let mut common: Vec<String> = [
        "--model",
        "transformer",
        "--model-size",
        &args.model_size,
        "--strategy",
        "sync",
        "--batch-size",
        &args.batch_size.to_string(),
        "--threads",
        "1",
        "--seed",
        "1",
        "--genesis-quorum",
        &args.nodes.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    common.extend(["--data".to_owned(), args.data.display().to_string()]);
    if let Some(budget) = budget {
        common.extend(["--compute-time".into(), budget.as_secs_f64().to_string()]);
    }
    if let Some(window) = args.collect_window {
        common.extend(["--collect-window".into(), window.as_secs_f64().to_string()]);
    }
    common
}

/// Counts over the measured window; index 0 the fast nodes, 1 the slow one.
#[derive(Debug, Default)]
struct Tally {
    examples: [u64; 2],
    compute_seconds: [f64; 2],
    rounds: u64,
    contributed: u64,
    observed: u64,
    syncs: u64,
}

impl Tally {
    #[allow(clippy::cast_precision_loss)]
    fn figures(&self, run: &str, seconds: f64) -> Figures {
        let total = (self.examples[0] + self.examples[1]) as f64;
        let speed = |i: usize| self.examples[i] as f64 / self.compute_seconds[i].max(1e-9);
        Figures {
            run: run.to_owned(),
            seconds,
            rounds_per_s: self.rounds as f64 / seconds,
            examples_per_s: total / seconds,
            slow_share: self.examples[1] as f64 / total.max(1.0),
            slow_contributed: self.contributed,
            slow_observed: self.observed,
            slow_syncs: self.syncs,
            slow_speed: speed(1) / speed(0).max(1e-9),
        }
    }

    fn add(&mut self, slow: bool, first: bool, report: &Report) {
        let k = usize::from(slow);
        match report {
            Report::Committed {
                examples,
                compute_seconds,
                ..
            } => {
                if first {
                    self.rounds += 1;
                }
                if let Some(n) = examples {
                    self.examples[k] += u64::from(*n);
                    self.compute_seconds[k] += compute_seconds;
                }
                if slow {
                    match examples {
                        Some(_) => self.contributed += 1,
                        None => self.observed += 1,
                    }
                }
            }
            Report::Synced { .. } if slow => self.syncs += 1,
            _ => {}
        }
    }
}

/// A cgroup limiting the processes admitted to it to a share of the CPUs (cgroup v2's
/// `cpu.max`, or v1's `cpu.cfs_quota_us`), removed when dropped.
struct Quota {
    dir: PathBuf,
    procs: PathBuf,
}

impl Quota {
    const PERIOD_US: u64 = 100_000;

    fn create(cpus: f64) -> anyhow::Result<Self> {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let quota_us = (cpus * Self::PERIOD_US as f64).round().max(1000.0) as u64;
        let name = format!("gradmesh-slow-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dir = if v2 {
            Path::new("/sys/fs/cgroup").join(&name)
        } else {
            Path::new("/sys/fs/cgroup/cpu").join(&name)
        };
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "cannot create the cgroup {} that slows one node: run the bench as root",
                dir.display()
            )
        })?;
        let quota = Self {
            procs: dir.join("cgroup.procs"),
            dir,
        };
        let (file, value) = if v2 {
            ("cpu.max", format!("{quota_us} {}", Self::PERIOD_US))
        } else {
            std::fs::write(
                quota.dir.join("cpu.cfs_period_us"),
                Self::PERIOD_US.to_string(),
            )?;
            ("cpu.cfs_quota_us", quota_us.to_string())
        };
        std::fs::write(quota.dir.join(file), value)
            .with_context(|| format!("setting {} in {}", file, quota.dir.display()))?;
        Ok(quota)
    }

    fn admit(&self, pid: u32) -> anyhow::Result<()> {
        std::fs::write(&self.procs, pid.to_string())
            .with_context(|| format!("moving process {pid} into {}", self.dir.display()))
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        // Empty once its processes exited; a cgroup directory is removed with rmdir.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed round's report with `examples` behind it.
    fn committed(examples: Option<u32>, compute_seconds: f64) -> Report {
        Report::Committed {
            round: 1,
            contributors: 2,
            loss: None,
            accuracy: None,
            validation_loss: None,
            inner_steps: 0,
            examples,
            compute_seconds,
            utilisation: None,
            seconds: 0.1,
            bytes_sent: 0,
            bytes_received: 0,
            digest: String::new(),
            phases: None,
        }
    }

    #[test]
    fn the_tally_splits_examples_and_rounds_between_fast_and_slow_nodes() {
        let mut t = Tally::default();
        t.add(false, true, &committed(Some(24), 0.3));
        t.add(false, false, &committed(Some(24), 0.3));
        t.add(true, false, &committed(Some(8), 0.4));
        t.add(true, false, &committed(None, 0.0));
        t.add(
            true,
            false,
            &Report::Synced {
                round: 2,
                digest: String::new(),
            },
        );
        assert_eq!(t.rounds, 1);
        assert_eq!(t.examples, [48, 8]);
        assert_eq!((t.contributed, t.observed, t.syncs), (1, 1, 1));
    }
}
