//! Final digits test accuracy when every step's gradient goes through a codec, vs uncompressed,
//! over the same steps: 4 simulated peers ([`LocalMesh`]), each on its own quarter of the training
//! set, averaging gradients the way the mesh does (each peer encodes its part of every span, the
//! span owner decodes, sums in fp32 and re-encodes for the all-gather).
//!
//! `cargo run --release -p gradmesh-kernels --example codec_accuracy [STEPS]` (or
//! `make bench-codec-accuracy`). Deterministic: the same STEPS print the same table.

use std::path::Path;

use gradmesh_kernels::{
    Dataset, Device, LocalMesh, ModelKind, OptimizerConfig, codec::CodecKind, set_torch_threads,
};

const PEERS: usize = 4;
const BATCH_PER_PEER: usize = 16;
const SEED: u64 = 20_261_123;
const CODECS: [&str; 7] = [
    "none",
    "fp16",
    "bf16",
    "int8:64",
    "topk:0.01",
    "powersgd:2",
    "powersgd:4",
];
/// Steps over which the printed training loss is averaged (the last ones of the run).
const LOSS_WINDOW: u64 = 50;

#[derive(Clone, Copy)]
struct Row {
    accuracy: f64,
    loss: f32,
    bytes: usize,
}

fn run(data: &Dataset, codec: CodecKind, steps: u64) -> Result<Row, Box<dyn std::error::Error>> {
    let optimizer = OptimizerConfig::sgd(0.1, 0.9, false, 0.0)?;
    let mut mesh = LocalMesh::new(
        ModelKind::Mlp,
        optimizer,
        codec,
        data.train_len(),
        PEERS,
        BATCH_PER_PEER,
        SEED,
    )?;
    let mut loss_tail = 0.0;
    for step in 0..steps {
        let loss = mesh.step(data)?;
        if step + LOSS_WINDOW >= steps {
            loss_tail += loss;
        }
    }
    if !mesh.is_in_lockstep() {
        return Err(
            format!("{codec}: peers diverged (the compressed mean differs between peers)").into(),
        );
    }
    #[allow(clippy::cast_precision_loss)] // LOSS_WINDOW and steps are small.
    let loss = loss_tail / LOSS_WINDOW.min(steps).max(1) as f32;
    Ok(Row {
        accuracy: mesh.evaluate(&data.test()?)?,
        loss,
        bytes: mesh.bytes_sent_per_step_max(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    set_torch_threads(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = Dataset::load_digits(&root.join("data/digits.safetensors"), Device::Cpu)?;
    println!(
        "MLP 64-128-10 on digits, {PEERS} peers x batch {BATCH_PER_PEER} (own shard each), \
         SGD lr 0.1 momentum 0.9, {steps} steps, seed {SEED}"
    );
    println!(
        "{:<11} {:>10} {:>7} {:>11} {:>9} {:>8}",
        "codec", "bytes/step", "ratio", "train loss", "test acc", "vs none"
    );
    // The first codec is `none`: the baseline for the ratio and accuracy columns.
    let mut baseline: Option<Row> = None;
    for name in CODECS {
        let row = run(&data, name.parse()?, steps)?;
        let base = *baseline.get_or_insert(row);
        #[allow(clippy::cast_precision_loss)] // Byte counts are far below 2^52.
        let ratio = base.bytes as f64 / row.bytes as f64;
        println!(
            "{name:<11} {:>10} {ratio:>7.1} {:>11.4} {:>8.2}% {:>+8.2}",
            row.bytes,
            row.loss,
            100.0 * row.accuracy,
            100.0 * (row.accuracy - base.accuracy)
        );
    }
    Ok(())
}
