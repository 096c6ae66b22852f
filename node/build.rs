//! The node links LibTorch through gradmesh-kernels: embed the rpath and keep libtorch_cuda
//! (see `kernels/libtorch_link.rs` and docs/kernels.md).

include!("../kernels/libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=../kernels/libtorch_link.rs");
    emit_libtorch_link_args();
}
