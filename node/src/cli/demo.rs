//! `gradmesh demo`: a real mesh of `gradmesh node` processes on loopback training the digits
//! MLP. One node is SIGKILLed in the middle of an all-reduce, a fresh node joins and syncs, and
//! the demo ends with a table per round and every survivor's final state digest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use gradmesh_node::cluster::Cluster;
use gradmesh_node::mesh::Report;
use serde::Serialize;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Founding node processes.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Rounds to train (the MLP settles at 95–96 % test accuracy after ~200).
    #[arg(long, default_value_t = 300)]
    rounds: u64,
    /// The round during whose all-reduce one node is killed.
    #[arg(long, default_value_t = 60)]
    kill_at: u64,
    /// Examples per node per round.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
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

/// One round as the survivors saw it.
#[derive(Debug, Default, Clone, Serialize)]
struct RoundRow {
    round: u64,
    peers: usize,
    loss: Option<f64>,
    accuracy: Option<f64>,
    seconds: f64,
    bytes: u64,
    note: String,
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
struct Summary {
    final_accuracy: Option<f64>,
    rounds: u64,
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

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 2, "the demo needs at least 2 nodes");
    anyhow::ensure!(
        args.kill_at + 10 < args.rounds,
        "--kill-at must leave rounds to recover"
    );
    let started = Instant::now();
    let bin = std::env::current_exe().context("locating the gradmesh binary")?;
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("gradmesh-demo-{}", std::process::id()))
    });
    let mut cluster = Cluster::new(&bin, &dir)?;
    let n = args.nodes;
    let common = |shard: usize| -> Vec<String> {
        vec![
            "--shard".into(),
            format!("{shard}/{n}"),
            "--batch-size".into(),
            args.batch_size.to_string(),
            "--round-timeout".into(),
            args.round_timeout.to_string(),
            "--genesis-quorum".into(),
            (n / 2 + 1).to_string(),
        ]
    };
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
    let kill_at = args.kill_at;
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
    let last = args.rounds;
    let mut done = std::collections::BTreeSet::new();
    while done.len() < survivors.len() {
        let (i, _) = cluster.wait_for(Duration::from_secs(300), "the last round", |i, r| {
            matches!(r, Report::Committed { round, .. } if *round > last) && survivors.contains(&i)
        })?;
        done.insert(i);
    }
    cluster.shutdown();
    let (rows, summary) = summarize(&cluster, &survivors, killed_in_round, joiner, last, started);
    print!("{}", render(&rows, &summary));
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
    /// Per node, its digests of rounds `≥ last`.
    final_digest: BTreeMap<usize, BTreeMap<u64, String>>,
    synced: Option<u64>,
    first_commit: Option<u64>,
}

fn observe(cluster: &Cluster, joiner: usize, last: u64) -> Observed {
    let mut seen = Observed::default();
    let mut losses: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for (i, report) in &cluster.history {
        match report {
            Report::Committed {
                round,
                contributors,
                loss,
                accuracy,
                seconds,
                bytes_sent,
                digest,
                ..
            } => {
                let row = seen.rows.entry(*round).or_default();
                row.round = *round;
                row.peers = row.peers.max(*contributors);
                row.accuracy = row.accuracy.or(*accuracy);
                row.seconds = row.seconds.max(*seconds);
                row.bytes += bytes_sent;
                losses
                    .entry(*round)
                    .or_default()
                    .extend(loss.map(f64::from));
                if *round >= last {
                    seen.final_digest
                        .entry(*i)
                        .or_default()
                        .insert(*round, digest.clone());
                }
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
    started: Instant,
) -> (Vec<RoundRow>, Summary) {
    let mut seen = observe(cluster, joiner, last);
    if let Some(row) = seen.rows.get_mut(&killed_in_round) {
        row.note = format!(
            "a node was SIGKILLed in this round's all-reduce {}",
            row.note
        );
    }
    if let Some(row) = seen.synced.and_then(|r| seen.rows.get_mut(&r)) {
        row.note.push_str(" the joiner synced this state");
    }
    // Round ids count attempts (an attempt may abort everywhere) and a joiner skips the rounds
    // it synced over, so compare at the first round ≥ last that every survivor committed.
    let empty = BTreeMap::new();
    let digests_of = |i: usize| seen.final_digest.get(&i).unwrap_or(&empty);
    let final_round = survivors.first().and_then(|&first| {
        digests_of(first)
            .keys()
            .find(|r| survivors.iter().all(|&i| digests_of(i).contains_key(r)))
            .copied()
    });
    let survivors_out: Vec<Survivor> = survivors
        .iter()
        .map(|&i| Survivor {
            peer: cluster.nodes()[i].peer.clone().unwrap_or_default(),
            digest: final_round
                .and_then(|r| digests_of(i).get(&r).cloned())
                .unwrap_or_default(),
        })
        .collect();
    let digests_equal = survivors_out
        .windows(2)
        .all(|w| w[0].digest == w[1].digest && !w[0].digest.is_empty());
    let summary = Summary {
        final_accuracy: final_round
            .and_then(|r| seen.rows.get(&r))
            .and_then(|r| r.accuracy),
        rounds: final_round.unwrap_or(last),
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

fn render(rows: &[RoundRow], summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:>5}  {:>7}  {:>8}  {:>7}  {:>9}  note",
        "round", "peers", "loss", "accuracy", "seconds", "bytes"
    );
    for r in rows {
        let interesting = r.round % 10 == 0 || r.round <= 3 || !r.note.trim().is_empty();
        if !interesting {
            continue;
        }
        let loss = r.loss.map_or("-".into(), |l| format!("{l:.4}"));
        let acc = r
            .accuracy
            .map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
        let _ = writeln!(
            out,
            "{:>5}  {:>5}  {:>7}  {:>8}  {:>7.3}  {:>9}  {}",
            r.round,
            r.peers,
            loss,
            acc,
            r.seconds,
            r.bytes,
            r.note.trim()
        );
    }
    let _ = writeln!(
        out,
        "\nkilled during round {}; joiner synced round {}, first committed round {}",
        summary.killed_in_round,
        round_or_none(summary.joiner_synced_round),
        round_or_none(summary.joiner_first_commit)
    );
    let _ = writeln!(
        out,
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
        out,
        "survivor digests equal: {}   ({:.1} s)",
        summary.digests_equal, summary.wall_seconds
    );
    out
}

/// A round number, or "none" when the event never happened.
fn round_or_none(round: Option<u64>) -> String {
    round.map_or_else(|| "none".to_owned(), |r| r.to_string())
}
