//! `gradmesh`: the node binary. Parses the command line and hands over to the library; the
//! `anyhow` edge of the program.

mod cli;

/// jemalloc keeps freed round buffers (hundreds of MB per round) in the process for the next
/// round instead of unmapping them; see docs/benchmarks.md, "All-reduce (real nodes)".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf` string, read once at start): never hand freed pages
/// back to the kernel. A round frees and reallocates the same few hundred MB; with the default
/// decay, jemalloc purges them between rounds and every round pays the page faults and zeroing
/// again (a third of the CPU time of a 64 MiB round, mostly in the kernel). The resident size
/// stays at the peak of one round. `_RJEM_MALLOC_CONF` in the environment still overrides it.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"dirty_decay_ms:-1,muzzy_decay_ms:-1\0"[0];

use cli::Command;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", gradmesh_node::error_line(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    match cli::parse()?.command {
        Command::Node(args) => cli::node::run(*args),
        Command::Demo(args) => cli::demo::run(&args),
        Command::ProtocolDemo(args) => cli::run_protocol_demo(&args),
        Command::Bench(command) => cli::bench::run(&command),
    }
}
