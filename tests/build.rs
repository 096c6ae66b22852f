//! The end-to-end tests link gradmesh-node (for its process cluster), which links LibTorch:
//! embed the rpath like every binary that links tch (docs/kernels.md).

include!("../kernels/libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=../kernels/libtorch_link.rs");
    emit_libtorch_link_args();
}
