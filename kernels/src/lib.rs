//! gradmesh-kernels: everything numeric that a gradmesh peer runs locally — LibTorch models and
//! optimizers, flat gradient buffers, compression codecs and checkpoints. It never sees the
//! network. Codecs work on `&[f32]` and expose no LibTorch types, so they build without the
//! `torch` feature (code without LibTorch, such as a simulator counting
//! bytes, can use them).
//!
//! With `torch` (the default), the node's trainer drives a [`Trainer`]: it computes a loss and
//! gradients into one flat `f32` buffer, lets the caller all-reduce that buffer, and applies it with
//! an optimizer of ours that runs over flat buffers in plain Rust, so every peer that applies the
//! same averaged gradient ends with bit-identical parameters. See `docs/kernels.md`.

pub mod codec;

// The flat-buffer optimizers and DiLoCo's outer step are plain Rust: they build without LibTorch
// so the federated strategies (server-side momentum, DiLoCo) reuse them in the mesh and the
// simulator alike.
pub use crate::{
    diloco::{DilocoConfig, OuterOptimizer},
    error::KernelError,
    optim::{Optimizer, OptimizerConfig, OptimizerState},
};

#[cfg(feature = "torch")]
mod checkpoint;
#[cfg(feature = "torch")]
mod data;
#[cfg(feature = "torch")]
mod device;
mod diloco;
mod error;
#[cfg(feature = "torch")]
mod flat;
#[cfg(feature = "torch")]
mod local_mesh;
#[cfg(feature = "torch")]
mod model;
mod optim;
#[cfg(feature = "torch")]
mod state;
#[cfg(feature = "torch")]
mod trainer;

#[cfg(feature = "torch")]
pub use crate::{
    checkpoint::{Checkpoint, MeshDigest, load_checkpoint, write_checkpoint},
    data::{Batch, BatchSampler, CharCorpus, Dataset},
    device::Device,
    flat::{FlatLayout, FlatParams, ParamSpan},
    local_mesh::LocalMesh,
    model::{ModelKind, TransformerConfig},
    state::TrainingState,
    trainer::{Trainer, set_torch_threads},
};
