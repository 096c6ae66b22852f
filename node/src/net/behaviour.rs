//! The composed libp2p behaviour: gossipsub for small announcements, identify, Kademlia, optional
//! mDNS, ping, request-response frames for bulk data, lane offers (see `lane`), and NAT
//! traversal: circuit relay v2 (the client always, the server with `--relay-server`), DCUtR hole
//! punching over relayed connections, and AutoNAT (whether peers can dial this node).

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::metrics::Registry;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify, kad,
    mdns, ping, relay,
};

use super::config::NetConfig;
use super::frame::{FRAME_PROTOCOL, FrameCodec};
use super::lane::{LANE_PROTOCOL, OfferCodec};

/// Gossip carries announcements only; tensors go through frames.
pub const GOSSIP_BYTES_MAX: usize = 64 * 1024;
/// Gossip messages queued per connection (gossipsub's default is 5,000). A peer announces a few
/// times per round and forwards its mesh's announcements; a queue this deep holds seconds of
/// them for a live peer, and for a stuck one fills in about a second, so the slow-peer
/// bookkeeping (`slow_peers`) names and disconnects it instead of thousands of stale messages
/// backing up (issue 18, "gossip jams").
const GOSSIP_QUEUE_MAX: usize = 1024;
/// How long an announcement we publish may wait in a connection's queue: one announce interval
/// (1 s by default) later a newer one says more, so an older one is dropped rather than sent
/// late (gossipsub's default is 5 s; forwarded messages keep its 1 s).
const GOSSIP_PUBLISH_STALE: Duration = Duration::from_secs(2);
/// Concurrent frame streams per connection, inbound and outbound together (request-response
/// drops streams above it: outbound ones fail, inbound ones vanish). Twice
/// [`FRAMES_IN_FLIGHT_PER_PEER_MAX`], so two peers sending to each other at their limits fit.
/// Together with the payload cap it bounds the memory one peer can make us reserve.
pub const FRAME_STREAMS_MAX: usize = 2 * FRAMES_IN_FLIGHT_PER_PEER_MAX;
/// Frames awaiting acknowledgement per receiving peer; a [`SendFrame`](super::SendFrame) above
/// it is refused with [`SendFailure::PeerBusy`](super::SendFailure::PeerBusy).
pub const FRAMES_IN_FLIGHT_PER_PEER_MAX: usize = 8;
/// Connections to one peer (a dial each way can cross). With [`FRAME_STREAMS_MAX`] streams per
/// connection and the frame payload cap this bounds what one peer can make us read at once.
pub const CONNECTIONS_PER_PEER_MAX: u32 = 2;
/// Inbound connections still in their handshakes (noise, pnet, yamux), over all addresses.
pub const PENDING_INBOUND_MAX: u32 = 64;
/// Established inbound connections, over all peers.
pub const ESTABLISHED_INBOUND_MAX: u32 = 512;
/// Kademlia on a protocol name of our own, so a node never joins the public IPFS DHT.
const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/gradmesh/kad/1.0.0");
/// Identify's protocol version string: peers of other applications are told apart by it.
const IDENTIFY_PROTOCOL_VERSION: &str = "/gradmesh/1.0.0";

/// Why the behaviour could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BehaviourError {
    /// gossipsub refused its configuration.
    #[error("gossipsub config: {0}")]
    GossipsubConfig(#[from] gossipsub::ConfigBuilderError),
    /// gossipsub could not be created.
    #[error("gossipsub: {0}")]
    Gossipsub(&'static str),
    /// Subscribing to the mesh topic failed.
    #[error("gossipsub subscribe: {0}")]
    Subscribe(#[from] gossipsub::SubscriptionError),
    /// mDNS could not bind its socket.
    #[error("mdns: {0}")]
    Mdns(#[from] std::io::Error),
}

/// Every protocol a node speaks, behind the connection limits and the ban list (both refuse a
/// connection before any protocol runs on it, so they come first).
#[derive(NetworkBehaviour)]
pub(crate) struct MeshBehaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) bans: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) frames: request_response::Behaviour<FrameCodec>,
    pub(crate) lanes: request_response::Behaviour<OfferCodec>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) ping: ping::Behaviour,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
}

/// A lane offer is 66 bytes; one unanswered for this long is dropped (frames then use libp2p).
const LANE_OFFER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often Kademlia bootstraps (looks itself up through the peers it knows).
const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(5);

impl MeshBehaviour {
    /// Builds the behaviour and subscribes to the mesh topic. gossipsub metrics go to `registry`;
    /// `relay_client` is the half of the relay client whose other half is in the transport.
    pub(crate) fn new(
        keypair: &Keypair,
        config: &NetConfig,
        registry: &mut Registry,
        relay_client: relay::client::Behaviour,
    ) -> Result<Self, BehaviourError> {
        let local = keypair.public().to_peer_id();
        let frames = request_response::Behaviour::with_codec(
            FrameCodec::new(config.frame_caps, config.inbound_frame_bytes.clone()),
            [(FRAME_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.frame_timeout)
                .with_max_concurrent_streams(FRAME_STREAMS_MAX),
        );
        let lanes = request_response::Behaviour::with_codec(
            OfferCodec,
            [(LANE_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(LANE_OFFER_TIMEOUT),
        );
        let mut gossipsub = gossipsub::Behaviour::new(
            // Announcements are sealed by the node itself (see `announce`).
            gossipsub::MessageAuthenticity::Anonymous,
            gossipsub_config()?,
        )
        .map_err(BehaviourError::Gossipsub)?
        .with_metrics(registry, gossipsub::MetricsConfig::default());
        gossipsub.subscribe(&gossipsub::IdentTopic::new(config.topic_name()))?;
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), keypair.public())
                .with_agent_version(config.training.as_ref().map_or_else(
                    || super::config::AGENT.to_owned(),
                    super::config::TrainingDescriptor::agent_version,
                ))
                // A circuit address (a reservation on a --relay) comes after the first
                // exchange: peers must hear of it, or none behind another NAT can dial us.
                .with_push_listen_addr_updates(true),
        );
        let mut kad =
            kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config());
        // Meshes run on private and loopback addresses where no external address is ever
        // confirmed; without this Kademlia would stay a client and answer no one.
        kad.set_mode(Some(kad::Mode::Server));
        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
        } else {
            None
        };
        Ok(Self {
            limits: connection_limits::Behaviour::new(connection_limits()),
            bans: allow_block_list::Behaviour::default(),
            frames,
            lanes,
            gossipsub,
            identify,
            kad,
            mdns: Toggle::from(mdns),
            ping: ping::Behaviour::default(),
            relay: Toggle::from(
                config
                    .relay_server
                    .then(|| relay::Behaviour::new(local, relay_config())),
            ),
            relay_client,
            dcutr: dcutr::Behaviour::new(local),
            autonat: autonat::Behaviour::new(local, autonat_config()),
        })
    }
}

/// Per peer, pending inbound and established inbound: a stranger opening connections in a loop
/// is refused at the limit instead of costing a yamux session and its buffers each.
fn connection_limits() -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX))
        .with_max_pending_incoming(Some(PENDING_INBOUND_MAX))
        .with_max_established_incoming(Some(ESTABLISHED_INBOUND_MAX))
}

/// A mesh's relay carries whole rounds for the peers behind NAT until they punch a direct
/// connection (or for good, behind a NAT that defeats hole punching), so circuits are not cut
/// after libp2p's default 128 KiB and 2 minutes; the number of circuits stays bounded, and each
/// copies through fixed buffers. With a mesh key only the mesh's peers can connect at all.
fn relay_config() -> relay::Config {
    relay::Config {
        max_circuits: 64,
        max_circuits_per_peer: 8,
        max_circuit_duration: Duration::from_secs(24 * 3600),
        max_circuit_bytes: 0,
        ..relay::Config::default()
    }
}

/// AutoNAT asks connected peers to dial this node back. Private and test networks are meshes
/// too (as for Kademlia's mode above), so dial-backs to non-global addresses count; probes start
/// a few seconds after start and repeat as libp2p's defaults say.
fn autonat_config() -> autonat::Config {
    autonat::Config {
        only_global_ips: false,
        boot_delay: Duration::from_secs(5),
        throttle_server_period: Duration::from_secs(15),
        retry_interval: Duration::from_secs(30),
        ..autonat::Config::default()
    }
}

/// Kademlia re-bootstraps every few seconds: in a small mesh that is how a peer that joined
/// through one bootstrap node learns (and, see `handle_kad`, dials) all the others quickly.
fn kad_config() -> kad::Config {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config.set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL));
    config
}

/// Anonymous messages (the node seals announcements itself, see `announce`: gossipsub would
/// verify every duplicate copy), ids by content hash so a re-published identical announcement is
/// deduplicated, a small size cap, and per-connection queues bounded in length and age.
fn gossipsub_config() -> Result<gossipsub::Config, gossipsub::ConfigBuilderError> {
    gossipsub::ConfigBuilder::default()
        .max_transmit_size(GOSSIP_BYTES_MAX)
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|message| {
            gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec())
        })
        .heartbeat_interval(Duration::from_secs(1))
        .connection_handler_queue_len(GOSSIP_QUEUE_MAX)
        .publish_queue_duration(GOSSIP_PUBLISH_STALE)
        .build()
}
