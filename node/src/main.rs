//! `gradmesh`: the node binary. Parses the command line and hands over to the library; the
//! `anyhow` edge of the program.

mod cli;

use cli::Command;

fn main() -> anyhow::Result<()> {
    match cli::parse()?.command {
        Command::Node(args) => cli::node::run(*args),
        Command::Demo(args) => cli::demo::run(&args),
        Command::ProtocolDemo(args) => cli::run_protocol_demo(&args),
        Command::Bench(command) => cli::bench::run(&command),
    }
}
