//! `gradmesh bench allreduce`: N node processes on loopback all-reduce a synthetic vector of F
//! floats every round; the same run then measures torch.distributed's gloo backend on the same
//! sizes (scripts/gloo_allreduce.py in the project venv) and prints the ratio.
//!
//! Two figures each: the p50 of one all-reduce (roster to commit on a node; one timed call for
//! gloo) and the *round period*, the wall time between a node's commits over the measured rounds
//! with every overhead in (roster formation, announcements, applying the result; for gloo, calls
//! back to back). The period is what a training loop feels, so the ratio that counts is the
//! period's.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use gradmesh_node::cluster::{Cluster, ListenTransport, Placement};
use gradmesh_node::mesh::{Phases, Report};
use gradmesh_protocol::config::CodecKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Time the decentralized all-reduce against gloo.
    Allreduce(AllreduceArgs),
    /// Train an exported TorchScript example in one node against the same module in a plain
    /// PyTorch loop.
    Torchscript(super::bench_script::TorchscriptArgs),
    /// Train with one node slowed by a CPU quota, one batch per round and then with a time
    /// budget per contribution: the mesh's rate and the slow node's share.
    Stragglers(super::bench_stragglers::StragglersArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AllreduceArgs {
    /// Node processes.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Floats per all-reduce (16777216 = 64 MiB of f32).
    #[arg(long, default_value_t = 1 << 24)]
    floats: usize,
    /// Measured rounds (after two warm-up rounds).
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// Use a pre-shared mesh key (pnet) on top of noise, as an operator would.
    #[arg(long)]
    mesh_key: bool,
    /// Transport the nodes listen on and dial: `tcp` (noise + yamux) or `quic` (no mesh key).
    #[arg(long, value_enum, default_value_t = ListenTransport::Tcp)]
    transport: ListenTransport,
    /// Send spans over libp2p streams only (`gradmesh node --no-lanes`), to compare with lanes.
    #[arg(long)]
    no_lanes: bool,
    /// Skip the gloo baseline.
    #[arg(long)]
    no_gloo: bool,
    /// Run node i in network namespace `<PREFIX><i>` listening on `<SUBNET>.<i+1>` (the
    /// shaped layout of `scripts/netns.sh up N RATE_MBIT`, prefix `gm`; needs root). The gloo
    /// baseline is skipped: it would run on unshaped loopback.
    #[arg(long, value_name = "PREFIX")]
    netns: Option<String>,
    /// IPv4 subnet (first three octets) of the namespaces, with `--netns`.
    #[arg(long, default_value = "10.77.0", requires = "netns")]
    netns_subnet: String,
    /// Python of the project venv (for the gloo baseline).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Span codec of every node (`gradmesh node --codec`): `none`, `fp16`, `bf16` or
    /// `int8[:BLOCK]`. The ideal bytes per peer become 2(n-1)/n times the encoded vector; busbw
    /// still counts the f32 vector (the work done), so it shows the codec's speed-up.
    #[arg(long, default_value = "none")]
    codec: CodecKind,
    /// Print one JSON line with every figure at the end.
    #[arg(long)]
    json: bool,
}

/// Figures of one all-reduce implementation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figures {
    backend: String,
    nodes: usize,
    floats: usize,
    seconds_p50: f64,
    busbw_gbps: f64,
    /// Wall time per round over the measured rounds (median over nodes for gradmesh).
    seconds_period: f64,
    /// busbw at that period.
    busbw_period_gbps: f64,
    #[serde(default)]
    bytes_sent_per_peer: Option<f64>,
    #[serde(default)]
    bytes_ideal_per_peer: Option<f64>,
    /// The span codec (`none` for raw f32; absent for gloo).
    #[serde(default)]
    codec: Option<String>,
    /// Where a node's round period went, by phase: each phase's median over the measured
    /// commits of every node (absent for gloo).
    #[serde(default)]
    phases: Option<Phases>,
}

pub(crate) fn run(command: &BenchCommand) -> anyhow::Result<()> {
    let args = match command {
        BenchCommand::Allreduce(args) => args,
        BenchCommand::Torchscript(args) => return super::bench_script::run(args),
        BenchCommand::Stragglers(args) => return super::bench_stragglers::run(args),
    };
    let ours = gradmesh_allreduce(args)?;
    print_figures(&ours);
    let gloo = if args.no_gloo || args.netns.is_some() {
        None
    } else {
        let gloo = gloo_allreduce(args)?;
        print_figures(&gloo);
        println!(
            "ratio gradmesh/gloo busbw: round period {:.2}x, p50 {:.2}x",
            ours.busbw_period_gbps / gloo.busbw_period_gbps,
            ours.busbw_gbps / gloo.busbw_gbps
        );
        Some(gloo)
    };
    if args.json {
        println!("{}", serde_json::json!({ "gradmesh": ours, "gloo": gloo }));
    }
    Ok(())
}

fn print_figures(f: &Figures) {
    let bytes = match (f.bytes_sent_per_peer, f.bytes_ideal_per_peer) {
        (Some(sent), Some(ideal)) => format!(
            "; sent {:.1} MB/peer/round = {:.3}x 2(n-1)/n*M",
            sent / 1e6,
            sent / ideal
        ),
        _ => String::new(),
    };
    let codec = f
        .codec
        .as_deref()
        .filter(|c| *c != "none")
        .map_or(String::new(), |c| format!(" ({c})"));
    println!(
        "{:<8} {} nodes x {} floats{codec}: round period {:.3} s, busbw {:.3} GB/s; \
         p50 {:.3} s, busbw {:.3} GB/s{bytes}",
        f.backend,
        f.nodes,
        f.floats,
        f.seconds_period,
        f.busbw_period_gbps,
        f.seconds_p50,
        f.busbw_gbps
    );
    if let Some(p) = &f.phases {
        println!(
            "{:<8} a round by phase (medians): compute {:.1} ms, waiting for the roster {:.1} \
             ms, all-reduce {:.1} ms, apply {:.1} ms, state snapshot {:.1} ms",
            "",
            p.compute * 1e3,
            p.wait * 1e3,
            p.allreduce * 1e3,
            p.apply * 1e3,
            p.install * 1e3
        );
    }
}

/// busbw in the nccl-tests convention: bytes / seconds · 2(n−1)/n.
#[allow(clippy::cast_precision_loss)]
fn busbw(bytes: f64, seconds: f64, n: usize) -> f64 {
    bytes / seconds * 2.0 * (n as f64 - 1.0) / n as f64 / 1e9
}

/// Runs the nodes in a scratch directory (identities, mesh key, logs) that is removed after a
/// measurement and kept, and named in the error, when one fails.
fn gradmesh_allreduce(args: &AllreduceArgs) -> anyhow::Result<Figures> {
    anyhow::ensure!(args.nodes >= 2, "need at least 2 nodes");
    anyhow::ensure!(
        args.rounds >= 2,
        "need at least 2 measured rounds (--rounds): the round period is the time between commits"
    );
    let dir = std::env::temp_dir().join(format!("gradmesh-bench-{}", std::process::id()));
    let figures =
        measure(args, &dir).with_context(|| format!("node logs are in {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}

#[allow(clippy::cast_precision_loss)]
fn measure(args: &AllreduceArgs, dir: &std::path::Path) -> anyhow::Result<Figures> {
    let mut cluster = bench_cluster(args, dir)?;
    let mut common = vec![
        "--synthetic-floats".to_owned(),
        args.floats.to_string(),
        "--round-timeout".into(),
        "120".into(),
        "--genesis-quorum".into(),
        args.nodes.to_string(),
        "--codec".into(),
        args.codec.to_string(),
    ];
    if args.no_lanes {
        common.push("--no-lanes".into());
    }
    if args.mesh_key {
        let key = dir.join("mesh.key");
        write_secret(&key, "5a".repeat(32).as_bytes())?;
        common.extend(["--mesh-key".into(), key.to_string_lossy().into_owned()]);
    }
    cluster.spawn(&common)?;
    let boot = cluster.address(0).context("node 0 address")?;
    for _ in 1..args.nodes {
        let mut a = common.clone();
        a.extend(["--bootstrap".into(), boot.clone()]);
        cluster.spawn(&a)?;
    }
    // Rounds after the two warm-ups in which all N contributed, until N × rounds reports came
    // in: a round a node did not commit (it diverged and resyncs) and the rounds it sits out
    // are skipped instead of waited for. Every commit after the warm-ups, whoever contributed,
    // is a round the node's training loop moved on by: each counts for the period.
    let first = 3;
    let mut per_round: Vec<(f64, u64)> = Vec::new();
    let mut commits: Vec<Vec<Instant>> = vec![Vec::new(); args.nodes];
    let mut phases: Vec<Phases> = Vec::new();
    let mut seen = 0;
    while seen < args.nodes * usize::try_from(args.rounds)? {
        let (index, report) = cluster.wait_for(
            Duration::from_secs(600),
            "measured rounds",
            |_, r| matches!(r, Report::Committed { round, .. } if *round >= first),
        )?;
        if let Report::Committed {
            seconds,
            bytes_sent,
            contributors,
            phases: by_phase,
            ..
        } = report
        {
            if let Some(node) = commits.get_mut(index) {
                node.push(Instant::now());
            }
            phases.extend(by_phase);
            if contributors == args.nodes {
                per_round.push((seconds, bytes_sent));
                seen += 1;
            }
        }
    }
    cluster.shutdown();
    let period = round_period(&commits).context("no node committed two measured rounds")?;
    let mut figures = figures(args, &per_round, period);
    figures.phases = median_phases(&phases);
    Ok(figures)
}

/// Each phase's median over `phases`.
fn median_phases(phases: &[Phases]) -> Option<Phases> {
    let of = |phase: fn(&Phases) -> f64| median(phases.iter().map(phase).collect());
    Some(Phases {
        compute: of(|p| p.compute)?,
        wait: of(|p| p.wait)?,
        allreduce: of(|p| p.allreduce)?,
        apply: of(|p| p.apply)?,
        install: of(|p| p.install)?,
    })
}

/// The median of `values` (the upper one of an even count); `None` when there are none.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The median over nodes of a node's wall time per round between its first and last measured
/// commits (nodes with fewer than two are left out).
fn round_period(commits: &[Vec<Instant>]) -> Option<f64> {
    let periods: Vec<f64> = commits
        .iter()
        .filter_map(|c| {
            let (first, last) = (c.first()?, c.last()?);
            let rounds = u32::try_from(c.len().checked_sub(1)?).ok()?;
            (rounds > 0).then(|| last.duration_since(*first).as_secs_f64() / f64::from(rounds))
        })
        .collect();
    median(periods)
}

/// The p50 round time and mean bytes sent per peer of `per_round` `(seconds, bytes sent)`,
/// with the round period.
#[allow(clippy::cast_precision_loss)]
fn figures(args: &AllreduceArgs, per_round: &[(f64, u64)], period: f64) -> Figures {
    // `measure` gathers N × rounds reports before it computes any figure.
    let p50 = median(per_round.iter().map(|(s, _)| *s).collect()).unwrap_or(f64::NAN);
    let sent = per_round.iter().map(|(_, b)| *b as f64).sum::<f64>() / per_round.len() as f64;
    let bytes = 4.0 * args.floats as f64;
    let encoded = args.codec.encoded_len(args.floats) as f64;
    let n = args.nodes as f64;
    Figures {
        backend: [
            ("gradmesh", true),
            ("+psk", args.mesh_key),
            ("+quic", args.transport == ListenTransport::Quic),
            ("+streams", args.no_lanes),
        ]
        .iter()
        .filter_map(|(part, on)| on.then_some(*part))
        .collect(),
        nodes: args.nodes,
        floats: args.floats,
        seconds_p50: p50,
        busbw_gbps: busbw(bytes, p50, args.nodes),
        seconds_period: period,
        busbw_period_gbps: busbw(bytes, period, args.nodes),
        bytes_sent_per_peer: Some(sent),
        bytes_ideal_per_peer: Some(2.0 * (n - 1.0) / n * encoded),
        codec: Some(args.codec.to_string()),
        phases: None,
    }
}

/// Writes a secret file only its owner may read (the node refuses a mesh key others can read).
fn write_secret(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// The cluster of the bench: placement and transport from the flags.
fn bench_cluster(args: &AllreduceArgs, dir: &std::path::Path) -> anyhow::Result<Cluster> {
    anyhow::ensure!(
        !(args.mesh_key && args.transport == ListenTransport::Quic),
        "--transport quic cannot be combined with --mesh-key: the pre-shared key (pnet) wraps \
         TCP only, so a node with a mesh key does not accept QUIC"
    );
    let placement = args
        .netns
        .as_ref()
        .map_or(Placement::Loopback, |prefix| Placement::Netns {
            prefix: prefix.clone(),
            subnet: args.netns_subnet.clone(),
        });
    Ok(Cluster::new(&std::env::current_exe()?, dir)?
        .with_placement(placement)
        .with_transport(args.transport))
}

fn gloo_allreduce(args: &AllreduceArgs) -> anyhow::Result<Figures> {
    let output = Command::new(&args.python)
        .arg("scripts/gloo_allreduce.py")
        .args(["--nodes", &args.nodes.to_string()])
        .args(["--floats", &args.floats.to_string()])
        .args(["--iters", &args.rounds.to_string()])
        .output()
        .with_context(|| {
            format!(
                "running {} scripts/gloo_allreduce.py",
                args.python.display()
            )
        })?;
    anyhow::ensure!(
        output.status.success(),
        "gloo baseline failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("gloo baseline printed no JSON line")?;
    let value: serde_json::Value = serde_json::from_str(line)?;
    let get = |k: &str| value.get(k).and_then(serde_json::Value::as_f64);
    let p50 = get("seconds_p50").context("seconds_p50")?;
    Ok(Figures {
        backend: "gloo".into(),
        nodes: args.nodes,
        floats: args.floats,
        seconds_p50: p50,
        busbw_gbps: get("busbw_gbps").context("busbw_gbps")?,
        seconds_period: get("seconds_period").context("seconds_period")?,
        busbw_period_gbps: get("busbw_period_gbps").context("busbw_period_gbps")?,
        bytes_sent_per_peer: None,
        bytes_ideal_per_peer: None,
        codec: None,
        phases: None,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        bench: BenchCommand,
    }

    fn parse(extra: &[&str]) -> AllreduceArgs {
        let argv = ["bench", "allreduce"].iter().chain(extra).copied();
        match Cli::try_parse_from(argv).unwrap().bench {
            BenchCommand::Allreduce(args) => args,
            BenchCommand::Torchscript(_) | BenchCommand::Stragglers(_) => {
                unreachable!("parsed `bench allreduce`")
            }
        }
    }

    #[test]
    fn transport_defaults_to_tcp_and_accepts_quic() {
        assert_eq!(parse(&[]).transport, ListenTransport::Tcp);
        assert_eq!(
            parse(&["--transport", "quic"]).transport,
            ListenTransport::Quic
        );
        let bad = ["bench", "allreduce", "--transport", "udp"];
        assert!(Cli::try_parse_from(bad).is_err());
    }

    #[test]
    fn the_round_period_is_the_median_node_s_time_between_its_commits() {
        let t0 = Instant::now();
        let at = |ms: &[u64]| -> Vec<Instant> {
            ms.iter().map(|m| t0 + Duration::from_millis(*m)).collect()
        };
        // 0.1, 0.2 and 0.4 s per round; a node with one commit has no period.
        let commits = [
            at(&[0, 100, 200, 300]),
            at(&[50, 450, 850]),
            at(&[0, 200]),
            at(&[70]),
        ];
        let period = round_period(&commits).unwrap();
        assert!((period - 0.2).abs() < 1e-9, "{period}");
        assert_eq!(round_period(&[at(&[5]), Vec::new()]), None);
    }

    #[test]
    fn one_measured_round_is_refused_naming_the_flag() {
        let err = gradmesh_allreduce(&parse(&["--rounds", "1"])).unwrap_err();
        assert!(err.to_string().contains("--rounds"), "{err}");
    }

    #[test]
    fn quic_with_a_mesh_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("gm-bench-refuse-{}", std::process::id()));
        let err = bench_cluster(&parse(&["--transport", "quic", "--mesh-key"]), &dir).unwrap_err();
        assert!(err.to_string().contains("--mesh-key"), "{err}");
        assert!(!dir.exists(), "refused before creating anything");
    }
}
