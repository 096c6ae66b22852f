//! The network layer's vocabulary: commands the [`Network`](super::Network) actor takes, events
//! it forwards to its subscriber, and their typed failures. Peers are always protocol
//! [`PeerId`]s; libp2p ids never leave the network layer.

use actix::Message;
use bytes::Bytes;
use gradmesh_protocol::PeerId;
use libp2p::Multiaddr;

use super::frame::{Frame, Oversize};

/// A caller-chosen id for one [`SendFrame`], echoed in its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameRequestId(pub u64);

/// Send one frame to a connected peer. Resolves when the peer acknowledges it or it fails.
#[derive(Debug, Message)]
#[rtype(result = "Result<FrameSent, SendFrameError>")]
pub struct SendFrame {
    /// Echoed in the result.
    pub id: FrameRequestId,
    /// The receiving peer; must be connected.
    pub to: PeerId,
    /// The frame.
    pub frame: Frame,
}

/// A frame the receiver acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSent {
    /// The request's id.
    pub id: FrameRequestId,
    /// The peer that acknowledged it.
    pub to: PeerId,
}

/// A frame that was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame {} to {to}: {reason}", id.0)]
pub struct SendFrameError {
    /// The request's id.
    pub id: FrameRequestId,
    /// The intended receiver.
    pub to: PeerId,
    /// Why it failed.
    pub reason: SendFailure,
}

/// Why a frame was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The command queue to the swarm loop is full; retry later.
    #[error("network command queue is full")]
    QueueFull,
    /// The network layer has stopped.
    #[error("network layer has stopped")]
    Stopped,
    /// No connection to the peer.
    #[error("peer is not connected")]
    NotConnected,
    /// The frame is above this node's caps.
    #[error(transparent)]
    TooLarge(#[from] Oversize),
    /// Too many frames are awaiting acknowledgement, over all peers.
    #[error("too many frames in flight")]
    TooManyInFlight,
    /// [`FRAMES_IN_FLIGHT_PER_PEER_MAX`](super::FRAMES_IN_FLIGHT_PER_PEER_MAX) frames to this
    /// peer await acknowledgement; retry when one completes.
    #[error("too many frames in flight to this peer")]
    PeerBusy,
    /// No acknowledgement within the frame timeout.
    #[error("no acknowledgement within the frame timeout")]
    Timeout,
    /// The connection closed first (the receiver may have refused the frame as too large).
    #[error("connection or stream closed before acknowledgement")]
    ConnectionClosed,
    /// The peer does not speak the frame protocol.
    #[error("peer does not speak the frame protocol")]
    Unsupported,
    /// The stream failed.
    #[error("stream i/o error: {0:?}")]
    Io(std::io::ErrorKind),
}

/// Publish an announcement on the mesh topic (at most
/// [`GOSSIP_BYTES_MAX`](super::behaviour::GOSSIP_BYTES_MAX) bytes).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NetError>")]
pub struct Publish {
    /// The announcement, opaque to the network layer.
    pub bytes: Bytes,
}

/// Dial an address. `Ok` means the dial started; the outcome arrives as
/// [`NetEvent::PeerConnected`] or [`NetEvent::DialFailed`].
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NetError>")]
pub struct Dial {
    /// The address, ideally ending with `/p2p/<peer id>`.
    pub addr: Multiaddr,
}

/// Disconnect a peer and refuse its connections for [`BAN_DURATION`]: it sent what no honest
/// peer of this protocol version sends. Shown in the `gradmesh_peer_bans` metrics.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Ban {
    /// The peer.
    pub peer: PeerId,
    /// What it did.
    pub reason: BanReason,
}

/// How long a [`Ban`] lasts.
pub const BAN_DURATION: std::time::Duration = std::time::Duration::from_secs(600);

/// What a banned peer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BanReason {
    /// It sent a frame that does not decode.
    #[error("sent an undecodable frame")]
    UndecodableFrame,
    /// It authored an announcement that does not decode.
    #[error("authored an undecodable announcement")]
    UndecodableAnnouncement,
    /// It trains another model, strategy or setting than this node.
    #[error("trains something else than this node")]
    DifferentTraining,
    /// As a state donor it sent a manifest or a chunk that does not hash to what it must, or a
    /// state that matches its digest but does not load.
    #[error("served a bad state")]
    BadDonor,
    /// It sent a vote seal that does not verify, or names another signer (honest peers verify a
    /// seal before they forward it).
    #[error("sent a forged vote seal")]
    ForgedSeal,
    /// It voted for two different results in one round.
    #[error("voted for two different results in one round")]
    Equivocation,
}

/// Why a [`Publish`] or [`Dial`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The command queue to the swarm loop is full; retry later.
    #[error("network command queue is full")]
    QueueFull,
    /// The network layer has stopped.
    #[error("network layer has stopped")]
    Stopped,
    /// gossipsub refused the announcement.
    #[error("announcement refused: {0}")]
    Publish(PublishFailure),
    /// The dial could not start, or failed.
    #[error("dial failed: {0}")]
    Dial(DialFailure),
}

/// Why gossipsub refused an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishFailure {
    /// The same bytes were published recently (ids are content hashes).
    #[error("duplicate of a recent announcement")]
    Duplicate,
    /// No peer has joined the mesh topic yet.
    #[error("no peer subscribed to the mesh topic")]
    NoPeers,
    /// Above the gossip size cap.
    #[error("announcement too large")]
    TooLarge,
    /// Every peer's send queue is full.
    #[error("all peer queues are full")]
    QueuesFull,
    /// Signing or another local failure.
    #[error("local gossipsub failure")]
    Local,
}

/// Why a dial failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailure {
    /// The transport failed: unreachable, refused, or the handshake (pnet key, noise) failed.
    #[error("transport failure (unreachable, or handshake refused: wrong mesh key?)")]
    Transport,
    /// The remote is not the peer the address named.
    #[error("remote has a different peer id")]
    WrongPeerId,
    /// The address is our own.
    #[error("address is the local peer")]
    LocalPeer,
    /// No usable address.
    #[error("no address to dial")]
    NoAddresses,
    /// Refused by a local policy, or aborted.
    #[error("denied or aborted locally")]
    Denied,
}

impl From<&libp2p::swarm::DialError> for DialFailure {
    fn from(err: &libp2p::swarm::DialError) -> Self {
        use libp2p::swarm::DialError;
        match err {
            DialError::Transport(_) => Self::Transport,
            DialError::WrongPeerId { .. } => Self::WrongPeerId,
            DialError::LocalPeerId { .. } => Self::LocalPeer,
            DialError::NoAddresses => Self::NoAddresses,
            _ => Self::Denied,
        }
    }
}

impl From<&libp2p::gossipsub::PublishError> for PublishFailure {
    fn from(err: &libp2p::gossipsub::PublishError) -> Self {
        use libp2p::gossipsub::PublishError;
        match err {
            PublishError::Duplicate => Self::Duplicate,
            PublishError::NoPeersSubscribedToTopic => Self::NoPeers,
            PublishError::MessageTooLarge => Self::TooLarge,
            PublishError::AllQueuesFull(_) => Self::QueuesFull,
            _ => Self::Local,
        }
    }
}

/// What the network layer reports to its subscriber.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum NetEvent {
    /// A listener is up on this address (with the real port when 0 was asked for).
    ListeningOn {
        /// The address, without the `/p2p/` suffix.
        addr: Multiaddr,
    },
    /// The first connection to a peer is up.
    PeerConnected {
        /// The peer.
        peer: PeerId,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A direct lane to (`outbound`) or from a peer is open: large frames between the two skip
    /// libp2p's streams (see [`LANE_PAYLOAD_MIN`](super::LANE_PAYLOAD_MIN)).
    LaneOpened {
        /// The peer.
        peer: PeerId,
        /// `true`: frames we send to it; `false`: frames it sends to us.
        outbound: bool,
    },
    /// A peer subscribed to the mesh topic: announcements can now reach it.
    AnnouncementsJoined {
        /// The peer.
        peer: PeerId,
    },
    /// A frame arrived (and has been acknowledged).
    FrameReceived {
        /// The sender.
        from: PeerId,
        /// The frame.
        frame: Frame,
    },
    /// An announcement arrived on the mesh topic.
    GossipReceived {
        /// Its author (whose key sealed it), not necessarily the peer that relayed it.
        from: PeerId,
        /// The announcement.
        bytes: Bytes,
    },
    /// An outgoing connection attempt failed.
    DialFailed {
        /// The peer, when the address named one.
        peer: Option<PeerId>,
        /// Why.
        failure: DialFailure,
    },
}
