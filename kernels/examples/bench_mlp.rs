//! Training steps per second of the digits MLP (batch 64, SGD momentum), ours vs PyTorch eager
//! (`scripts/bench_torch_step.py`) on the same model, batch size and thread count, in one run.
//!
//! `cargo run --release -p gradmesh-kernels --example bench_mlp [STEPS]` (or `make bench-kernels`).
//! Each figure is the best of 3 timed repeats after a warm-up, since the box is shared.

use std::{path::Path, process::Command, time::Instant};

use gradmesh_kernels::{
    Batch, BatchSampler, Dataset, Device, KernelError, ModelKind, OptimizerConfig, Trainer,
    set_torch_threads,
};

const BATCH: usize = 64;
const WARMUP: u64 = 200;
const REPEATS: u32 = 3;
const SEED: u64 = 20_261_123;

fn ours(data: &Dataset, threads: usize, steps: u64) -> Result<f64, KernelError> {
    set_torch_threads(threads);
    let config = OptimizerConfig::sgd(0.1, 0.9, false, 0.0)?;
    let mut trainer = Trainer::new(ModelKind::Mlp, config, Device::Cpu, SEED)?;
    let mut sampler = BatchSampler::new(data.train_len(), BATCH, SEED)?;
    let per_epoch = (data.train_len() / BATCH) as u64;
    let batches: Vec<Batch> = (0..per_epoch)
        .map(|s| data.train_batch(sampler.indices(s)))
        .collect::<Result<_, _>>()?;
    let mut run = |n: u64| -> Result<(), KernelError> {
        for step in 0..n {
            trainer.train_step(&batches[(step % per_epoch) as usize])?;
        }
        Ok(())
    };
    run(WARMUP)?;
    let mut best = 0.0_f64;
    for _ in 0..REPEATS {
        let start = Instant::now();
        run(steps)?;
        best = best.max(steps as f64 / start.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn pytorch(root: &Path, digits: &Path, threads: usize, steps: u64) -> Option<f64> {
    let output = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/bench_torch_step.py"))
        .arg(digits)
        .args([
            threads.to_string(),
            steps.to_string(),
            WARMUP.to_string(),
            REPEATS.to_string(),
        ])
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("steps_per_s="))
        .and_then(|v| v.trim().parse().ok())
}

fn main() -> Result<(), KernelError> {
    let steps: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let digits = root.join("data/digits.safetensors");
    let data = Dataset::load_digits(&digits, Device::Cpu)?;
    println!(
        "MLP 64-128-10 on digits, batch {BATCH}, SGD momentum, {steps} steps x best of {REPEATS}"
    );
    println!(
        "{:>7} {:>14} {:>16} {:>7}",
        "threads", "ours steps/s", "torch steps/s", "ratio"
    );
    for threads in [1, 2] {
        let ours = ours(&data, threads, steps)?;
        match pytorch(&root, &digits, threads, steps) {
            Some(torch) => println!(
                "{threads:>7} {ours:>14.0} {torch:>16.0} {:>7.2}",
                ours / torch
            ),
            None => println!("{threads:>7} {ours:>14.0} {:>16} {:>7}", "failed", "-"),
        }
    }
    Ok(())
}
