//! Time per training step of a transformer size on a corpus (the table in docs/kernels.md):
//!
//! `cargo run --release -p gradmesh-kernels --example bench_lm -- SIZE BATCH STEPS THREADS CORPUS [DEVICE]`
//!
//! e.g. `-- small 16 50 2 data/pycorpus.txt`. AdamW (lr 1e-3), 3 untimed warm-up steps, then the
//! median of STEPS timed `Trainer::train_step`s (batches drawn outside the timing), and the
//! validation loss on up to 64 windows before and after.

use std::{error::Error, path::Path, process::ExitCode, time::Instant};

use gradmesh_kernels::{
    CharCorpus, Device, ModelKind, OptimizerConfig, Trainer, TransformerConfig, set_torch_threads,
};

const WARMUP: u64 = 3;
const VALID_WINDOWS: usize = 64;
const SEED: u64 = 7;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("argument {i} ({what}) missing or invalid; usage: bench_lm SIZE BATCH STEPS THREADS CORPUS [DEVICE]"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench_lm: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let config: TransformerConfig = arg(&args, 1, "size")?;
    let batch: usize = arg(&args, 2, "batch")?;
    let steps: u64 = arg(&args, 3, "steps")?;
    let threads: usize = arg(&args, 4, "threads")?;
    let corpus_path: String = arg(&args, 5, "corpus")?;
    let device: Device = args.get(6).map_or("cpu", String::as_str).parse()?;
    set_torch_threads(threads);
    let corpus = CharCorpus::load(Path::new(&corpus_path), device)?;
    let optimizer = OptimizerConfig::adamw(1e-3, 0.9, 0.95, 1e-8, 0.01)?;
    let mut trainer = Trainer::new(ModelKind::Transformer(config), optimizer, device, 1)?;
    println!("{config}: {} parameters", trainer.layout().len());
    let windows = VALID_WINDOWS.min(corpus.valid_windows(config.context()));
    let valid = corpus.valid_batch(windows, config.context())?;
    let before = trainer.loss(&valid)?;
    let mut times = Vec::new();
    let mut loss = 0.0;
    for step in 0..steps + WARMUP {
        let windows = corpus.train_batch(step, batch, config.context(), SEED)?;
        let clock = Instant::now();
        loss = trainer.train_step(&windows)?;
        if step >= WARMUP {
            times.push(clock.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let after = trainer.loss(&valid)?;
    println!(
        "batch {batch}, {threads} threads, {steps} timed steps: median {median:.1} ms; \
         train loss {loss:.3}; validation {before:.3} -> {after:.3}"
    );
    Ok(())
}
