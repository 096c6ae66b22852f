//! `gradmesh demo`: a real mesh of `gradmesh node` processes on loopback training the digits
//! MLP synchronously, or (`--model transformer`) the small language model with DiLoCo. One node
//! is SIGKILLed in the middle of an all-reduce, a fresh node joins and syncs, and the demo ends
//! with a table per round and every survivor's final state digest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use gradmesh_kernels::TransformerConfig;
use gradmesh_node::cluster::Cluster;
use gradmesh_node::mesh::Report;
use serde::Serialize;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// What the mesh trains: the digits `mlp`, synchronously, or the byte-level `transformer`
    /// with DiLoCo on data/pycorpus.txt.
    #[arg(long, value_enum, default_value_t = DemoModel::Mlp)]
    model: DemoModel,
    /// The transformer's size (`gradmesh node --model-size`).
    #[arg(long, default_value = "small")]
    model_size: TransformerConfig,
    /// The transformer's inner steps per outer round.
    #[arg(long, default_value_t = 20)]
    inner_steps: u32,
    /// The transformer's nodes run their next inner phase while the mesh reduces
    /// (`gradmesh node --overlap`).
    #[arg(long)]
    overlap: bool,
    /// Founding node processes.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Rounds to train (default 300 for the MLP, which settles at 95–96 % test accuracy after
    /// ~200; 16 outer rounds for the transformer).
    #[arg(long)]
    rounds: Option<u64>,
    /// The round during whose all-reduce one node is killed (default 60, or 6 for the
    /// transformer).
    #[arg(long)]
    kill_at: Option<u64>,
    /// Examples (or text windows) per node per step (default 32, or 16 for the transformer).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Round timeout in seconds (the other protocol timeouts scale with it).
    #[arg(long, default_value_t = 4.0)]
    round_timeout: f64,
    /// Working directory for identities and logs (default: a fresh one under the system's
    /// temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// End with one machine-readable JSON summary line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoModel {
    Mlp,
    Transformer,
}

/// One round as the survivors saw it.
#[derive(Debug, Default, Clone, Serialize)]
struct RoundRow {
    round: u64,
    peers: usize,
    /// Inner steps behind the round, summed over the nodes that reported it.
    inner_steps: u64,
    loss: Option<f64>,
    validation_loss: Option<f32>,
    accuracy: Option<f64>,
    /// Training tokens (or examples) per second of compute, summed over the nodes.
    tokens_per_s: f64,
    seconds: f64,
    bytes: u64,
    note: String,
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
struct Summary {
    initial_validation_loss: Option<f32>,
    final_validation_loss: Option<f32>,
    final_accuracy: Option<f64>,
    /// The survivors' mean share of wall time spent computing (inner steps).
    compute_utilisation: Option<f64>,
    rounds: u64,
    outer_rounds: u64,
    kills: usize,
    joins: usize,
    killed_in_round: u64,
    joiner_synced_round: Option<u64>,
    joiner_first_commit: Option<u64>,
    survivors: Vec<Survivor>,
    digests_equal: bool,
    wall_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Survivor {
    peer: String,
    digest: String,
}

/// The demo's settings, with the defaults of the chosen model filled in.
struct Plan {
    lm: bool,
    rounds: u64,
    kill_at: u64,
    batch_size: usize,
    /// Tokens (or examples) behind one inner step of one node.
    per_step: usize,
}

impl Plan {
    fn of(args: &DemoArgs) -> anyhow::Result<Self> {
        let lm = args.model == DemoModel::Transformer;
        let rounds = args.rounds.unwrap_or(if lm { 16 } else { 300 });
        let kill_at = args.kill_at.unwrap_or(if lm { 6 } else { 60 });
        let batch_size = args.batch_size.unwrap_or(if lm { 16 } else { 32 });
        anyhow::ensure!(args.nodes >= 2, "the demo needs at least 2 nodes");
        anyhow::ensure!(
            kill_at + 4 < rounds,
            "--kill-at must leave at least 4 rounds to recover"
        );
        Ok(Self {
            lm,
            rounds,
            kill_at,
            batch_size,
            per_step: batch_size * if lm { args.model_size.context() } else { 1 },
        })
    }

    /// `gradmesh node` flags of the node training shard `shard`.
    fn node_flags(&self, args: &DemoArgs, shard: usize) -> Vec<String> {
        let n = args.nodes;
        let mut flags = vec![
            "--shard".into(),
            format!("{shard}/{n}"),
            "--batch-size".into(),
            self.batch_size.to_string(),
            "--round-timeout".into(),
            args.round_timeout.to_string(),
            "--genesis-quorum".into(),
            (n / 2 + 1).to_string(),
        ];
        if self.lm {
            flags.extend([
                "--model".into(),
                "transformer".into(),
                "--model-size".into(),
                args.model_size.to_string(),
                "--strategy".into(),
                "diloco".into(),
                "--inner-steps".into(),
                args.inner_steps.to_string(),
            ]);
            if args.overlap {
                flags.push("--overlap".into());
            }
        }
        flags
    }
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let plan = Plan::of(args)?;
    let Plan { lm, kill_at, .. } = plan;
    let started = Instant::now();
    let bin = std::env::current_exe().context("locating the gradmesh binary")?;
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("gradmesh-demo-{}", std::process::id()))
    });
    let mut cluster = Cluster::new(&bin, &dir)?;
    let n = args.nodes;
    let common = |shard: usize| plan.node_flags(args, shard);
    eprintln!(
        "demo: starting {n} nodes on loopback (logs in {})",
        dir.display()
    );
    cluster.spawn(&common(0))?;
    let first = cluster.address(0).context("node 0 address")?;
    for i in 1..n {
        let mut a = common(i);
        a.extend(["--bootstrap".into(), first.clone()]);
        cluster.spawn(&a)?;
    }
    let victim = n - 1;
    let (_, started_round) =
        cluster.wait_for(Duration::from_secs(300), "the kill round", |i, r| {
            i == victim && matches!(r, Report::RoundStarted { round, .. } if *round >= kill_at)
        })?;
    cluster.kill(victim)?;
    let killed_in_round = match started_round {
        Report::RoundStarted { round, .. } => round,
        _ => kill_at,
    };
    eprintln!("demo: SIGKILLed node {victim} during the all-reduce of round {killed_in_round}");
    let mut a = common(victim);
    a.extend(["--bootstrap".into(), first, "--join".into()]);
    let joiner = cluster.spawn(&a)?;
    eprintln!("demo: node {joiner} started and is joining");
    let survivors: Vec<usize> = (0..cluster.nodes().len())
        .filter(|&i| cluster.nodes()[i].is_running())
        .collect();
    let last = plan.rounds;
    // Every survivor holds one same state of a round past the last: committed it, or (a node
    // that missed a round) synced it; and the joiner has contributed (a joiner first hears the
    // mesh for an announce interval before it syncs, docs/protocol.md §3.5, while a fast mesh
    // may pass the last round meanwhile).
    let joiner_committed = |cluster: &Cluster| {
        cluster
            .history
            .iter()
            .any(|(i, r)| *i == joiner && matches!(r, Report::Committed { .. }))
    };
    while common_final_round(&cluster, &survivors, last).is_none() || !joiner_committed(&cluster) {
        cluster.wait_for(Duration::from_secs(300), "the last round", |i, r| {
            let past_last = matches!(r, Report::Committed { round, .. } | Report::Synced { round, .. }
                if *round > last);
            let joiner_commit = i == joiner && matches!(r, Report::Committed { .. });
            (past_last || joiner_commit) && survivors.contains(&i)
        })?;
    }
    cluster.shutdown();
    let (rows, summary) = summarize(
        &cluster,
        &survivors,
        killed_in_round,
        joiner,
        last,
        plan.per_step,
        started,
    );
    print!("{}", render(&rows, &summary, lm));
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    anyhow::ensure!(summary.digests_equal, "survivors hold different states");
    Ok(())
}

/// What the reports say, round by round.
#[derive(Debug, Default)]
struct Observed {
    rows: BTreeMap<u64, RoundRow>,
    synced: Option<u64>,
    first_commit: Option<u64>,
    /// The founders' held-out loss before training.
    initial_validation_loss: Option<f32>,
    /// Each node's compute utilisation at its last commit.
    utilisation: BTreeMap<usize, f64>,
}

fn observe(cluster: &Cluster, joiner: usize, per_step: usize) -> Observed {
    let mut seen = Observed::default();
    let mut losses: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for (i, report) in &cluster.history {
        match report {
            Report::Evaluated {
                round: 0,
                validation_loss,
                ..
            } => {
                seen.initial_validation_loss =
                    seen.initial_validation_loss.or(Some(*validation_loss));
            }
            Report::Committed {
                round,
                contributors,
                loss,
                accuracy,
                validation_loss,
                inner_steps,
                compute_seconds,
                utilisation,
                seconds,
                bytes_sent,
                ..
            } => {
                if let Some(u) = utilisation {
                    seen.utilisation.insert(*i, *u);
                }
                let row = seen.rows.entry(*round).or_default();
                row.round = *round;
                row.peers = row.peers.max(*contributors);
                row.accuracy = row.accuracy.or(*accuracy);
                row.validation_loss = row.validation_loss.or(*validation_loss);
                row.inner_steps += u64::from(*inner_steps);
                row.tokens_per_s += tokens_per_s(*inner_steps, *compute_seconds, per_step);
                row.seconds = row.seconds.max(*seconds);
                row.bytes += bytes_sent;
                losses
                    .entry(*round)
                    .or_default()
                    .extend(loss.map(f64::from));
                if *i == joiner {
                    seen.first_commit = seen.first_commit.or(Some(*round));
                }
            }
            Report::Synced { round, .. } if *i == joiner => {
                seen.synced = seen.synced.or(Some(*round));
            }
            Report::Aborted { round, reason } => {
                let row = seen.rows.entry(*round).or_default();
                row.round = *round;
                if row.note.is_empty() {
                    row.note = format!("aborted ({reason})");
                }
            }
            _ => {}
        }
    }
    for (round, l) in losses {
        if let Some(row) = seen.rows.get_mut(&round)
            && !l.is_empty()
        {
            #[allow(clippy::cast_precision_loss)]
            let mean = l.iter().sum::<f64>() / l.len() as f64;
            row.loss = Some(mean);
        }
    }
    seen
}

fn summarize(
    cluster: &Cluster,
    survivors: &[usize],
    killed_in_round: u64,
    joiner: usize,
    last: u64,
    per_step: usize,
    started: Instant,
) -> (Vec<RoundRow>, Summary) {
    let mut seen = observe(cluster, joiner, per_step);
    if let Some(row) = seen.rows.get_mut(&killed_in_round) {
        row.note = format!(
            "a node was SIGKILLed in this round's all-reduce {}",
            row.note
        );
    }
    if let Some(row) = seen.synced.and_then(|r| seen.rows.get_mut(&r)) {
        row.note.push_str(" the joiner synced this state");
    }
    let final_round = common_final_round(cluster, survivors, last);
    // The digest node `i` reported for the state of `round` (committed or synced).
    let digest_of = |i: usize, round: u64| {
        cluster.history.iter().find_map(|(j, r)| match r {
            Report::Committed {
                round: q, digest, ..
            }
            | Report::Synced { round: q, digest }
                if *j == i && *q == round =>
            {
                Some(digest.clone())
            }
            _ => None,
        })
    };
    let survivors_out: Vec<Survivor> = survivors
        .iter()
        .map(|&i| Survivor {
            peer: cluster.nodes()[i].peer.clone().unwrap_or_default(),
            digest: final_round
                .and_then(|r| digest_of(i, r))
                .unwrap_or_default(),
        })
        .collect();
    let digests_equal = survivors_out
        .windows(2)
        .all(|w| w[0].digest == w[1].digest && !w[0].digest.is_empty());
    let final_row = final_round.and_then(|r| seen.rows.get(&r));
    let summary = Summary {
        initial_validation_loss: seen.initial_validation_loss,
        final_validation_loss: final_row.and_then(|r| r.validation_loss),
        final_accuracy: final_row.and_then(|r| r.accuracy),
        compute_utilisation: mean(survivors.iter().filter_map(|i| seen.utilisation.get(i))),
        rounds: final_round.unwrap_or(last),
        outer_rounds: final_round.unwrap_or(last),
        kills: 1,
        joins: 1,
        killed_in_round,
        joiner_synced_round: seen.synced,
        joiner_first_commit: seen.first_commit,
        survivors: survivors_out,
        digests_equal,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let rows = seen
        .rows
        .into_values()
        .filter(|r| r.round <= last)
        .collect();
    (rows, summary)
}

fn render(rows: &[RoundRow], summary: &Summary, lm: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:>5}  {:>5}  {:>7}  {:>8}  {:>8}  {:>8}  {:>7}  {:>9}  note",
        "round",
        "peers",
        "steps",
        "loss",
        "held-out",
        "accuracy",
        if lm { "tokens/s" } else { "ex/s" },
        "seconds",
        "bytes"
    );
    for r in rows {
        let interesting = lm || r.round % 10 == 0 || r.round <= 3 || !r.note.trim().is_empty();
        if !interesting {
            continue;
        }
        let loss = r.loss.map_or("-".into(), |l| format!("{l:.4}"));
        let held_out = r.validation_loss.map_or("-".into(), |l| format!("{l:.4}"));
        let acc = r
            .accuracy
            .map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
        let _ = writeln!(
            out,
            "{:>5}  {:>5}  {:>5}  {:>7}  {:>8}  {:>8}  {:>8.0}  {:>7.3}  {:>9}  {}",
            r.round,
            r.peers,
            r.inner_steps,
            loss,
            held_out,
            acc,
            r.tokens_per_s,
            r.seconds,
            r.bytes,
            r.note.trim()
        );
    }
    render_summary(&mut out, summary);
    out
}

/// The lines under the table: losses, the kill and the join, the survivors' digests.
fn render_summary(out: &mut String, summary: &Summary) {
    let _ = writeln!(
        *out,
        "\nheld-out loss: {} before training, {} at the end",
        summary
            .initial_validation_loss
            .map_or("-".into(), |l| format!("{l:.4}")),
        summary
            .final_validation_loss
            .map_or("-".into(), |l| format!("{l:.4}"))
    );
    let _ = writeln!(
        *out,
        "compute utilisation (time computing ÷ wall time, mean over survivors): {}",
        summary
            .compute_utilisation
            .map_or("-".into(), |u| format!("{:.1}%", 100.0 * u))
    );
    let _ = writeln!(
        *out,
        "killed during round {}; joiner synced round {}, first committed round {}",
        summary.killed_in_round,
        round_or_none(summary.joiner_synced_round),
        round_or_none(summary.joiner_first_commit)
    );
    let _ = writeln!(
        *out,
        "final test accuracy: {}",
        summary
            .final_accuracy
            .map_or("-".into(), |a| format!("{:.2}%", 100.0 * a))
    );
    for s in &summary.survivors {
        let _ = writeln!(
            out,
            "survivor {}  digest {}",
            &s.peer[..8.min(s.peer.len())],
            s.digest
        );
    }
    let _ = writeln!(
        *out,
        "survivor digests equal: {}   ({:.1} s)",
        summary.digests_equal, summary.wall_seconds
    );
}

/// The first round past `last` whose state every survivor reported holding (committed or
/// synced). Round ids count attempts (an attempt may abort everywhere) and a node that missed a
/// round syncs over it, so the survivors' rounds need not line up.
fn common_final_round(cluster: &Cluster, survivors: &[usize], last: u64) -> Option<u64> {
    let mut held: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, report) in &cluster.history {
        if let Report::Committed { round, .. } | Report::Synced { round, .. } = report
            && *round > last
            && survivors.contains(i)
        {
            held.entry(*round).or_default().push(*i);
        }
    }
    held.into_iter()
        .find(|(_, nodes)| survivors.iter().all(|s| nodes.contains(s)))
        .map(|(round, _)| round)
}

/// The mean of `values`, `None` when there are none.
fn mean<'a>(values: impl Iterator<Item = &'a f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0_u32), |(s, n), v| (s + v, n + 1));
    (count > 0).then(|| sum / f64::from(count))
}

/// Training tokens (or examples) per second of a contribution of `inner_steps` steps (1 when
/// synchronous) that took `seconds` to compute.
fn tokens_per_s(inner_steps: u32, seconds: f64, per_step: usize) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)] // Token counts far below 2^52.
    let tokens = (u64::from(inner_steps.max(1)) * per_step as u64) as f64;
    tokens / seconds
}

/// A round number, or "none" when the event never happened.
fn round_or_none(round: Option<u64>) -> String {
    round.map_or_else(|| "none".to_owned(), |r| r.to_string())
}
