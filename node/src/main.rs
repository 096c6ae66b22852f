//! `gradmesh`: the node binary. Subcommands arrive with the node issue; for now it only reports
//! its version.

use clap::Parser;

/// gradmesh: a peer-to-peer training mesh.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
