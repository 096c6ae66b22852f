//! gradmesh-node: the node's shell around the sans-IO protocol core — the libp2p network layer
//! behind an actix actor ([`net`]) and, for now, an announcement smoke mode ([`smoke`]). Protocol
//! rules live in `gradmesh-protocol`, never here; this crate holds I/O, clocks and actors.
//! Bytes from peers never reach an `unwrap`: outside tests the lints below forbid it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod demo;
pub mod net;
pub mod smoke;
