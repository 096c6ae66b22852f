//! gradmesh-math: the ground crate. Flat-`f32` math that every other gradmesh crate builds on:
//! the protocol (span codecs, robust rules its span owners apply), the kernels (optimizers over
//! flat parameter buffers), the federated toolkit (strategies) and the simulator (encoded sizes).
//!
//! Nothing here links LibTorch, touches a file or a socket, reads a clock or awaits anything:
//! inputs are slices, randomness is a caller-supplied seed, and every result is a function of the
//! inputs alone, bit for bit on every x86-64 and aarch64 machine (fixed summation order, no fused
//! multiply-add, no `powf`). That is what lets every peer of a mesh apply the same step and end
//! with the same digest.
//!
//! - [`codec`]: span codecs (none, fp16, bf16, int8 blockwise, top-k with error feedback,
//!   PowerSGD) and the byte-level reduction of the all-reduce.
//! - [`robust`]: Byzantine-robust aggregation rules (mean, median, trimmed mean, Multi-Krum,
//!   centered clipping).
//! - [`Optimizer`] (SGD, AdamW) over flat buffers and DiLoCo's [`OuterOptimizer`].
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod codec;
pub mod robust;

mod diloco;
mod optim;

pub use crate::{
    diloco::{DilocoConfig, OuterOptimizer},
    optim::{OptimError, Optimizer, OptimizerConfig, OptimizerState},
};
