//! The node's network layer: libp2p transports and protocols behind one actix actor.
//!
//! It moves opaque bytes and implements no protocol rule. Peers are named by protocol
//! [`PeerId`](gradmesh_protocol::PeerId)s (blake3 of the ed25519 public key); announcements go
//! over gossipsub (small, sealed by their author, see `announce`), bulk data (gradient spans, state chunks) over the direct
//! [frame](frame) protocol with hard size caps — large frames over a lane when the peer has one.
//!
//! Layout: `transport` (TCP+noise+yamux, pnet, QUIC), `behaviour` (the composed libp2p
//! behaviour), `frame` (wire format and codec), `lane` (direct AES-GCM connections for large
//! frames, keyed over libp2p), `swarm_loop`/`swarm_events` (the task owning the swarm), `actor`
//! (the `Network` actor), `metrics` (Prometheus), `identity` (keys and peer ids), `announce` (signed announcements).

mod actor;
mod announce;
mod behaviour;
mod config;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod lane;
mod messages;
mod metrics;
mod peers;
mod slow_peers;
mod swarm_events;
mod swarm_loop;
mod transport;

pub use actor::Network;
pub use behaviour::{
    BehaviourError, CONNECTIONS_PER_PEER_MAX, ESTABLISHED_INBOUND_MAX, FRAME_STREAMS_MAX,
    FRAMES_IN_FLIGHT_PER_PEER_MAX, GOSSIP_BYTES_MAX, PENDING_INBOUND_MAX,
};
pub use config::{ConfigError, MetricsRegistrar, NetConfig, NetConfigBuilder, TrainingDescriptor};
pub use frame::{Frame, FrameCaps, FrameError, Oversize};
pub use identity::{
    IdentityError, load_or_create, protocol_key_of, protocol_peer_id, protocol_peer_id_of_key,
};
pub use lane::LANE_PAYLOAD_MIN;
pub use messages::{
    BAN_DURATION, Ban, BanReason, Dial, DialFailure, FrameRequestId, FrameSent, NetError, NetEvent,
    Publish, PublishFailure, SendFailure, SendFrame, SendFrameError,
};
pub use swarm_loop::{NetInfo, StartError};
pub use transport::{MeshKeyError, parse_mesh_key, read_mesh_key};

pub use libp2p::pnet::PreSharedKey;
pub use libp2p::{Multiaddr, identity::Keypair};
