//! `gradmesh`: the node binary. Parses the command line, sets up logging, and hands over to the
//! library; nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use gradmesh_node::net::{Keypair, Multiaddr, NetConfig, load_or_create, read_mesh_key};
use gradmesh_node::smoke::Smoke;

/// How often smoke mode announces itself.
const HELLO_PERIOD: Duration = Duration::from_secs(5);

/// gradmesh: a peer-to-peer training mesh.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node's network layer in smoke mode: connect to the mesh, gossip a small "hello"
    /// announcement every 5 s, and log peers joining and leaving and the hellos heard. It does
    /// not train yet; training flags arrive with the training loop.
    Node(NodeArgs),
    /// Run the protocol over an in-memory network of peers on a simulated clock: kill one peer
    /// in the middle of a round, let a fresh peer join, and print every round and each
    /// survivor's final state digest. Deterministic for a given seed.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
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

#[derive(Debug, Args)]
struct NodeArgs {
    /// Multiaddr to listen on; repeat the flag (or separate with commas) for several.
    /// QUIC (`/udp/<port>/quic-v1`) only without a mesh key.
    #[arg(
        long,
        env = "GRADMESH_LISTEN",
        value_delimiter = ',',
        default_value = "/ip4/127.0.0.1/tcp/0"
    )]
    listen: Vec<Multiaddr>,
    /// Peer to dial at start-up and seed Kademlia with, as a multiaddr ending in
    /// `/p2p/<peer id>`; repeatable.
    #[arg(long, env = "GRADMESH_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<Multiaddr>,
    /// File holding the mesh's pre-shared key (`/key/swarm/psk/1.0.0/` key file, or 64 hex
    /// digits). Peers without the same key cannot connect; disables QUIC.
    #[arg(long, env = "GRADMESH_MESH_KEY")]
    mesh_key: Option<PathBuf>,
    /// ed25519 identity file: loaded if present, created with mode 0600 if not. Without it
    /// the node runs with a throwaway identity.
    #[arg(long, env = "GRADMESH_IDENTITY")]
    identity: Option<PathBuf>,
    /// Address to serve Prometheus metrics on (`GET /metrics`), e.g. 127.0.0.1:9464.
    #[arg(long, env = "GRADMESH_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Discover peers on the local network with mDNS (multicast).
    #[arg(long, env = "GRADMESH_MDNS")]
    mdns: bool,
    /// Log format.
    #[arg(long, env = "GRADMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Node(args) => run_node(args),
        Command::Demo(args) => run_demo(&args),
    }
}

fn run_demo(args: &DemoArgs) -> anyhow::Result<()> {
    let (report, driver) = gradmesh_node::demo::run(args.peers, args.seed)?;
    print!("{}", gradmesh_node::demo::render(&report, &driver));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    anyhow::ensure!(report.digests_equal, "survivors hold different states");
    Ok(())
}

fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let keypair = match &args.identity {
        Some(path) => load_or_create(path)?,
        None => {
            tracing::warn!("no --identity given: using a throwaway identity");
            Keypair::generate_ed25519()
        }
    };
    let mesh_key = args.mesh_key.as_deref().map(read_mesh_key).transpose()?;
    let config = NetConfig::builder()
        .listen(args.listen)
        .bootstrap(args.bootstrap)
        .mesh_key(mesh_key)
        .mdns(args.mdns)
        .metrics_addr(args.metrics_addr)
        .build()?;
    let system = actix::System::new();
    system.block_on(async move {
        let (_smoke, info) = Smoke::start(config, keypair, HELLO_PERIOD)
            .await
            .context("starting the network layer")?;
        tracing::info!(
            peer = %info.local_peer,
            transport_peer = %info.transport_peer,
            metrics = ?info.metrics_addr,
            "node started; dial it at <listen address>/p2p/{}",
            info.transport_peer
        );
        anyhow::Ok(())
    })?;
    let code = system.run_with_code()?;
    if code != 0 {
        anyhow::bail!("node stopped with code {code}");
    }
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
