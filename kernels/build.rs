//! Link settings for this crate's own test and example binaries; see `libtorch_link.rs`.
//! (`cargo:rustc-link-arg` from a library's build script reaches only its own package's targets,
//! so a binary crate that links tch repeats this in its own build script.)

include!("libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=libtorch_link.rs");
    emit_libtorch_link_args();
}
