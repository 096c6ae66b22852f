//! gradmesh-kernels: everything LibTorch that a gradmesh peer runs locally — models, training
//! loops, data sets, devices and checkpoints. It never sees the network.
//!
//! The node's trainer drives a [`Trainer`]: it computes a loss and gradients into one flat `f32`
//! buffer, lets the caller all-reduce that buffer, and applies it with an optimizer of
//! `gradmesh-math` (re-exported here) that runs over flat buffers in plain Rust, so every peer
//! that applies the same averaged gradient ends with bit-identical parameters. See
//! `docs/kernels.md`.

/// The span codecs of the ground crate, re-exported for the kernels' users.
pub use gradmesh_math::codec;

pub use crate::{
    checkpoint::{
        Checkpoint, LocalState, MeshDigest, load_checkpoint, write_atomically, write_checkpoint,
    },
    data::{
        Batch, BatchSampler, CharCorpus, Corpus, Dataset, TensorData, Token, TokenCorpus,
        TokenWindows,
    },
    device::Device,
    error::KernelError,
    flat::{FlatLayout, FlatParams, ParamSpan},
    local_mesh::LocalMesh,
    model::{
        Loss, ModelKind, SCRIPT_BYTES_MAX, ScriptSpec, TransformerConfig, TransformerConfigError,
    },
    state::TrainingState,
    trainer::{Trainer, set_torch_threads},
};
pub use gradmesh_math::{
    DilocoConfig, OptimError, Optimizer, OptimizerConfig, OptimizerState, OuterOptimizer,
};

mod checkpoint;
mod data;
mod device;
mod error;
mod flat;
mod local_mesh;
mod model;
mod state;
mod trainer;
