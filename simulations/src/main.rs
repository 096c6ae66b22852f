//! The `gradmesh-sim` command line (subcommands arrive with the collective models).

fn main() {}
