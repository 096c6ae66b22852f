// Shared build-script logic for every crate that links LibTorch through tch (gradmesh-kernels'
// own tests, benches and examples; the node binary). Include it from a build script with
// `include!("<path>/kernels/libtorch_link.rs");` and call `emit_libtorch_link_args()`; the crate
// must depend on `torch-sys = "=0.24.0"` directly, because torch-sys (`links = "tch"`) exposes its
// library directory as `DEP_TCH_LIBTORCH_LIB` only to direct dependents.
//
// It emits, for the including package's own linked targets:
// - `-Wl,-rpath,<torch/lib>` so binaries find libtorch_cpu.so without LD_LIBRARY_PATH (the wheel's
//   libraries find the nvidia-* wheels through their own $ORIGIN-relative RUNPATHs);
// - `-Wl,--no-as-needed -ltorch_cuda` when the LibTorch build has CUDA: nothing references
//   libtorch_cuda.so directly, so as-needed linking would drop it and CUDA would look unavailable;
// - a check that a pip wheel's `torch/version.py` says 2.11.x, the version tch 0.24 is built
//   against (torch-sys skips its own check when LIBTORCH points at a wheel's torch directory).

/// The PyTorch release tch 0.24 binds.
const TORCH_VERSION: &str = "2.11.";

/// Emits the link arguments described above; panics (failing the build) on a version mismatch.
fn emit_libtorch_link_args() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB unset: depend on torch-sys directly for an rpath");
        return;
    };
    let lib = std::path::PathBuf::from(lib);
    let version_file = lib.join("..").join("version.py");
    if let Ok(text) = std::fs::read_to_string(&version_file) {
        let version = text.lines().find_map(|l| l.strip_prefix("__version__ = ")).unwrap_or("?");
        assert!(
            version.trim_matches(['\'', '"']).starts_with(TORCH_VERSION),
            "{}: torch {version}, but tch 0.24 needs {TORCH_VERSION}x (run scripts/setup.sh)",
            version_file.display(),
        );
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
