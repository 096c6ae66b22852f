//! gradmesh-protocol: the sans-IO core of gradmesh — wire messages, membership, round agreement,
//! the all-reduce round and state sync, as deterministic state machines. Events go in, actions come
//! out; time (`Timestamp`) and randomness (a `u64` seed) are arguments. This crate never depends on
//! tokio, actix, libp2p or LibTorch, never reads a clock and never touches a socket, so the node and
//! the simulator run exactly the same protocol code.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod driver;
pub mod floats;
pub mod ids;
pub mod keys;
pub mod peer;
pub mod reduce;
pub mod roster;
pub mod sync;
pub mod time;
pub mod wire;
pub use floats::Floats;

pub use ids::{Digest, PeerId, RoundId};
pub use keys::PeerKey;
pub use time::Timestamp;
