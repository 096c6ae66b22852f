//! gradmesh-federated: the federated-learning toolkit of gradmesh — strategies, partitioners,
//! attacks, differential privacy and secure aggregation. Everything here works on flat `f32`
//! buffers and seeded RNGs, without LibTorch, over the ground crate's rules and optimizers
//! (gradmesh-math), so the same code can run inside the simulator (`gradmesh-sim fl`) and, applied
//! identically by every peer, inside a mesh (the robust rules already are, by span owners).
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod attack;
pub mod dp;
mod noise;
pub mod partition;
pub mod secagg;
pub mod strategy;

/// The state every peer syncs and digests with the global model; re-exported at the root because
/// the node's state sync handles it without touching the strategies themselves.
pub use strategy::ServerState;

/// The robust aggregation rules live in the ground crate (the protocol's span owners apply them);
/// re-exported so federated users find them beside the strategies.
pub use gradmesh_math::robust;

#[cfg(test)]
mod testdata;
