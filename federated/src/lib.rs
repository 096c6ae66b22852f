//! gradmesh-federated: the federated-learning toolkit of gradmesh. Everything here works on flat
//! `f32` buffers and seeded RNGs, without LibTorch, so the same code runs inside the real mesh
//! (every peer applies it identically to the agreed aggregate, or every span owner to its span)
//! and inside the simulator.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod attack;
pub mod dp;
mod noise;
pub mod partition;
pub mod robust;
pub mod secagg;
pub mod strategy;

#[cfg(test)]
mod testdata;
