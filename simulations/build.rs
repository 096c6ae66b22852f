//! Embeds an rpath to LibTorch for `gradmesh-sim` and its tests when the `fl` feature (the
//! federated simulator, which trains with the kernels' MLP) is on; see `kernels/libtorch_link.rs`
//! and docs/kernels.md.

include!("../kernels/libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=../kernels/libtorch_link.rs");
    if std::env::var_os("CARGO_FEATURE_FL").is_some() {
        emit_libtorch_link_args();
    }
}
