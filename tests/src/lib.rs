//! gradmesh-e2e: end-to-end tests that run the real `gradmesh` binary as a separate process.
//! Every test is bounded in time and waits on the process, never on sleeps.
//!
//! The binary is the one `cargo test --workspace` builds next to the test executables
//! (`target/<profile>/gradmesh`); [`gradmesh_bin`] finds it.

use std::path::PathBuf;

/// Path of the `gradmesh` binary built in this target directory.
///
/// # Panics
/// If the binary is missing: run the tests with `cargo test --workspace` (or build
/// `-p gradmesh-node` first), which builds it.
#[must_use]
pub fn gradmesh_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/gradmesh
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target layout");
    let bin = dir.join(format!("gradmesh{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace` or `cargo build -p gradmesh-node` first",
        bin.display()
    );
    bin
}
