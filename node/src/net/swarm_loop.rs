//! The task that owns the `Swarm`: it runs on the network `Arbiter` and only routes — swarm
//! events out as [`NetEvent`]s, [`Command`]s in as swarm calls. Both channels are bounded;
//! a slow subscriber slows this loop (back-pressure) instead of growing a queue.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::ListenerId;
use libp2p::core::transport::{Transport, TransportError};
use libp2p::gossipsub::IdentTopic;
use libp2p::identity::Keypair;
use libp2p::metrics::{BandwidthTransport, Registry};
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, Swarm};
use tokio::sync::{mpsc, oneshot};

use super::announce::Sealer;
use super::behaviour::{
    BehaviourError, FRAMES_IN_FLIGHT_PER_PEER_MAX, MeshBehaviour, MeshBehaviourEvent,
};
use super::config::{NetConfig, TrainingDescriptor};
use super::frame::InboundBudget;
use super::frame::{Frame, FrameCaps};
use super::identity::protocol_peer_id_of_key;
use super::lane::{LaneEvent, Lanes, ip_of};
use super::messages::{
    BAN_DURATION, Ban, BanReason, FrameSent, NetError, NetEvent, SendFailure, SendFrame,
    SendFrameError,
};
use super::metrics::{NetMetrics, bind_metrics, serve_metrics};
use super::peers::PeerTable;
use super::slow_peers::SlowPeers;
use super::transport::build_transport;

/// Commands queued from the actor to the loop.
pub(crate) const COMMAND_QUEUE_CAPACITY: usize = 64;
/// Events queued from the loop to the actor.
pub(crate) const EVENT_QUEUE_CAPACITY: usize = 64;
/// Frames awaiting acknowledgement, over all peers.
const FRAMES_IN_FLIGHT_MAX: usize = 256;

/// A command for the loop; each carries the sender of its reply.
#[derive(Debug)]
pub(crate) enum Command {
    SendFrame {
        request: SendFrame,
        reply: oneshot::Sender<Result<FrameSent, SendFrameError>>,
    },
    Publish {
        bytes: Bytes,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Ban(Ban),
}

/// Why the network layer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The identity is not an ed25519 key.
    #[error("the node identity must be an ed25519 key")]
    NotEd25519,
    /// noise could not be set up with the identity.
    #[error("noise: {0}")]
    Noise(#[from] libp2p::noise::Error),
    /// A protocol behaviour could not be built.
    #[error(transparent)]
    Behaviour(#[from] BehaviourError),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {}", listen_cause(.source))]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The cause.
        source: TransportError<std::io::Error>,
    },
    /// Something already listens on the address.
    #[error(
        "cannot listen on {addr}: the address is in use (another node or program listens there); \
         pick another port, or 0 for any free one"
    )]
    AddressInUse {
        /// The address.
        addr: Multiaddr,
    },
    /// The lane port could not bind.
    #[error("cannot listen for lanes: {0}")]
    Lanes(std::io::Error),
    /// The metrics endpoint could not bind.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The network arbiter stopped during start-up.
    #[error("the network arbiter stopped during start-up")]
    Stopped,
}

/// Why a listen address was refused, in words: libp2p's `TransportError::Other` displays as
/// nothing and keeps its cause as a source, which would leave "cannot listen on ADDR: : cause".
fn listen_cause(error: &TransportError<std::io::Error>) -> String {
    match error {
        TransportError::MultiaddrNotSupported(_) => {
            "no transport of this node speaks that address (use /ip4|ip6/…/tcp/PORT or \
             …/udp/PORT/quic-v1)"
                .to_owned()
        }
        TransportError::Other(cause) => cause.to_string(),
    }
}

/// What a started network layer reports about itself.
#[derive(Debug, Clone)]
pub struct NetInfo {
    /// This node's protocol id.
    pub local_peer: gradmesh_protocol::PeerId,
    /// This node's libp2p id (for `/p2p/` suffixes of addresses given to other nodes).
    pub transport_peer: libp2p::PeerId,
    /// Where `/metrics` is served, with the real port.
    pub metrics_addr: Option<SocketAddr>,
    /// Where lanes are accepted, with the real port; `None` when lanes are off.
    pub lane_addr: Option<SocketAddr>,
}

/// What a pending frame waits on: a libp2p request or a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum PendingKey {
    Stream(OutboundRequestId),
    Lane(u64),
}

/// A frame awaiting its acknowledgement.
#[derive(Debug)]
struct PendingFrame {
    id: super::messages::FrameRequestId,
    to: gradmesh_protocol::PeerId,
    bytes: u64,
    reply: oneshot::Sender<Result<FrameSent, SendFrameError>>,
}

/// The loop's state: the swarm, its channels, and the peer table.
pub(crate) struct SwarmLoop {
    pub(super) swarm: Swarm<MeshBehaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    pub(super) peers: PeerTable,
    pending: HashMap<PendingKey, PendingFrame>,
    pub(super) lanes: Lanes,
    lane_events: mpsc::Receiver<LaneEvent>,
    next_lane_frame: u64,
    pub(super) topic: IdentTopic,
    pub(super) sealer: Sealer,
    caps: FrameCaps,
    inbound: InboundBudget,
    /// Banned peers and when their bans end.
    bans: HashMap<libp2p::PeerId, Instant>,
    /// What this node trains, checked against every peer's identify.
    pub(super) training: Option<TrainingDescriptor>,
    /// The `--bootstrap` peers and their addresses, and those not reached since their last
    /// failed dial was reported (one warning per peer until it is reached).
    pub(super) bootstrap: HashMap<libp2p::PeerId, Multiaddr>,
    pub(super) unreached: HashSet<libp2p::PeerId>,
    /// Peers whose announcement queue is full, while it stays so.
    pub(super) slow: SlowPeers<libp2p::PeerId>,
    /// Connections that run through a relay, by peer: closed once hole punching gave a direct
    /// one, so that the peer's traffic leaves the relay.
    pub(super) relayed: HashMap<libp2p::PeerId, Vec<ConnectionId>>,
    /// The `--relay` peers and their addresses, and the circuit listeners open on them.
    pub(super) relays: HashMap<libp2p::PeerId, Multiaddr>,
    pub(super) relay_listeners: HashMap<ListenerId, libp2p::PeerId>,
    /// Relays that refused or lost this node's reservation, and when to ask again.
    pub(super) relay_retry: HashMap<libp2p::PeerId, Instant>,
    /// Whether this node serves as a relay (`--relay-server`): its listen addresses are then
    /// declared reachable, which is what makes libp2p's relay offer its service.
    pub(super) relay_server: bool,
    pub(super) metrics: NetMetrics,
}

/// Bans in force at once.
const BANS_MAX: usize = 4096;
/// How long after a relay refused (or dropped) this node's reservation it is asked again.
const RELAY_RETRY: Duration = Duration::from_secs(10);
/// How often bans are checked for their end and the inbound budget gauge is updated.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

impl SwarmLoop {
    /// Builds the swarm, starts listening, dials the bootstrap peers and serves metrics. Must
    /// run on the arbiter that will run [`SwarmLoop::run`], so QUIC's tasks start there.
    pub(crate) async fn start(
        config: NetConfig,
        keypair: Keypair,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
    ) -> Result<(Self, NetInfo), StartError> {
        let local_peer =
            protocol_peer_id_of_key(&keypair.public()).ok_or(StartError::NotEd25519)?;
        let signing_key = keypair
            .clone()
            .try_into_ed25519()
            .map_err(|_| StartError::NotEd25519)?;
        let mut registry = Registry::default();
        let metrics = NetMetrics::register(&mut registry);
        if let Some(registrar) = &config.extra_metrics {
            (registrar.0)(registry.sub_registry_with_prefix("gradmesh"));
        }
        let mut swarm = build_swarm(&keypair, &config, &mut registry)?;
        listen(&mut swarm, &config.listen)?;
        dial_bootstrap(&mut swarm, &config);
        dial_relays(&mut swarm, &config);
        let (lanes, lane_addr, lane_events) = Lanes::start(
            config.lanes,
            config.lane_port,
            &config.listen,
            config.frame_caps,
            config.frame_timeout,
        )
        .await
        .map_err(StartError::Lanes)?;
        let metrics_addr = match config.metrics_addr {
            Some(addr) => {
                let (listener, bound) = bind_metrics(addr)
                    .await
                    .map_err(|source| StartError::Metrics { addr, source })?;
                actix::spawn(serve_metrics(listener, Rc::new(registry)));
                Some(bound)
            }
            None => None,
        };
        let info = NetInfo {
            local_peer,
            transport_peer: *swarm.local_peer_id(),
            metrics_addr,
            lane_addr,
        };
        let topic = config.topic_name();
        let swarm_loop = Self {
            swarm,
            commands,
            events,
            peers: PeerTable::default(),
            pending: HashMap::new(),
            lanes,
            lane_events,
            next_lane_frame: 0,
            sealer: Sealer::new(signing_key, &topic),
            topic: IdentTopic::new(topic),
            caps: config.frame_caps,
            inbound: config.inbound_frame_bytes.clone(),
            bans: HashMap::new(),
            training: config.training.clone(),
            bootstrap: config.bootstrap.iter().cloned().collect(),
            unreached: HashSet::new(),
            slow: SlowPeers::default(),
            relayed: HashMap::new(),
            relays: config.relays.iter().cloned().collect(),
            relay_listeners: HashMap::new(),
            relay_retry: HashMap::new(),
            relay_server: config.relay_server,
            metrics,
        };
        Ok((swarm_loop, info))
    }

    /// Routes until the actor drops its command sender or stops taking events. Commands go
    /// first: finishing local work before taking new remote work keeps queues short.
    pub(crate) async fn run(mut self) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            let flow = tokio::select! {
                biased;
                _ = housekeeping.tick() => {
                    self.housekeeping();
                    ControlFlow::Continue(())
                }
                command = self.commands.recv() => match command {
                    Some(command) => {
                        self.handle_command(command);
                        ControlFlow::Continue(())
                    }
                    None => ControlFlow::Break(()),
                },
                Some(event) = self.lane_events.recv() => self.handle_lane_event(event).await,
                event = self.swarm.select_next_some() => self.handle_swarm_event(event).await,
            };
            if flow.is_break() {
                break;
            }
        }
        tracing::debug!("swarm loop stopped");
    }

    /// Hands an event to the actor, waiting while its queue is full. Takes `&mut self` so the
    /// loop future stays `Send` (the swarm is `Send` but not `Sync`).
    pub(super) async fn emit(&mut self, event: NetEvent) -> ControlFlow<()> {
        match self.events.send(event).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }

    /// Lifts bans that ended and updates the gauges.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        let bans = &mut self.swarm.behaviour_mut().bans;
        self.bans.retain(|peer, until| {
            let on = *until > now;
            if !on {
                bans.unblock_peer(*peer);
            }
            on
        });
        self.slow.expire(now);
        let due: Vec<libp2p::PeerId> = self
            .relay_retry
            .iter()
            .filter(|(relay, at)| **at <= now && self.swarm.is_connected(relay))
            .map(|(relay, _)| *relay)
            .collect();
        for relay in due {
            self.relay_retry.insert(relay, now + RELAY_RETRY);
            self.listen_via_relay(relay);
        }
        self.metrics
            .peers_banned
            .set(i64::try_from(self.bans.len()).unwrap_or(i64::MAX));
        self.metrics
            .inbound_frame_bytes
            .set(i64::try_from(self.inbound.in_use()).unwrap_or(i64::MAX));
    }

    /// Disconnects a connected peer and refuses it for [`BAN_DURATION`]. One warning per ban.
    fn ban(&mut self, Ban { peer, reason }: Ban) {
        if let Some(transport) = self.peers.transport_of(&peer) {
            self.ban_transport(transport, reason);
        }
    }

    /// Disconnects `transport` and refuses it for [`BAN_DURATION`].
    pub(super) fn ban_transport(&mut self, transport: libp2p::PeerId, reason: BanReason) {
        let peer = transport;
        if self.bans.len() >= BANS_MAX && !self.bans.contains_key(&transport) {
            // Fresh keys cost an attacker nothing: past the cap the ban ending first is lifted
            // early rather than letting the table grow.
            if let Some(first) = self.bans.iter().min_by_key(|(_, until)| **until) {
                let first = *first.0;
                self.bans.remove(&first);
                self.swarm.behaviour_mut().bans.unblock_peer(first);
            }
        }
        if self
            .bans
            .insert(transport, Instant::now() + BAN_DURATION)
            .is_none()
        {
            self.swarm.behaviour_mut().bans.block_peer(transport);
            self.metrics.peer_bans.inc();
            tracing::warn!(
                %peer,
                minutes = BAN_DURATION.as_secs() / 60,
                "banning a peer that {reason}"
            );
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Ban(ban) => self.ban(ban),
            Command::SendFrame { request, reply } => self.send_frame(request, reply),
            Command::Publish { bytes, reply } => {
                let topic = self.topic.clone();
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic, self.sealer.seal(&bytes))
                    .map(|_| ())
                    .map_err(|e| NetError::Publish((&e).into()));
                let _ = reply.send(result);
            }
            Command::Dial { addr, reply } => {
                let result = self
                    .swarm
                    .dial(addr)
                    .map_err(|e| NetError::Dial((&e).into()));
                let _ = reply.send(result);
            }
        }
    }

    fn send_frame(
        &mut self,
        request: SendFrame,
        reply: oneshot::Sender<Result<FrameSent, SendFrameError>>,
    ) {
        let (id, to) = (request.id, request.to);
        let refusal = if let Err(oversize) = self.caps.check(&request.frame) {
            Some(SendFailure::TooLarge(oversize))
        } else if self.pending.len() >= FRAMES_IN_FLIGHT_MAX {
            Some(SendFailure::TooManyInFlight)
        } else if self.in_flight_to(&to) >= FRAMES_IN_FLIGHT_PER_PEER_MAX {
            Some(SendFailure::PeerBusy)
        } else {
            None
        };
        let peer = match (refusal, self.peers.transport_of(&to)) {
            (None, Some(peer)) => peer,
            (refusal, _) => {
                let reason = refusal.unwrap_or(SendFailure::NotConnected);
                self.metrics.frames_failed_outbound.inc();
                let _ = reply.send(Err(SendFrameError { id, to, reason }));
                return;
            }
        };
        let bytes = frame_bytes(&request.frame);
        self.next_lane_frame += 1;
        let key = match self.lanes.send(&to, self.next_lane_frame, request.frame) {
            Ok(()) => PendingKey::Lane(self.next_lane_frame),
            Err(frame) => {
                let frames = &mut self.swarm.behaviour_mut().frames;
                PendingKey::Stream(frames.send_request(&peer, frame))
            }
        };
        let pending = PendingFrame {
            id,
            to,
            bytes,
            reply,
        };
        self.pending.insert(key, pending);
    }

    /// Frames to `peer` awaiting acknowledgement (a count over at most
    /// [`FRAMES_IN_FLIGHT_MAX`] entries; iteration order does not matter).
    fn in_flight_to(&self, peer: &gradmesh_protocol::PeerId) -> usize {
        self.pending.values().filter(|p| p.to == *peer).count()
    }

    /// Resolves a pending frame with its outcome.
    pub(super) fn complete_frame(&mut self, key: PendingKey, outcome: Result<(), SendFailure>) {
        let Some(pending) = self.pending.remove(&key) else {
            return;
        };
        let (id, to) = (pending.id, pending.to);
        let result = match outcome {
            Ok(()) => {
                if matches!(key, PendingKey::Lane(_)) {
                    self.metrics.lane_frames_sent.inc();
                }
                self.metrics.frames_sent.inc();
                self.metrics.frame_bytes_sent.inc_by(pending.bytes);
                Ok(FrameSent { id, to })
            }
            Err(reason) => {
                self.metrics.frames_failed_outbound.inc();
                Err(SendFrameError { id, to, reason })
            }
        };
        let _ = pending.reply.send(result);
    }

    /// Lane events: frames received on a lane are handed on like any other and acknowledged
    /// once the node has them; outcomes of lane frames resolve their pending entry.
    async fn handle_lane_event(&mut self, event: LaneEvent) -> ControlFlow<()> {
        if matches!(event, LaneEvent::Closed { .. }) {
            self.metrics.lanes_closed.inc();
        }
        match self.lanes.handle(event) {
            Some(LaneEvent::Received { from, frame, taken }) => {
                self.metrics.frames_received.inc();
                self.metrics
                    .frame_bytes_received
                    .inc_by(frame_bytes(&frame));
                let flow = self.emit(NetEvent::FrameReceived { from, frame }).await;
                let _ = taken.send(());
                flow
            }
            Some(LaneEvent::Delivered { id, outcome }) => {
                self.complete_frame(PendingKey::Lane(id), outcome);
                ControlFlow::Continue(())
            }
            Some(LaneEvent::Opened { peer, outbound }) => {
                self.emit(NetEvent::LaneOpened { peer, outbound }).await
            }
            _ => ControlFlow::Continue(()),
        }
    }

    /// A circuit listener on a `--relay` closed (the reservation was refused or lost): asked
    /// again every [`RELAY_RETRY`] while connected to the relay, with one warning per episode.
    fn handle_listener_closed(&mut self, listener: ListenerId, error: Option<std::io::Error>) {
        let Some(relay) = self.relay_listeners.remove(&listener) else {
            return;
        };
        let why = error.map_or_else(|| "closed".to_owned(), |e| e.to_string());
        if self
            .relay_retry
            .insert(relay, Instant::now() + RELAY_RETRY)
            .is_none()
        {
            tracing::warn!(
                relay = %relay,
                "no reservation on the relay ({why}); asking again every {} s while connected \
                 to it",
                RELAY_RETRY.as_secs()
            );
        } else {
            tracing::debug!(relay = %relay, "no reservation on the relay ({why})");
        }
    }

    async fn handle_swarm_event(
        &mut self,
        event: SwarmEvent<MeshBehaviourEvent>,
    ) -> ControlFlow<()> {
        use libp2p::metrics::Recorder;
        self.metrics.libp2p.record(&event);
        let out = match event {
            SwarmEvent::Behaviour(event) => return self.handle_behaviour_event(event).await,
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                self.handle_listener_closed(listener_id, reason.err());
                None
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                if self.relay_server && !ip_of(&address).is_some_and(|ip| ip.is_loopback()) {
                    self.swarm.add_external_address(address.clone());
                }
                let peer = self.swarm.local_peer_id();
                tracing::info!(
                    "listening on {address}; other nodes join with --bootstrap {address}/p2p/{peer}"
                );
                Some(NetEvent::ListeningOn { addr: address })
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => self.handle_connected(
                peer_id,
                connection_id,
                num_established.get(),
                endpoint.is_relayed(),
                endpoint.get_remote_address(),
            ),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => self.handle_closed(peer_id, connection_id, num_established),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                Some(self.handle_dial_error(peer_id, &error))
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
                None
            }
            _ => None,
        };
        match out {
            Some(event) => self.emit(event).await,
            None => ControlFlow::Continue(()),
        }
    }
}

/// The transport wrapped with libp2p's bandwidth metrics, the behaviour, and the swarm config.
fn build_swarm(
    keypair: &Keypair,
    config: &NetConfig,
    registry: &mut Registry,
) -> Result<Swarm<MeshBehaviour>, StartError> {
    if config.mesh_key.is_some() {
        tracing::warn!(
            "mesh key set: QUIC is disabled because pnet can only protect TCP; \
             peers must use /tcp addresses"
        );
    }
    let (relay, relay_client) = libp2p::relay::client::new(keypair.public().to_peer_id());
    let transport = build_transport(keypair, config.mesh_key, relay)?;
    // Bytes are counted per protocol stack: a relayed connection's label holds `p2p-circuit`.
    let transport = BandwidthTransport::new(transport, registry)
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
        .boxed();
    let behaviour = MeshBehaviour::new(keypair, config, registry, relay_client)?;
    let swarm_config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(config.idle_connection_timeout);
    Ok(Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        swarm_config,
    ))
}

/// Listens on every address, refusing one that something already listens on.
fn listen(swarm: &mut Swarm<MeshBehaviour>, addrs: &[Multiaddr]) -> Result<(), StartError> {
    for addr in addrs {
        ensure_free(addr)?;
        swarm
            .listen_on(addr.clone())
            .map_err(|source| StartError::Listen {
                addr: addr.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Refuses a listen address something already listens on. libp2p binds its TCP listeners with
/// `SO_REUSEPORT` (so that dials can leave from the listening port), and Linux then lets a
/// second process that does the same bind the very same port: two nodes would silently share
/// its incoming connections. A plain bind first (without `SO_REUSEPORT`, which fails against
/// any listener there) finds the port taken before libp2p takes it too. Other bind errors are
/// left to libp2p's own listen to report.
fn ensure_free(addr: &Multiaddr) -> Result<(), StartError> {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    let mut port = None;
    for protocol in addr {
        match protocol {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) if p != 0 => port = Some((p, true)),
            Protocol::Udp(p) if p != 0 => port = Some((p, false)),
            _ => {}
        }
    }
    let (Some(ip), Some((port, tcp))) = (ip, port) else {
        return Ok(());
    };
    let at = SocketAddr::new(ip, port);
    let probe = if tcp {
        std::net::TcpListener::bind(at).map(drop)
    } else {
        std::net::UdpSocket::bind(at).map(drop)
    };
    match probe {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(StartError::AddressInUse { addr: addr.clone() })
        }
        _ => Ok(()),
    }
}

/// Dials each `--relay` that is not also a bootstrap peer; once connected, the node listens
/// through it ([`SwarmLoop::listen_via_relay`]).
fn dial_relays(swarm: &mut Swarm<MeshBehaviour>, config: &NetConfig) {
    for (relay, addr) in &config.relays {
        if config.bootstrap.iter().any(|(peer, _)| peer == relay) {
            continue;
        }
        swarm.behaviour_mut().kad.add_address(relay, addr.clone());
        if let Err(error) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, %error, "cannot dial relay");
        }
    }
}

/// Seeds Kademlia with the bootstrap peers and dials them; a failed dial is logged, not fatal,
/// since other bootstrap peers or later dials may succeed.
fn dial_bootstrap(swarm: &mut Swarm<MeshBehaviour>, config: &NetConfig) {
    for (peer, addr) in &config.bootstrap {
        swarm.behaviour_mut().kad.add_address(peer, addr.clone());
        if let Err(error) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, %error, "cannot dial bootstrap peer");
        }
    }
    if !config.bootstrap.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
}

/// Meta plus payload bytes, for the byte counters.
pub(super) fn frame_bytes(frame: &Frame) -> u64 {
    u64::try_from(frame.meta.len() + frame.payload.len()).unwrap_or(u64::MAX)
}
