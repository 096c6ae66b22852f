//! Embeds an rpath to LibTorch for `gradmesh-sim` and its tests (the `fl` subcommand trains with
//! the kernels' MLP); see `kernels/libtorch_link.rs` and docs/kernels.md.

include!("../kernels/libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=../kernels/libtorch_link.rs");
    emit_libtorch_link_args();
}
