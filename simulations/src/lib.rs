//! gradmesh-sim: a discrete-event simulator of gradmesh meshes on a simulated clock, with
//! bandwidth, latency, loss, compute and churn models. In protocol mode ([`mesh`]) the protocol's
//! real `Peer` machines run unmodified behind the [`engine::Application`] interface, every message
//! a flow sized by its encoded length; in collective mode ([`runner`]) collective schedules run
//! through the same flow-level network.
//! It never depends on tokio or libp2p: time is simulated, and compute is a model. The one
//! exception is `fl`, the federated simulator, which trains real models through the kernels'
//! LibTorch MLP on a simulated clock; it sits behind the `fl` cargo feature (on by default), and
//! `--no-default-features` builds the simulator without LibTorch.
//!
//! The single interface between the network model and whatever runs on the peers is
//! [`engine::Application`]: a peer asks for "a message of `bytes` bytes from `a` to `b`"
//! ([`engine::Outbox::send`]) and the engine later hands it back as one delivery event
//! ([`engine::Application::handle_message`]) once its flow has drained through the max-min shared
//! links ([`net::Network`]) and the one-way latency has elapsed. Every run is a pure function of
//! one `u64` seed ([`rng::SeedTree`]); nothing that reaches an output iterates a hash map.
#![forbid(unsafe_code)]

pub mod bench;
pub mod churn;
pub mod collective;
pub mod compute;
pub mod engine;
#[cfg(feature = "fl")]
pub mod fl;
pub mod mesh;
pub mod net;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod time;
pub mod validate;

pub use engine::{Application, Outbox, RunOutcome, Simulation};
pub use net::{Delivered, NetConfig, Network, PeerIdx};
pub use time::SimTime;
