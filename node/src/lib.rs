//! gradmesh-node: the node's shell around the sans-IO protocol core — the libp2p network layer
//! behind an actix actor ([`net`]), the training node's actors ([`mesh`]), a local process
//! cluster for the demo, benchmarks and tests ([`cluster`]), and the in-memory protocol demo
//! ([`demo`]). Protocol rules live in `gradmesh-protocol`, never here; this crate holds I/O,
//! clocks and actors.
//! Bytes from peers never reach an `unwrap`: outside tests the lints below forbid it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cluster;
pub mod demo;
pub mod mesh;
pub mod net;
