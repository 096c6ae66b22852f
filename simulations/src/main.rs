//! `gradmesh-sim`: validate the collective models, run scenarios, benchmark scale.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gradmesh_sim::validate;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "gradmesh-sim",
    version,
    about = "gradmesh's discrete-event network simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print simulated all-reduce times against the α-β closed forms (p = 4..1024, 1 MB..1 GB).
    Validate,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate => run_validate(),
    }
}

fn run_validate() -> anyhow::Result<()> {
    let started = Instant::now();
    let rows = validate::run_grid(&validate::full_grid()).context("validation grid")?;
    print!("{}", validate::format_table(&rows));
    let worst = rows
        .iter()
        .map(validate::ValidationRow::relative_error)
        .fold(0.0, f64::max);
    println!(
        "alpha = {} s one-way, bandwidth = {} B/s per direction; worst error {:.4}%; wall {:.1} s",
        validate::ALPHA_S,
        validate::BANDWIDTH_BYTES_PER_S,
        100.0 * worst,
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        worst < 0.05,
        "a simulated time is off its closed form by more than 5%"
    );
    Ok(())
}
