//! DiLoCo at an equal token budget: validation loss against bytes sent per token, the
//! INTELLECT-1 trade-off, for in-process peers training the byte-level transformer.
//!
//! Every row trains on the same tokens, `peers × batch × context × steps`, from the same seeded
//! weights, and is scored by [`Workload::evaluate`] (64 fixed validation windows) on peer 0:
//!
//! - `sync`: one mean gradient per step, SGD with momentum 0.9 (`Training::Sync`), one row per
//!   `--sync-lr`;
//! - `diloco H=10`, `diloco H=50`: inner AdamW, outer Nesterov (`StrategyConfig::Diloco`);
//! - `diloco H=50 int8`, `fp16`: the same, with the messages averaged through the codec the way the
//!   mesh averages them ([`CompressedMean`]: each sender encodes, the span owner reduces and
//!   re-encodes, the others decode);
//! - `single 4× batch`: one peer on the whole training split with `peers × batch` windows per
//!   step and the same AdamW (one inner step per round under FedAvg of rate 1: plain AdamW).
//!
//! Peer `i` trains on shard `i` of `peers`; the mean of the fp32 rows is the mesh's weighted mean
//! in f64, in rank order. Bytes per token per peer are what the butterfly all-reduce sends per
//! round (`2·(n−1)/n` of the encoded message, [`CompressedMean::bytes_sent_per_step`]) over the
//! tokens one peer trains on between two all-reduces. Wall seconds time the training loop only.
//! Progress goes to stderr, the markdown table to stdout.
//!
//! ```text
//! cargo run --release -p gradmesh-node --example diloco_table -- [--size tiny|small] [--steps N]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use gradmesh_federated::strategy::StrategyConfig;
use gradmesh_kernels::codec::{CodecKind, CompressedMean};
use gradmesh_kernels::{Device, ModelKind, TransformerConfig};
use gradmesh_node::mesh::{
    Computed, InnerOptimizer, ModelSpec, OuterSpec, Training, Workload, WorkloadSpec,
};

type Error = Box<dyn std::error::Error>;

/// The table's settings; every default is the documented run (`make bench-diloco`).
#[derive(Debug, Parser)]
struct Args {
    /// Transformer size: `tiny` or `small` (or the explicit `layers=..,width=..` form).
    #[arg(long, default_value = "tiny")]
    size: TransformerConfig,
    /// The corpus (its last 10 % is validation).
    #[arg(long, default_value = "data/pycorpus.txt")]
    data: PathBuf,
    /// Peers of the mesh rows.
    #[arg(long, default_value_t = 4)]
    peers: usize,
    /// Windows per peer per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Steps per peer: the token budget is peers × batch × context × steps.
    #[arg(long, default_value_t = 500)]
    steps: u32,
    /// Seeds 1..=N (model weights and batch order).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Synchronous SGD learning rates, one row each (0.3 was the best of 0.1, 0.3, 0.5 and 1 at
    /// the default budget, seed 1; 1 diverges: docs/benchmarks.md).
    #[arg(long, value_delimiter = ',', default_values_t = [0.3_f32])]
    sync_lr: Vec<f32>,
    /// Inner (and single-process) AdamW learning rate (1e-2 beat 3e-3 and 2e-2 at the default
    /// budget, seed 1, for DiLoCo H=50 and the single process: docs/benchmarks.md).
    #[arg(long, default_value_t = 1e-2)]
    inner_lr: f32,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f32,
    /// DiLoCo outer learning rate.
    #[arg(long, default_value_t = 0.7)]
    outer_lr: f32,
    /// DiLoCo outer Nesterov momentum.
    #[arg(long, default_value_t = 0.9)]
    outer_momentum: f32,
    /// Inner steps of the DiLoCo rows.
    #[arg(long, value_delimiter = ',', default_values_t = [10_u32, 50])]
    inner_steps: Vec<u32>,
    /// Codecs of the extra rows at the largest H (the fp32 row is always run).
    #[arg(long, value_delimiter = ',', default_values_t = [CodecKind::Int8 { block: gradmesh_kernels::codec::Int8Block::DEFAULT }, CodecKind::Fp16])]
    codecs: Vec<CodecKind>,
    /// Leave out the synchronous rows.
    #[arg(long)]
    no_sync: bool,
    /// Leave out the single-process row.
    #[arg(long)]
    no_single: bool,
    /// LibTorch intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    Sync { lr: f32 },
    Diloco { inner_steps: u32, codec: CodecKind },
    Single,
}

impl Row {
    /// The row's name; `peers` is the mesh's size, the single process's batch factor.
    fn label(self, peers: usize) -> String {
        match self {
            Self::Sync { lr } => format!("sync SGD (momentum 0.9, lr {lr})"),
            Self::Diloco {
                inner_steps,
                codec: CodecKind::None,
            } => format!("DiLoCo H={inner_steps}, fp32"),
            Self::Diloco { inner_steps, codec } => format!("DiLoCo H={inner_steps}, {codec}"),
            Self::Single => format!("single process, {peers}× batch, AdamW"),
        }
    }

    /// Local steps between two all-reduces.
    fn steps_per_round(self) -> u32 {
        match self {
            Self::Sync { .. } | Self::Single => 1,
            Self::Diloco { inner_steps, .. } => inner_steps,
        }
    }
}

/// One seed's run of a row.
#[derive(Debug, Clone, Copy)]
struct Run {
    loss: f32,
    rounds: u32,
    bytes_per_round: usize,
    seconds: f64,
}

/// How the peers' messages are averaged.
#[derive(Debug)]
enum Mean {
    /// The mesh's fp32 mean: weights × values summed in f64 in rank order, divided once.
    Exact,
    /// Through a codec, as the mesh's compressed all-reduce.
    Codec(CompressedMean),
}

impl Mean {
    fn reduce(&mut self, computed: &[Computed]) -> Result<Vec<Vec<f32>>, Error> {
        match self {
            Self::Exact => Ok(vec![exact_mean(computed); computed.len()]),
            Self::Codec(mean) => {
                if computed.windows(2).any(|w| w[0].weight != w[1].weight) {
                    return Err("the codec mean weighs peers equally; their weights differ".into());
                }
                let mut buffers: Vec<Vec<f32>> =
                    computed.iter().map(|c| c.gradient.to_vec()).collect();
                let mut views: Vec<&mut [f32]> =
                    buffers.iter_mut().map(Vec::as_mut_slice).collect();
                mean.reduce(&mut views)?;
                Ok(buffers)
            }
        }
    }
}

fn exact_mean(computed: &[Computed]) -> Vec<f32> {
    let total: f64 = computed.iter().map(|c| f64::from(c.weight)).sum();
    let len = computed.first().map_or(0, |c| c.gradient.len());
    #[allow(clippy::cast_possible_truncation)] // The mean of f32 values, rounded once.
    (0..len)
        .map(|i| {
            let sum: f64 = computed
                .iter()
                .map(|c| f64::from(c.weight) * f64::from(c.gradient[i]))
                .sum();
            (sum / total) as f32
        })
        .collect()
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    gradmesh_kernels::set_torch_threads(args.threads);
    let rows = rows(&args)?;
    println!("{}", header(&args));
    println!();
    let mut results = Vec::with_capacity(rows.len());
    for &row in &rows {
        let runs = (1..=args.seeds)
            .map(|seed| run(&args, row, seed))
            .collect::<Result<Vec<_>, _>>()?;
        results.push((row, runs));
    }
    print_table(&args, &results);
    Ok(())
}

/// The rows the arguments ask for, checked against the step budget.
fn rows(args: &Args) -> Result<Vec<Row>, Error> {
    if args.peers == 0 || args.batch == 0 || args.steps == 0 || args.seeds == 0 {
        return Err("--peers, --batch, --steps and --seeds must be ≥ 1".into());
    }
    if let Some(h) = args
        .inner_steps
        .iter()
        .find(|&&h| h == 0 || !args.steps.is_multiple_of(h))
    {
        return Err(format!("--steps {} is not a multiple of H = {h}", args.steps).into());
    }
    let mut rows = Vec::new();
    if !args.no_sync {
        rows.extend(args.sync_lr.iter().map(|&lr| Row::Sync { lr }));
    }
    rows.extend(args.inner_steps.iter().map(|&inner_steps| Row::Diloco {
        inner_steps,
        codec: CodecKind::None,
    }));
    if let Some(&inner_steps) = args.inner_steps.iter().max() {
        rows.extend(
            args.codecs
                .iter()
                .filter(|&&codec| codec != CodecKind::None)
                .map(|&codec| Row::Diloco { inner_steps, codec }),
        );
    }
    if !args.no_single {
        rows.push(Row::Single);
    }
    Ok(rows)
}

fn header(args: &Args) -> String {
    let context = args.size.context();
    let tokens = args.peers * args.batch * context * args.steps as usize;
    format!(
        "diloco_table: model {} ({} parameters), {}, {} peers × batch {} × context {context} × \
         {} steps = {tokens} training tokens per row; seeds 1..={}; sync SGD momentum 0.9; \
         AdamW lr {} (β 0.9/0.95, weight decay {}); outer Nesterov lr {} momentum {}; \
         LibTorch threads {}",
        args.size,
        args.size.parameter_count(),
        args.data.display(),
        args.peers,
        args.batch,
        args.steps,
        args.seeds,
        args.inner_lr,
        args.weight_decay,
        args.outer_lr,
        args.outer_momentum,
        args.threads,
    )
}

/// The workload of peer `index` of `count` for `row` and `seed`.
fn peer(
    args: &Args,
    row: Row,
    seed: u64,
    (index, count): (usize, usize),
) -> Result<Workload, Error> {
    let adamw = InnerOptimizer::AdamW {
        lr: args.inner_lr,
        weight_decay: args.weight_decay,
    };
    let outer = |inner_steps, strategy| {
        Training::Outer(OuterSpec {
            inner_steps,
            inner_time: None,
            inner: adamw,
            strategy,
        })
    };
    let (training, batch_size) = match row {
        Row::Sync { lr } => (
            Training::Sync {
                learning_rate: lr,
                compute_time: None,
            },
            args.batch,
        ),
        Row::Diloco { inner_steps, .. } => (
            outer(
                inner_steps,
                StrategyConfig::Diloco {
                    outer_lr: args.outer_lr,
                    outer_momentum: args.outer_momentum,
                },
            ),
            args.batch,
        ),
        // One inner step per round and θ ← θ + Δ: AdamW on θ itself.
        Row::Single => (
            outer(1, StrategyConfig::FedAvg { server_lr: 1.0 }),
            args.batch * args.peers,
        ),
    };
    Ok(Workload::build(&WorkloadSpec::Model(ModelSpec {
        model: ModelKind::Transformer(args.size).into(),
        data: args.data.clone(),
        device: Device::Cpu,
        batch_size,
        shard: (index, count),
        model_seed: seed,
        data_seed: seed * 100 + index as u64,
        training,
    }))?)
}

/// Trains `row` from `seed` and scores it.
fn run(args: &Args, row: Row, seed: u64) -> Result<Run, Error> {
    let count = if row == Row::Single { 1 } else { args.peers };
    let mut peers = (0..count)
        .map(|index| peer(args, row, seed, (index, count)))
        .collect::<Result<Vec<_>, _>>()?;
    let rounds = args.steps / row.steps_per_round();
    let (mut mean, mut message_len) = (None, 0);
    let started = Instant::now();
    for _ in 0..rounds {
        let computed = peers
            .iter_mut()
            .map(Workload::compute)
            .collect::<Result<Vec<_>, _>>()?;
        message_len = computed[0].gradient.len();
        let mean = match &mut mean {
            Some(mean) => mean,
            None => mean.insert(new_mean(row, message_len, count, seed)?),
        };
        for (peer, average) in peers.iter_mut().zip(mean.reduce(&computed)?) {
            peer.apply(&average)?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let state = peers[0].state_bytes();
    if peers.iter().any(|p| p.state_bytes() != state) {
        return Err(format!(
            "{}, seed {seed}: peers out of lockstep",
            row.label(args.peers)
        )
        .into());
    }
    let loss = peers[0].evaluate()?.ok_or("a model evaluates")?.loss;
    let bytes_per_round = bytes_per_round(row, message_len, count)?;
    eprintln!(
        "{} seed {seed}: validation loss {loss:.4}, {rounds} rounds, {seconds:.1} s",
        row.label(args.peers)
    );
    Ok(Run {
        loss,
        rounds,
        bytes_per_round,
        seconds,
    })
}

fn new_mean(row: Row, len: usize, peers: usize, seed: u64) -> Result<Mean, Error> {
    Ok(match row {
        Row::Diloco { codec, .. } if codec != CodecKind::None => {
            Mean::Codec(CompressedMean::new(codec, len, peers, seed)?)
        }
        _ => Mean::Exact,
    })
}

/// The most bytes any of `peers` sends in one all-reduce of a `len`-float message.
fn bytes_per_round(row: Row, len: usize, peers: usize) -> Result<usize, Error> {
    let codec = match row {
        Row::Diloco { codec, .. } => codec,
        Row::Sync { .. } | Row::Single => CodecKind::None,
    };
    let mean = CompressedMean::new(codec, len, peers, 0)?;
    Ok((0..peers)
        .filter_map(|p| mean.bytes_sent_per_step(p))
        .max()
        .unwrap_or(0))
}

#[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
fn print_table(args: &Args, results: &[(Row, Vec<Run>)]) {
    let tokens_per_step = (args.batch * args.size.context()) as f64;
    let reference: Option<&Vec<Run>> = results
        .iter()
        .filter(|(row, _)| {
            matches!(row, Row::Diloco { codec: CodecKind::None, inner_steps }
                if Some(inner_steps) == args.inner_steps.iter().max())
        })
        .map(|(_, runs)| runs)
        .next();
    println!(
        "| configuration | outer rounds | validation loss, mean (min–max) | \
         Δ vs fp32, mean (min–max) | bytes sent / token / peer | wall s |"
    );
    println!("|---|---:|---|---|---:|---:|");
    for (row, runs) in results {
        let losses: Vec<f64> = runs.iter().map(|r| f64::from(r.loss)).collect();
        let rounds = match row {
            Row::Single => "— (no all-reduce)".to_owned(),
            _ => runs[0].rounds.to_string(),
        };
        let delta = match (row, reference) {
            (Row::Diloco { codec, .. }, Some(fp32)) if *codec != CodecKind::None => {
                let d: Vec<f64> = losses
                    .iter()
                    .zip(fp32)
                    .map(|(l, r)| l - f64::from(r.loss))
                    .collect();
                spread(&d, true)
            }
            _ => "—".to_owned(),
        };
        let tokens_per_round = tokens_per_step * f64::from(row.steps_per_round());
        let bytes = runs[0].bytes_per_round as f64 / tokens_per_round;
        let seconds = runs.iter().map(|r| r.seconds).sum::<f64>() / runs.len() as f64;
        println!(
            "| {} | {rounds} | {} | {delta} | {bytes:.2} | {seconds:.1} |",
            row.label(args.peers),
            spread(&losses, false),
        );
    }
}

/// `mean (min–max)` to three decimals, signed for differences; a non-finite loss is a divergence.
#[allow(clippy::cast_precision_loss)] // A handful of seeds.
fn spread(values: &[f64], signed: bool) -> String {
    let diverged = values.iter().filter(|v| !v.is_finite()).count();
    if diverged > 0 {
        return format!("diverged ({diverged} of {} seeds)", values.len());
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if signed {
        format!("{mean:+.3} ({min:+.3} – {max:+.3})")
    } else {
        format!("{mean:.3} ({min:.3}–{max:.3})")
    }
}
