//! `gradmesh bench torchscript`: a user's TorchScript module trained by one node (DiLoCo inner
//! steps, outer step, commit and evaluation after each round: what a user running the node
//! gets) against the same module in a plain PyTorch loop (`scripts/export_model.py loop`, the
//! eager model with the same AdamW, batch size and threads), in the same run; prints both rates
//! and their ratio (issue 15, row 7).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use gradmesh_node::cluster::Cluster;
use gradmesh_node::mesh::Report;
use serde::{Deserialize, Serialize};

#[derive(Debug, Args)]
pub(crate) struct TorchscriptArgs {
    /// The example module (`scripts/export_model.py export`): the small GPT on a byte stream,
    /// or the small ResNet on the digits.
    #[arg(long, value_enum, default_value_t = Example::Gpt)]
    model: Example,
    /// Timed local steps of each side (the node's first round is a warm-up, as are the loop's
    /// first 20 steps).
    #[arg(long, default_value_t = 500)]
    steps: u64,
    /// Inner steps per round of the node (DiLoCo's H).
    #[arg(long, default_value_t = 50)]
    inner_steps: u64,
    /// Examples (or token windows of 64) per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// LibTorch intra-op threads of each side.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Python of the project venv.
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Print one JSON line with both figures at the end.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Example {
    Gpt,
    Cnn,
}

impl Example {
    const fn name(self) -> &'static str {
        match self {
            Self::Gpt => "gpt",
            Self::Cnn => "cnn",
        }
    }

    const fn data(self) -> &'static str {
        match self {
            Self::Gpt => "tokens.safetensors",
            Self::Cnn => "digits.safetensors",
        }
    }
}

/// Tokens per window of the GPT example (its context).
const CONTEXT: usize = 64;

/// One side's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rate {
    steps: u64,
    seconds: f64,
    steps_per_s: f64,
}

pub(crate) fn run(args: &TorchscriptArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steps >= args.inner_steps && args.inner_steps >= 1,
        "--steps must be at least --inner-steps (≥ 1)"
    );
    let dir = std::env::temp_dir().join(format!("gradmesh-bench-script-{}", std::process::id()));
    let result = measure(args, &dir).with_context(|| format!("files are in {}", dir.display()));
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (node, loop_) = result?;
    let model = args.model.name();
    println!(
        "node       {model}: {:.1} steps/s ({} steps in {:.2} s; {} inner steps a round, then the \
         outer step, commit and evaluation)",
        node.steps_per_s, node.steps, node.seconds, args.inner_steps
    );
    println!(
        "PyTorch    {model}: {:.1} steps/s ({} steps in {:.2} s; eager module, AdamW)",
        loop_.steps_per_s, loop_.steps, loop_.seconds
    );
    println!(
        "ratio node/PyTorch: {:.2}x (intra-op threads: {} each; batch {})",
        node.steps_per_s / loop_.steps_per_s,
        args.threads,
        args.batch_size
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "model": model, "node": node, "pytorch": loop_ })
        );
    }
    Ok(())
}

fn measure(args: &TorchscriptArgs, dir: &Path) -> anyhow::Result<(Rate, Rate)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    python(
        args,
        &["scripts/export_model.py", "export"],
        &[dir.as_os_str()],
    )?;
    let data = dir.join(args.model.data());
    let loop_ = pytorch_loop(args, &data)?;
    let node = node_rate(args, dir, &data)?;
    Ok((node, loop_))
}

/// Runs `python ARGS PATHS` and returns its stdout.
fn python(
    args: &TorchscriptArgs,
    script: &[&str],
    paths: &[&std::ffi::OsStr],
) -> anyhow::Result<String> {
    let output = Command::new(&args.python)
        .args(script)
        .args(paths)
        .output()
        .with_context(|| format!("running {} {}", args.python.display(), script.join(" ")))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        script.join(" "),
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn pytorch_loop(args: &TorchscriptArgs, data: &Path) -> anyhow::Result<Rate> {
    let settings = [
        "--steps".to_owned(),
        args.steps.to_string(),
        "--batch".to_owned(),
        args.batch_size.to_string(),
        "--context".to_owned(),
        CONTEXT.to_string(),
        "--threads".to_owned(),
        args.threads.to_string(),
    ];
    let mut script = vec!["scripts/export_model.py", "loop", args.model.name()];
    let data = data.as_os_str().to_string_lossy().into_owned();
    script.push(&data);
    script.extend(settings.iter().map(String::as_str));
    let out = python(args, &script, &[])?;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading the loop's figures from {line:?}"))
}

/// One node, alone in its mesh, with `--max-steps`: steps after its first commit divided by the
/// time from that commit to its stop report.
fn node_rate(args: &TorchscriptArgs, dir: &Path, data: &Path) -> anyhow::Result<Rate> {
    let bin = std::env::current_exe().context("locating the gradmesh binary")?;
    let mut cluster = Cluster::new(&bin, &dir.join("node"))?;
    let module = format!(
        "torchscript:{}",
        dir.join(format!("{}.pt", args.model.name())).display()
    );
    let mut flags: Vec<String> = [
        "--model",
        &module,
        "--data",
        &data.to_string_lossy(),
        "--strategy",
        "diloco",
        "--inner-steps",
        &args.inner_steps.to_string(),
        "--batch-size",
        &args.batch_size.to_string(),
        "--threads",
        &args.threads.to_string(),
        "--max-steps",
        &(args.steps + args.inner_steps).to_string(),
    ]
    .map(String::from)
    .to_vec();
    if args.model == Example::Gpt {
        flags.extend(["--context".to_owned(), CONTEXT.to_string()]);
    }
    cluster.spawn(&flags)?;
    let wait = Duration::from_secs(600);
    cluster.wait_for(wait, "the first commit", |_, r| {
        matches!(r, Report::Committed { .. })
    })?;
    let from = Instant::now();
    let (_, stopped) =
        cluster.wait_for(wait, "the stop", |_, r| matches!(r, Report::Stopped { .. }))?;
    let seconds = from.elapsed().as_secs_f64();
    let Report::Stopped { steps, .. } = stopped else {
        anyhow::bail!("no stop report");
    };
    let steps = steps.saturating_sub(args.inner_steps);
    #[allow(clippy::cast_precision_loss)]
    let steps_per_s = steps as f64 / seconds;
    Ok(Rate {
        steps,
        seconds,
        steps_per_s,
    })
}
