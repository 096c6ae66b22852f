//! The command line of the `gradmesh` binary.

pub(crate) mod bench;
pub(crate) mod bench_script;
pub(crate) mod bench_stragglers;
pub(crate) mod demo;
pub(crate) mod node;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// gradmesh: a peer-to-peer training mesh. Nodes find each other over libp2p, compute
/// gradients with LibTorch and average them in a decentralized all-reduce that survives
/// peers leaving and joining at any time.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a training node: join (or found) a mesh, train on this node's data shard, average
    /// gradients with the other nodes every round.
    Node(Box<node::NodeArgs>),
    /// Start a mesh of node processes on loopback training the digits MLP; SIGKILL one in the
    /// middle of an all-reduce, let a fresh node join, and print every round and each
    /// survivor's final state digest.
    Demo(demo::DemoArgs),
    /// The protocol alone on an in-memory network with a simulated clock (deterministic for a
    /// seed): kill a peer mid-round, let one join, print the rounds and digests.
    ProtocolDemo(ProtocolDemoArgs),
    /// Benchmarks (fixed seeds, printed figures).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ProtocolDemoArgs {
    /// Founding peers.
    #[arg(long, default_value_t = 8)]
    peers: usize,
    /// Seed of the run (network delays, compute times).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// End with one machine-readable JSON summary line.
    #[arg(long)]
    json: bool,
}

/// Parses the command line, folding in `gradmesh node --config FILE` settings that the command
/// line and the environment leave unset.
pub(crate) fn parse() -> anyhow::Result<Cli> {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&raw);
    if let Some(("node", node)) = matches.subcommand()
        && let Some(path) = node.get_one::<std::path::PathBuf>("config")
    {
        let mut args = raw.clone();
        args.extend(node::config_file_args(path, node)?);
        return Ok(Cli::parse_from(args));
    }
    Ok(Cli::from_arg_matches(&matches)?)
}

pub(crate) fn run_protocol_demo(args: &ProtocolDemoArgs) -> anyhow::Result<()> {
    let (report, driver) = gradmesh_node::demo::run(args.peers, args.seed)?;
    print!("{}", gradmesh_node::demo::render(&report, &driver));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    anyhow::ensure!(report.digests_equal, "survivors hold different states");
    Ok(())
}
