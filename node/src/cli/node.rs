//! `gradmesh node`: flags, the TOML config file, and start-up.

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory as _, ValueEnum};
use gradmesh_federated::strategy::StrategyConfig;
use gradmesh_kernels::{Device, Loss, ModelKind, ScriptSpec, TransformerConfig};
use gradmesh_node::mesh::{
    self, Fault, InnerOptimizer, ModelChoice, ModelSpec, NodeSetup, OuterSpec, PeerOptions, Stop,
    StopReason, StopRule, Training, Workload, WorkloadSpec,
};
use gradmesh_node::net::{
    Keypair, Multiaddr, NetConfig, TrainingDescriptor, load_or_create, read_mesh_key,
};
use gradmesh_protocol::config::{Aggregation, CodecKind, PeerConfig, ServeState};
use gradmesh_protocol::peer::Profile;

/// Flags of `gradmesh node`. Each has an environment variable; a `--config` TOML file may set
/// any of them by its long name (`batch-size = 64`, `listen = ["/ip4/0.0.0.0/tcp/4001"]`).
/// Precedence: command line, then environment, then the file, then the default.
#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct NodeArgs {
    /// TOML file with any of these flags by long name.
    #[arg(long, env = "GRADMESH_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Multiaddr to listen on; repeat (or separate with commas) for several. TCP:
    /// `/ip4/0.0.0.0/tcp/4001`; QUIC (`/ip4/0.0.0.0/udp/4001/quic-v1`) only without a mesh key.
    #[arg(
        long,
        env = "GRADMESH_LISTEN",
        value_delimiter = ',',
        default_value = "/ip4/127.0.0.1/tcp/0"
    )]
    pub(crate) listen: Vec<Multiaddr>,
    /// A peer to dial at start-up, `<multiaddr>/p2p/<peer id>` (printed by that node when it
    /// starts); repeatable. The rest of the mesh is found through it (Kademlia).
    #[arg(long, env = "GRADMESH_BOOTSTRAP", value_delimiter = ',')]
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// Behind NAT: a public node started with --relay-server, `<multiaddr>/p2p/<peer id>`;
    /// repeatable. This node reserves a slot on it and is reachable through it; peers then try
    /// a direct connection by hole punching, and stay relayed where the NATs defeat it.
    #[arg(long, env = "GRADMESH_RELAY", value_delimiter = ',')]
    pub(crate) relay: Vec<Multiaddr>,
    /// Relay connections for nodes behind NAT (circuit relay v2). For a node with a public
    /// address; its bandwidth then carries the relayed nodes' rounds too.
    #[arg(long, env = "GRADMESH_RELAY_SERVER")]
    pub(crate) relay_server: bool,
    /// The mesh's pre-shared key file (libp2p `/key/swarm/psk/1.0.0/` format, or 64 hex
    /// digits). Nodes without the same key cannot connect. Disables QUIC.
    #[arg(long, env = "GRADMESH_MESH_KEY")]
    pub(crate) mesh_key: Option<PathBuf>,
    /// TCP port for lanes: direct connections that carry large frames (gradient spans, state
    /// chunks) sealed with AES-256-GCM under a key exchanged over the libp2p connection, about
    /// twice as fast as libp2p's streams. 0 picks a free port; open it in firewalls between
    /// nodes. Bound on the first --listen address's IP.
    #[arg(long, env = "GRADMESH_LANE_PORT", default_value_t = 0)]
    pub(crate) lane_port: u16,
    /// Send every frame over libp2p streams (TCP+noise+yamux or QUIC), with no lanes.
    #[arg(long, env = "GRADMESH_NO_LANES")]
    pub(crate) no_lanes: bool,
    /// ed25519 identity file: loaded if present, created (mode 0600) if not. Without it the
    /// node gets a throwaway identity.
    #[arg(long, env = "GRADMESH_IDENTITY")]
    pub(crate) identity: Option<PathBuf>,
    /// The training data: for the digits models a safetensors file with
    /// train_x/train_y/test_x/test_y (default data/digits.safetensors); for the transformer a
    /// UTF-8 text file or a directory of them, whose last 10 % is validation (default
    /// data/pycorpus.txt, built by `make setup`); for a torchscript model a safetensors file with
    /// train_x/train_y/test_x/test_y of any shapes, or a token stream train_tokens/test_tokens
    /// (with --context). See docs/models.md.
    #[arg(long, env = "GRADMESH_DATA")]
    pub(crate) data: Option<PathBuf>,
    /// Model to train: `mlp` or `cnn` (the digits), `transformer` (a text corpus; size:
    /// --model-size), or `torchscript:PATH`, a module exported from PyTorch with
    /// `torch.jit.script(model).save(PATH)` (needs --data; docs/models.md). Every node of a
    /// mesh must use the same.
    #[arg(long, env = "GRADMESH_MODEL", default_value = "mlp", value_parser = parse_model)]
    pub(crate) model: ModelArg,
    /// A torchscript model's loss: `cross-entropy` of forward(x) against class indices y,
    /// `mse` against float targets, or `module`, the module's own `loss(x, y)` method.
    #[arg(long, env = "GRADMESH_LOSS", default_value = "cross-entropy")]
    pub(crate) loss: Loss,
    /// Tokens per training window, for a torchscript model trained on a token stream.
    #[arg(long, env = "GRADMESH_CONTEXT")]
    pub(crate) context: Option<usize>,
    /// The transformer's size: `tiny`, `small` (trains in minutes on 2 CPU cores), `base`
    /// (≥100 M parameters, for a GPU), or `layers=L,width=W,heads=H,context=C`.
    #[arg(long, env = "GRADMESH_MODEL_SIZE", default_value = "small")]
    pub(crate) model_size: TransformerConfig,
    /// Device for LibTorch: `cpu` or `cuda`.
    #[arg(long, env = "GRADMESH_DEVICE", default_value = "cpu")]
    pub(crate) device: Device,
    /// Examples (or text windows) per local step.
    #[arg(long, env = "GRADMESH_BATCH_SIZE", default_value_t = 32, value_parser = at_least_one::<usize>)]
    pub(crate) batch_size: usize,
    /// How the mesh trains: `sync` (one all-reduce of gradients per step; the default for the
    /// digits models) or local steps between synchronisations with an outer step: `diloco` (the
    /// default for the transformer), `fedavg`, `fedavgm`, `fedprox`, `fedadam`, `fedyogi`,
    /// `fedadagrad`, `scaffold`. Every node of a mesh must use the same.
    #[arg(long, env = "GRADMESH_STRATEGY", value_enum)]
    pub(crate) strategy: Option<StrategyArg>,
    /// Local steps per round under a strategy other than `sync` (DiLoCo's H).
    #[arg(long, env = "GRADMESH_INNER_STEPS", default_value_t = 50, value_parser = at_least_one::<u32>)]
    pub(crate) inner_steps: u32,
    /// Wall-clock budget of an inner phase in seconds: a node stops its local steps early when
    /// it is spent (after at least one), so a slow node does fewer and weighs less.
    #[arg(long, env = "GRADMESH_INNER_TIME", allow_negative_numbers = true, value_parser = seconds)]
    pub(crate) inner_time: Option<Duration>,
    /// Wall-clock budget of one contribution under `--strategy sync`, in seconds: the node
    /// accumulates batch after batch until it is spent (at least one) and contributes their
    /// mean, weighted by its examples, so a slow node contributes fewer examples every round
    /// rather than missing rounds and resyncing. Default: one batch per round.
    #[arg(long, env = "GRADMESH_COMPUTE_TIME", allow_negative_numbers = true, value_parser = seconds)]
    pub(crate) compute_time: Option<Duration>,
    /// Start the next inner phase as soon as this node's message is handed to the mesh, while
    /// the mesh reduces it (Streaming DiLoCo's one-step-delayed outer update): the inner steps
    /// taken meanwhile carry over to the new global model when it arrives, so compute waits for
    /// the network only when the network is slower than an inner phase.
    #[arg(long, env = "GRADMESH_OVERLAP")]
    pub(crate) overlap: bool,
    /// The local optimizer under a strategy other than `sync`: `adamw` (β 0.9/0.95) or `sgd`.
    #[arg(long, env = "GRADMESH_INNER_OPTIMIZER", value_enum, default_value_t = InnerArg::Adamw)]
    pub(crate) inner_optimizer: InnerArg,
    /// Learning rate of the step each node takes: synchronous SGD's (momentum 0.9; default
    /// 0.1), or the inner optimizer's (default 0.001 for AdamW, 0.1 for SGD). Every node of a
    /// mesh must use the same.
    #[arg(long, env = "GRADMESH_LEARNING_RATE")]
    pub(crate) learning_rate: Option<f32>,
    /// The inner AdamW's decoupled weight decay.
    #[arg(long, env = "GRADMESH_WEIGHT_DECAY", default_value_t = 0.1)]
    pub(crate) weight_decay: f32,
    /// The outer step's learning rate (by default DiLoCo 0.7; FedAvg, FedAvgM and SCAFFOLD 1;
    /// FedAdam, FedYogi and FedAdagrad 0.01).
    #[arg(long, env = "GRADMESH_OUTER_LR")]
    pub(crate) outer_lr: Option<f32>,
    /// The outer step's momentum, for `diloco` (Nesterov) and `fedavgm` (default 0.9 for both).
    #[arg(long, env = "GRADMESH_OUTER_MOMENTUM")]
    pub(crate) outer_momentum: Option<f32>,
    /// This node's shard of the training set, `INDEX/COUNT` (examples INDEX, INDEX+COUNT, …).
    #[arg(long, env = "GRADMESH_SHARD", default_value = "0/1", value_parser = parse_shard)]
    pub(crate) shard: (usize, usize),
    /// Seed of the initial weights: every node of a mesh must use the same.
    #[arg(long, env = "GRADMESH_SEED", default_value_t = 1)]
    pub(crate) seed: u64,
    /// Hard bound on one round, in seconds; every other protocol timeout scales with it.
    #[arg(
        long,
        env = "GRADMESH_ROUND_TIMEOUT",
        default_value = "12",
        allow_negative_numbers = true,
        value_parser = seconds
    )]
    pub(crate) round_timeout: Duration,
    /// How long a round's leader waits, once ready, for the other nodes to be ready before it
    /// proposes a roster without them, in seconds (it proposes at once when all are). Default:
    /// 1/40 of the round timeout when training synchronously, --compute-time when given (a
    /// node up to one budget late still contributes); under local steps half the inner-phase
    /// budget (--inner-time) or half the round timeout, so that nodes whose computations end a
    /// little apart still share a round.
    #[arg(long, env = "GRADMESH_COLLECT_WINDOW", allow_negative_numbers = true, value_parser = seconds)]
    pub(crate) collect_window: Option<Duration>,
    /// Votes the first round needs: set it to a majority of the founders, so that two halves
    /// of a mesh that start apart cannot both commit a first round.
    #[arg(long, env = "GRADMESH_GENESIS_QUORUM", default_value_t = 1, value_parser = at_least_one::<usize>)]
    pub(crate) genesis_quorum: usize,
    /// Re-found the mesh after a mass failure, in seconds (default: never). When most of the
    /// last round's contributors have been silent this long, no round can ever commit again;
    /// with this flag the nodes that are left go on from the state they hold, in a new epoch
    /// (docs/protocol.md §5.6). Setting it says the silent ones are gone for good: nodes cut
    /// off by a partition, not dead, would train apart. Make it longer than a node's restart.
    #[arg(long, env = "GRADMESH_REFOUND_AFTER", allow_negative_numbers = true, value_parser = seconds)]
    pub(crate) refound_after: Option<Duration>,
    /// How span owners reduce gradients: `mean`, `median`, `trimmed-mean:BETA`,
    /// `multi-krum:F:M` or `centered-clipping:TAU:ITERATIONS`. Every node of a mesh must use
    /// the same rule (a node with another one never agrees on a digest: its rounds abort).
    #[arg(long, env = "GRADMESH_AGGREGATION", default_value = "mean")]
    pub(crate) aggregation: Aggregation,
    /// How gradient spans travel between nodes: `none` (raw f32, exact), `fp16`, `bf16` or
    /// `int8[:BLOCK]` (block 64 by default): about 2x, 2x and 3.8x fewer bytes, each value
    /// quantised twice per round. Every node of a mesh must use the same codec (spans in another
    /// one are refused); the stateful `topk:F` and `powersgd:R` are refused at start-up.
    #[arg(long, env = "GRADMESH_CODEC", default_value = "none")]
    pub(crate) codec: CodecKind,
    /// Start without a model state and sync it from the mesh (a node joining a running mesh).
    #[arg(long, env = "GRADMESH_JOIN")]
    pub(crate) join: bool,
    /// Who may fetch this node's model and optimizer state: `anyone` who connects (an open mesh,
    /// so that new nodes can join; without --mesh-key that is anyone who can reach the port) or
    /// only `members`, the nodes this one has seen contribute (they can resync after falling
    /// behind or restarting; a node that never contributed cannot join).
    #[arg(
        long,
        env = "GRADMESH_SERVE_STATE",
        value_enum,
        default_value = "anyone"
    )]
    pub(crate) serve_state: ServeStateArg,
    /// Directory for checkpoints (`latest.safetensors`); a node restarted with the same
    /// directory resumes from it.
    #[arg(long, env = "GRADMESH_CHECKPOINT_DIR")]
    pub(crate) checkpoint_dir: Option<PathBuf>,
    /// Checkpoint every N committed rounds (and once more when the node stops).
    #[arg(long, env = "GRADMESH_CHECKPOINT_EVERY", default_value_t = 10, value_parser = at_least_one::<u64>)]
    pub(crate) checkpoint_every: u64,
    /// Stop once this node holds the state of this round (the mesh's round count, so nodes
    /// given the same limit stop at the same state), with a final checkpoint; exit 0.
    #[arg(long, env = "GRADMESH_MAX_ROUNDS", value_parser = at_least_one::<u64>)]
    pub(crate) max_rounds: Option<u64>,
    /// Stop after this many local optimizer steps of this node (inner steps under local-step
    /// strategies, one per committed round when synchronous).
    #[arg(long, env = "GRADMESH_MAX_STEPS", value_parser = at_least_one::<u64>)]
    pub(crate) max_steps: Option<u64>,
    /// Stop this many seconds after start.
    #[arg(long, env = "GRADMESH_MAX_TIME", allow_negative_numbers = true, value_parser = seconds)]
    pub(crate) max_time: Option<Duration>,
    /// Stop once the held-out loss after a round is at most this (nats per example or token).
    #[arg(long, env = "GRADMESH_TARGET_LOSS", allow_negative_numbers = true, value_parser = loss_target)]
    pub(crate) target_loss: Option<f64>,
    /// Usable upload bandwidth in Mbit/s, announced to the mesh: spans are sized by it.
    #[arg(long, env = "GRADMESH_BANDWIDTH_MBIT", default_value_t = 1000, value_parser = at_least_one::<u64>)]
    pub(crate) bandwidth_mbit: u64,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 127.0.0.1:9464.
    #[arg(long, env = "GRADMESH_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Discover peers on the local network with mDNS (multicast).
    #[arg(long, env = "GRADMESH_MDNS")]
    pub(crate) mdns: bool,
    /// Log format (logs go to stderr; RUST_LOG filters them).
    #[arg(long, env = "GRADMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Print one JSON line per round event on stdout (for scripts and the demo).
    #[arg(long, env = "GRADMESH_REPORT")]
    pub(crate) report: bool,
    /// Train a synthetic vector of this many floats instead of the model (benchmarks).
    #[arg(long, env = "GRADMESH_SYNTHETIC_FLOATS")]
    pub(crate) synthetic_floats: Option<usize>,
    /// LibTorch intra-op threads.
    #[arg(long, env = "GRADMESH_THREADS", default_value_t = 1, value_parser = at_least_one::<usize>)]
    pub(crate) threads: usize,
    /// Deliberately corrupt this node's contributions (tests of the mesh's defences only).
    #[arg(long, hide = true, value_enum)]
    pub(crate) inject_fault: Option<FaultArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ServeStateArg {
    Anyone,
    Members,
}

impl From<ServeStateArg> for ServeState {
    fn from(arg: ServeStateArg) -> Self {
        match arg {
            ServeStateArg::Anyone => Self::Anyone,
            ServeStateArg::Members => Self::Members,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModelArg {
    Mlp,
    Cnn,
    /// The byte-level causal transformer (size: --model-size) on a text corpus.
    Transformer,
    /// A user's TorchScript file.
    TorchScript(PathBuf),
}

fn parse_model(s: &str) -> Result<ModelArg, String> {
    match s {
        "mlp" => Ok(ModelArg::Mlp),
        "cnn" => Ok(ModelArg::Cnn),
        "transformer" => Ok(ModelArg::Transformer),
        _ => match s.strip_prefix("torchscript:") {
            Some("") => {
                Err("torchscript: needs the module's file, e.g. torchscript:model.pt".into())
            }
            Some(path) => Ok(ModelArg::TorchScript(PathBuf::from(path))),
            None => Err("expected mlp, cnn, transformer or torchscript:PATH".into()),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StrategyArg {
    Sync,
    Diloco,
    Fedavg,
    Fedavgm,
    Fedprox,
    Fedadam,
    Fedyogi,
    Fedadagrad,
    Scaffold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InnerArg {
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FaultArg {
    Nan,
    Short,
    /// From round 5 on, announce a state far ahead and serve junk for it.
    ForgedState,
}

/// A count that must be at least 1.
fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialEq + From<u8>,
    T::Err: std::fmt::Display,
{
    let value: T = s.trim().parse().map_err(|e| format!("{e}"))?;
    if value == T::from(0) {
        return Err("must be at least 1".into());
    }
    Ok(value)
}

/// A positive, finite number of seconds.
pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds, e.g. 12 or 0.5".to_owned())?;
    if !(value.is_finite() && value > 0.0) {
        return Err("must be a positive number of seconds".into());
    }
    Duration::try_from_secs_f64(value).map_err(|_| "too many seconds".into())
}

/// A finite, non-negative loss.
fn loss_target(s: &str) -> Result<f64, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number, e.g. 1.5".to_owned())?;
    if !(value.is_finite() && value >= 0.0) {
        return Err("must be a finite number ≥ 0".into());
    }
    Ok(value)
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("expected INDEX/COUNT, e.g. 0/4")?;
    let i = i.trim().parse().map_err(|e| format!("shard index: {e}"))?;
    let n = n.trim().parse().map_err(|e| format!("shard count: {e}"))?;
    Ok((i, n))
}

/// Extra `--flag value` arguments for every key of the `--config` file that neither the
/// command line nor the environment set.
pub(crate) fn config_file_args(path: &Path, node: &ArgMatches) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let command = super::Cli::command();
    let node_command = command.find_subcommand("node").context("node subcommand")?;
    let mut args = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let known = node_command
            .get_arguments()
            .any(|a| a.get_id().as_str() == id && id != "config");
        anyhow::ensure!(known, "{}: unknown setting `{key}`", path.display());
        if matches!(
            node.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => args.push(format!("--{key}").into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => args.extend([format!("--{key}").into(), s.into()]),
                toml::Value::Integer(i) => {
                    args.extend([format!("--{key}").into(), i.to_string().into()])
                }
                toml::Value::Float(f) => {
                    args.extend([format!("--{key}").into(), f.to_string().into()])
                }
                other => anyhow::bail!(
                    "{}: `{key}` cannot be a {}; give a string, number or boolean",
                    path.display(),
                    other.type_str()
                ),
            }
        }
    }
    Ok(args)
}

pub(crate) fn run(args: NodeArgs) -> anyhow::Result<()> {
    // A status line in a terminal (not when a script reads the report lines); logs print above it.
    let progress = (std::io::stderr().is_terminal() && !args.report).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("waiting for the mesh…");
        bar
    });
    init_tracing(args.log_format, progress.clone());
    gradmesh_kernels::set_torch_threads(args.threads.max(1));
    let setup = node_setup(&args, progress.as_ref())?;
    let system = actix::System::new();
    system.block_on(async move {
        let started = mesh::start(setup).await.context("starting the node")?;
        let info = &started.info;
        tracing::info!(
            "node started: peer {} (libp2p {})",
            info.local_peer,
            info.transport_peer
        );
        if let Some(addr) = info.metrics_addr {
            tracing::info!("metrics at http://{addr}/metrics");
        }
        actix::spawn(stop_on_signals(started.node));
        anyhow::Ok(())
    })?;
    let code = system.run_with_code()?;
    anyhow::ensure!(code == 0, "node stopped with code {code}");
    Ok(())
}

/// SIGINT and SIGTERM stop the node gracefully (final checkpoint, summary, exit 0); a second
/// one exits at once.
async fn stop_on_signals(node: actix::Addr<mesh::PeerActor>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!(
            "cannot watch SIGINT/SIGTERM: a signal stops the node without a final checkpoint"
        );
        return;
    };
    let mut stopping = false;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        if stopping {
            tracing::warn!("{name} again: exiting now, without a final checkpoint");
            std::process::exit(130);
        }
        stopping = true;
        node.do_send(Stop(StopReason::Signal(name)));
    }
}

fn node_setup(
    args: &NodeArgs,
    progress: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<NodeSetup> {
    let progress = progress.cloned();
    let keypair = match &args.identity {
        Some(path) => load_or_create(path)?,
        None => {
            tracing::warn!("no --identity given: using a throwaway identity");
            Keypair::generate_ed25519()
        }
    };
    let mesh_key = args.mesh_key.as_deref().map(read_mesh_key).transpose()?;
    let spec = workload_spec(args)?;
    let workload = Workload::build(&spec).context("building the workload")?;
    if let Some(file) = workload.model_file_digest() {
        let words: Vec<String> = workload
            .identity()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        tracing::info!(
            "training a TorchScript module whose file has blake3 {file}; peers must agree on {}",
            words.join(" ")
        );
    }
    let net = NetConfig::builder()
        .listen(args.listen.clone())
        .bootstrap(args.bootstrap.clone())
        .relays(args.relay.clone())
        .relay_server(args.relay_server)
        .mesh_key(mesh_key)
        .mdns(args.mdns)
        .lanes(!args.no_lanes)
        .lane_port(args.lane_port)
        .metrics_addr(args.metrics_addr)
        .training(training_descriptor(args, &spec, &workload));
    let round_timeout = args.round_timeout;
    let mut builder = PeerConfig::builder().scaled_to(round_timeout);
    if let Some(window) = collect_window(args, &spec, round_timeout)? {
        builder = builder.collect_window(window);
    }
    let peer_config = builder
        .aggregation(args.aggregation)
        .codec(args.codec)
        .serve_state(args.serve_state.into())
        .refound_after(args.refound_after)
        .build()?
        .with_genesis_quorum(args.genesis_quorum);
    let profile = Profile {
        bandwidth_bytes_per_s: args.bandwidth_mbit.saturating_mul(125_000),
        samples_per_s: 1000,
        samples_per_step: u32::try_from(args.batch_size).unwrap_or(u32::MAX),
    };
    Ok(NodeSetup {
        net,
        keypair,
        peer_config,
        profile,
        workload,
        checkpoint_dir: args.checkpoint_dir.clone(),
        join: args.join,
        options: peer_options(args, progress),
    })
}

/// How the node's actor reports, checkpoints and stops.
fn peer_options(args: &NodeArgs, progress: Option<indicatif::ProgressBar>) -> PeerOptions {
    PeerOptions {
        report: args.report,
        checkpoint_every: args.checkpoint_every,
        evaluate: args.synthetic_floats.is_none(),
        fault: args.inject_fault.map(|f| match f {
            FaultArg::Nan => Fault::NanContributions,
            FaultArg::Short => Fault::ShortContributions,
            FaultArg::ForgedState => Fault::ForgedState,
        }),
        progress,
        overlap: args.overlap,
        stop: StopRule {
            max_rounds: args.max_rounds,
            max_steps: args.max_steps,
            max_time: args.max_time,
            target_loss: args.target_loss,
        },
    }
}

fn workload_spec(args: &NodeArgs) -> anyhow::Result<WorkloadSpec> {
    if let Some(floats) = args.synthetic_floats {
        anyhow::ensure!(
            args.target_loss.is_none(),
            "--target-loss needs a model to evaluate; --synthetic-floats trains none"
        );
        return Ok(WorkloadSpec::Synthetic { floats });
    }
    if !matches!(args.model, ModelArg::TorchScript(_)) {
        anyhow::ensure!(
            args.loss == Loss::CrossEntropy,
            "--loss applies to --model torchscript:… only (the built-in models use cross-entropy)"
        );
        anyhow::ensure!(
            args.context.is_none(),
            "--context applies to --model torchscript:… only (the transformer's is in --model-size)"
        );
    }
    let (model, default_data) = match &args.model {
        ModelArg::Mlp => (ModelKind::Mlp.into(), "data/digits.safetensors"),
        ModelArg::Cnn => (ModelKind::Cnn.into(), "data/digits.safetensors"),
        ModelArg::Transformer => (
            ModelKind::Transformer(args.model_size).into(),
            "data/pycorpus.txt",
        ),
        ModelArg::TorchScript(path) => {
            anyhow::ensure!(
                args.data.is_some(),
                "--model torchscript:… needs --data FILE.safetensors (train_x/train_y/test_x/\
                 test_y, or train_tokens/test_tokens with --context)"
            );
            let spec = ScriptSpec {
                path: path.clone(),
                loss: args.loss,
            };
            let model = ModelChoice::Script {
                spec,
                context: args.context,
            };
            (model, "")
        }
    };
    Ok(WorkloadSpec::Model(ModelSpec {
        model,
        data: args.data.clone().unwrap_or_else(|| default_data.into()),
        device: args.device,
        batch_size: args.batch_size,
        shard: args.shard,
        model_seed: args.seed,
        data_seed: args.seed ^ (args.shard.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        training: training(args)?,
    }))
}

/// What every node of a mesh must set alike, told to peers so that one that differs is named.
fn training_descriptor(
    args: &NodeArgs,
    spec: &WorkloadSpec,
    workload: &Workload,
) -> TrainingDescriptor {
    let mut words: Vec<(&str, String)> = Vec::new();
    match spec {
        WorkloadSpec::Synthetic { floats } => words.push(("synthetic-floats", floats.to_string())),
        WorkloadSpec::Model(spec) => {
            match &spec.model {
                ModelChoice::Builtin(kind) => words.extend([
                    ("model", kind.to_string()),
                    ("seed", spec.model_seed.to_string()),
                ]),
                // The module's architecture, weights, data shapes and loss.
                ModelChoice::Script { .. } => words.extend(workload.identity().iter().cloned()),
            }
            match &spec.training {
                Training::Sync { learning_rate, .. } => words.extend([
                    ("strategy", "sync".to_owned()),
                    ("learning-rate", learning_rate.to_string()),
                ]),
                Training::Outer(outer) => words.push(("strategy", outer.strategy.to_string())),
            }
        }
    }
    words.extend([
        ("codec", args.codec.to_string()),
        ("aggregation", args.aggregation.to_string()),
    ]);
    TrainingDescriptor::new(words)
}

/// `--collect-window`, or its default under local steps (see the flag); `None` keeps the
/// protocol's.
fn collect_window(
    args: &NodeArgs,
    spec: &WorkloadSpec,
    round_timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    if let Some(window) = args.collect_window {
        anyhow::ensure!(
            window < round_timeout,
            "--collect-window must be shorter than --round-timeout"
        );
        return Ok(Some(window));
    }
    Ok(match spec {
        WorkloadSpec::Model(ModelSpec {
            training: Training::Outer(outer),
            ..
        }) => Some(outer.inner_time.unwrap_or(round_timeout).min(round_timeout) / 2),
        WorkloadSpec::Model(ModelSpec {
            training:
                Training::Sync {
                    compute_time: Some(budget),
                    ..
                },
            ..
        }) => Some((*budget).min(round_timeout / 2)),
        _ => None,
    })
}

/// `--strategy` and the flags that go with it.
fn training(args: &NodeArgs) -> anyhow::Result<Training> {
    let default = match args.model {
        ModelArg::Transformer => StrategyArg::Diloco,
        ModelArg::Mlp | ModelArg::Cnn | ModelArg::TorchScript(_) => StrategyArg::Sync,
    };
    let strategy = args.strategy.unwrap_or(default);
    anyhow::ensure!(
        !(args.overlap && strategy == StrategyArg::Sync),
        "--overlap needs local steps: give a --strategy other than sync (e.g. diloco)"
    );
    if strategy == StrategyArg::Sync {
        anyhow::ensure!(
            args.inner_time.is_none(),
            "--inner-time budgets local steps: give a --strategy other than sync, or use \
             --compute-time for synchronous training"
        );
        return Ok(Training::Sync {
            learning_rate: args.learning_rate.unwrap_or(0.1),
            compute_time: args.compute_time,
        });
    }
    anyhow::ensure!(
        args.compute_time.is_none(),
        "--compute-time budgets synchronous training: with --strategy {} use --inner-time",
        strategy
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    );
    let name = strategy
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    let mut config: StrategyConfig = name.parse()?;
    override_outer(&mut config, args.outer_lr, args.outer_momentum)?;
    let inner = match args.inner_optimizer {
        InnerArg::Adamw => InnerOptimizer::AdamW {
            lr: args.learning_rate.unwrap_or(1e-3),
            weight_decay: args.weight_decay,
        },
        InnerArg::Sgd => InnerOptimizer::Sgd {
            lr: args.learning_rate.unwrap_or(0.1),
        },
    };
    Ok(Training::Outer(OuterSpec {
        inner_steps: args.inner_steps,
        inner_time: args.inner_time,
        inner,
        strategy: config,
    }))
}

/// `--outer-lr` and `--outer-momentum` on the strategy's defaults.
fn override_outer(
    config: &mut StrategyConfig,
    lr: Option<f32>,
    momentum: Option<f32>,
) -> anyhow::Result<()> {
    match config {
        StrategyConfig::Diloco {
            outer_lr: rate,
            outer_momentum: m,
        }
        | StrategyConfig::FedAvgM {
            server_lr: rate,
            momentum: m,
        } => {
            *rate = lr.unwrap_or(*rate);
            *m = momentum.unwrap_or(*m);
            return Ok(());
        }
        StrategyConfig::FedAvg { server_lr: rate }
        | StrategyConfig::Scaffold { server_lr: rate }
        | StrategyConfig::FedOpt {
            server_lr: rate, ..
        } => *rate = lr.unwrap_or(*rate),
        _ => anyhow::ensure!(
            lr.is_none(),
            "--outer-lr does not apply to --strategy fedprox"
        ),
    }
    anyhow::ensure!(
        momentum.is_none(),
        "--outer-momentum applies to --strategy diloco and fedavgm only"
    );
    Ok(())
}

pub(crate) fn init_tracing(format: LogFormat, progress: Option<indicatif::ProgressBar>) {
    // Kademlia warns "Failed to trigger bootstrap: No known peers" every few seconds on a
    // founder, which is expected there, and gossipsub warns once per announcement it cannot
    // queue to a peer that does not read (hundreds a second); the node says it once per
    // episode instead (net/swarm_events.rs, `slow_peer`). Errors of both still show. The
    // swarm's INFO line "local_peer_id=…" repeats the "node started" line; its warnings show.
    const QUIET: &str = "info,libp2p_kad::behaviour=error,libp2p_gossipsub::behaviour=error,\
                         libp2p_swarm=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(QUIET));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(move || BarWriter(progress.clone()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Log output to stderr that hides the status line while a record is written.
struct BarWriter(Option<indicatif::ProgressBar>);

impl std::io::Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::{Cli, Command};

    fn refusal(flags: &[&str]) -> String {
        let argv = ["gradmesh", "node"].iter().chain(flags);
        match Cli::try_parse_from(argv) {
            Ok(_) => panic!("{flags:?} accepted"),
            Err(error) => error.to_string(),
        }
    }

    /// Issue 18: flags that make no sense are refused with the rule they break, not accepted
    /// (a checkpoint cadence of 0 never wrote one) or misread (`-1` as a flag).
    #[test]
    fn senseless_flags_are_refused_naming_the_rule() {
        for flag in [
            "--checkpoint-every",
            "--genesis-quorum",
            "--bandwidth-mbit",
            "--batch-size",
            "--inner-steps",
            "--threads",
            "--max-rounds",
            "--max-steps",
        ] {
            let error = refusal(&[flag, "0"]);
            assert!(
                error.contains(flag) && error.contains("must be at least 1"),
                "{error}"
            );
        }
        for flag in [
            "--round-timeout",
            "--inner-time",
            "--compute-time",
            "--collect-window",
            "--max-time",
        ] {
            for value in ["-1", "0", "nan", "inf"] {
                let error = refusal(&[flag, value]);
                assert!(
                    error.contains("must be a positive number of seconds"),
                    "{flag} {value}: {error}"
                );
            }
        }
        let error = refusal(&["--target-loss", "-0.5"]);
        assert!(error.contains("must be a finite number ≥ 0"), "{error}");
    }

    #[test]
    fn limits_and_durations_parse() {
        let cli = Cli::try_parse_from([
            "gradmesh",
            "node",
            "--max-rounds",
            "20",
            "--max-time",
            "90.5",
            "--round-timeout",
            "0.5",
            "--target-loss",
            "1.25",
        ])
        .expect("parses");
        let Command::Node(args) = cli.command else {
            panic!("not node");
        };
        assert_eq!(args.max_rounds, Some(20));
        assert_eq!(
            args.max_time,
            Some(std::time::Duration::from_secs_f64(90.5))
        );
        assert_eq!(args.round_timeout, std::time::Duration::from_millis(500));
        assert_eq!(args.target_loss, Some(1.25));
    }

    fn node_args(flags: &[&str]) -> super::NodeArgs {
        let argv = ["gradmesh", "node"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Node(args) => *args,
            _ => panic!("not node"),
        }
    }

    /// Issue 18, item 4: a time budget per contribution is for synchronous training, an inner
    /// phase's for local steps; each is refused with the other strategy, naming the right flag.
    /// Under `sync` the budget also becomes the leader's default wait for late nodes.
    #[test]
    fn compute_and_inner_time_budgets_go_with_their_strategy() {
        use gradmesh_node::mesh::Training;
        use std::time::Duration;

        let sync = node_args(&["--compute-time", "0.5"]);
        let training = super::training(&sync).expect("sync with a budget");
        assert!(matches!(
            training,
            Training::Sync { compute_time: Some(t), .. } if t == Duration::from_millis(500)
        ));
        let spec = super::workload_spec(&sync).expect("a spec");
        let window = super::collect_window(&sync, &spec, Duration::from_secs(12));
        assert_eq!(window.expect("valid"), Some(Duration::from_millis(500)));

        let diloco = node_args(&["--model", "transformer", "--compute-time", "0.5"]);
        let error = super::training(&diloco).expect_err("refused").to_string();
        assert!(error.contains("--inner-time"), "{error}");
        let error = super::training(&node_args(&["--inner-time", "2"]))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("--compute-time"), "{error}");
    }
}
