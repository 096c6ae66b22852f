//! How the swarm loop turns libp2p events into [`NetEvent`]s: one small function per source.
//! None of this is protocol logic: peers are mapped, frames acknowledged, addresses learned.

use std::ops::ControlFlow;

use bytes::Bytes;
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundFailure};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{autonat, dcutr, gossipsub, identify, kad, mdns, relay};

use super::behaviour::MeshBehaviourEvent;
use super::config::TrainingDescriptor;
use super::frame::{Frame, FrameAck};
use super::identity::protocol_peer_id;
use super::lane::{LaneOffer, OfferAck};
use super::messages::{BanReason, DialFailure, NetEvent, SendFailure};
use super::slow_peers::SLOW_PEER_GRACE;
use super::swarm_loop::{PendingKey, SwarmLoop, frame_bytes};

/// Addresses taken from one identify message; the rest are ignored.
const IDENTIFY_ADDRS_MAX: usize = 8;
/// Peers taken from one mDNS discovery.
const MDNS_PEERS_MAX: usize = 32;

type FrameEvent = request_response::Event<Frame, FrameAck>;

/// A dial error on one line: each address's transport error once (libp2p's own message repeats
/// every cause inside a debug-formatted list).
fn dial_error_line(error: &DialError) -> String {
    match error {
        DialError::Transport(errors) => errors
            .iter()
            .map(|(addr, e)| format!("{addr}: {}", crate::error_line(e)))
            .collect::<Vec<_>>()
            .join("; "),
        other => crate::error_line(other),
    }
}

/// The likely reason a dial failed, in an operator's words.
fn likely_cause(error: &DialError) -> &'static str {
    match error {
        DialError::WrongPeerId { .. } => {
            "another node answers at that address: was it restarted with a new identity? copy \
             its address again"
        }
        DialError::LocalPeerId { .. } => "that is this node's own address",
        DialError::Transport(errors) => {
            let text = errors
                .iter()
                .map(|(_, e)| crate::error_line(e).to_lowercase())
                .collect::<Vec<_>>()
                .join("; ");
            transport_cause(&text)
        }
        _ => "the dial was aborted",
    }
}

/// [`likely_cause`] of a transport failure, from its lower-cased error text.
fn transport_cause(text: &str) -> &'static str {
    const HANDSHAKE: [&str; 6] = [
        "noise",
        "handshake",
        "decrypt",
        "multistream",
        "pnet",
        "eof",
    ];
    if text.contains("refused") {
        "nothing listens there: is the node running, and is the port right?"
    } else if text.contains("timed out") || text.contains("timeout") {
        "no answer in time: a firewall or NAT in the way, or a different --mesh-key"
    } else if HANDSHAKE.iter().any(|w| text.contains(w)) {
        "the handshake failed: do both nodes use the same --mesh-key (or both none)?"
    } else if text.contains("unreachable") || text.contains("no route") {
        "the address cannot be reached from here (network, NAT or firewall)"
    } else {
        "unreachable, or the handshake failed"
    }
}
type OfferEvent = request_response::Event<LaneOffer, OfferAck>;

impl SwarmLoop {
    pub(super) async fn handle_behaviour_event(
        &mut self,
        event: MeshBehaviourEvent,
    ) -> ControlFlow<()> {
        let out = match event {
            MeshBehaviourEvent::Frames(event) => return self.handle_frame_event(event).await,
            MeshBehaviourEvent::Lanes(event) => {
                self.handle_offer_event(event);
                None
            }
            MeshBehaviourEvent::Gossipsub(event) => {
                self.metrics.libp2p.record(&event);
                self.handle_gossip(event)
            }
            MeshBehaviourEvent::Identify(event) => {
                self.metrics.libp2p.record(&event);
                self.handle_identify(event);
                None
            }
            MeshBehaviourEvent::Kad(event) => {
                self.metrics.libp2p.record(&event);
                self.handle_kad(&event);
                None
            }
            MeshBehaviourEvent::Mdns(event) => {
                self.handle_mdns(event);
                None
            }
            MeshBehaviourEvent::Ping(event) => {
                self.metrics.libp2p.record(&event);
                None
            }
            MeshBehaviourEvent::Relay(event) => {
                self.metrics.libp2p.record(&event);
                tracing::debug!(?event, "relay server");
                None
            }
            MeshBehaviourEvent::RelayClient(event) => {
                if let relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } = &event {
                    self.relay_retry.remove(relay_peer_id);
                }
                handle_relay_client(&event);
                None
            }
            MeshBehaviourEvent::Dcutr(event) => {
                self.metrics.libp2p.record(&event);
                handle_dcutr(&event);
                None
            }
            MeshBehaviourEvent::Autonat(event) => {
                self.handle_autonat(&event);
                None
            }
            MeshBehaviourEvent::Limits(never) | MeshBehaviourEvent::Bans(never) => match never {},
        };
        match out {
            Some(event) => self.emit(event).await,
            None => ControlFlow::Continue(()),
        }
    }

    /// A peer's first connection maps it and offers it a lane (not through a relay: a lane is
    /// dialed to the address the connection comes from, which would be the relay's); peers
    /// without an ed25519 key are not admitted. A direct connection next to relayed ones (hole
    /// punching succeeded, or the peer was dialed directly) closes those: its traffic leaves
    /// the relay.
    pub(super) fn handle_connected(
        &mut self,
        peer: libp2p::PeerId,
        connection: ConnectionId,
        established: u32,
        relayed: bool,
        remote: &libp2p::Multiaddr,
    ) -> Option<NetEvent> {
        if relayed {
            self.relayed.entry(peer).or_default().push(connection);
        } else if let Some(circuits) = self.relayed.remove(&peer) {
            tracing::info!(
                transport_peer = %peer,
                "direct connection to a peer reached through a relay; its traffic leaves the relay"
            );
            for circuit in circuits {
                self.swarm.close_connection(circuit);
            }
        }
        if !relayed {
            self.listen_via_relay(peer);
        }
        if established > 1 {
            return None;
        }
        let Some(protocol) = protocol_peer_id(&peer) else {
            tracing::warn!(%peer, "peer has no ed25519 identity; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
            return None;
        };
        self.peers.insert(peer, protocol);
        if let Some(addr) = self.bootstrap.get(&peer) {
            self.unreached.remove(&peer);
            tracing::info!("reached bootstrap peer {addr}");
        }
        if !relayed && let Some(offer) = self.lanes.connected(protocol, remote) {
            self.swarm.behaviour_mut().lanes.send_request(&peer, offer);
        }
        tracing::info!(peer = %protocol, transport_peer = %peer, "peer connected");
        Some(NetEvent::PeerConnected { peer: protocol })
    }

    pub(super) fn handle_closed(
        &mut self,
        peer: libp2p::PeerId,
        connection: ConnectionId,
        remaining: u32,
    ) -> Option<NetEvent> {
        if let Some(circuits) = self.relayed.get_mut(&peer) {
            circuits.retain(|c| *c != connection);
            if circuits.is_empty() {
                self.relayed.remove(&peer);
            }
        }
        if remaining > 0 {
            return None;
        }
        let protocol = self.peers.remove(&peer)?;
        self.lanes.disconnected(&protocol);
        tracing::info!(peer = %protocol, "peer disconnected");
        Some(NetEvent::PeerDisconnected { peer: protocol })
    }

    /// A failed dial: a WARN naming the likely cause when the peer is one of `--bootstrap` (once
    /// until it is reached), debug otherwise.
    pub(super) fn handle_dial_error(
        &mut self,
        peer: Option<libp2p::PeerId>,
        error: &DialError,
    ) -> NetEvent {
        match peer.and_then(|p| self.bootstrap.get(&p).map(|addr| (p, addr))) {
            Some((peer, addr)) if self.unreached.insert(peer) => tracing::warn!(
                "cannot reach bootstrap peer {addr}: {} ({})",
                likely_cause(error),
                dial_error_line(error)
            ),
            _ => tracing::debug!("dial failed: {}", dial_error_line(error)),
        }
        NetEvent::DialFailed {
            peer: peer.as_ref().and_then(protocol_peer_id),
            failure: DialFailure::from(error),
        }
    }

    /// An inbound frame is handed on first and acknowledged after, so the ack means "the node
    /// has it"; outbound outcomes resolve their pending request.
    async fn handle_frame_event(&mut self, event: FrameEvent) -> ControlFlow<()> {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let Some(from) = self.peers.protocol_of(&peer) else {
                        self.metrics.frames_failed_inbound.inc();
                        return ControlFlow::Continue(());
                    };
                    self.metrics.frames_received.inc();
                    self.metrics
                        .frame_bytes_received
                        .inc_by(frame_bytes(&request));
                    let flow = self
                        .emit(NetEvent::FrameReceived {
                            from,
                            frame: request,
                        })
                        .await;
                    let frames = &mut self.swarm.behaviour_mut().frames;
                    if frames.send_response(channel, FrameAck).is_err() {
                        tracing::debug!(peer = %from, "frame sender left before the ack");
                    }
                    flow
                }
                request_response::Message::Response { request_id, .. } => {
                    self.complete_frame(PendingKey::Stream(request_id), Ok(()));
                    ControlFlow::Continue(())
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                self.complete_frame(PendingKey::Stream(request_id), Err(send_failure(&error)));
                ControlFlow::Continue(())
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                self.metrics.frames_failed_inbound.inc();
                tracing::debug!(%peer, %error, "inbound frame failed");
                ControlFlow::Continue(())
            }
            request_response::Event::ResponseSent { .. } => ControlFlow::Continue(()),
        }
    }

    /// A connected peer offers us a lane: acknowledge, then dial it. A failed offer only means
    /// frames to that peer keep using libp2p.
    fn handle_offer_event(&mut self, event: OfferEvent) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .lanes
                    .send_response(channel, OfferAck);
                if let Some(from) = self.peers.protocol_of(&peer) {
                    self.lanes.offered(from, request);
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "lane offer not delivered");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "lane offer not read");
            }
            _ => {}
        }
    }

    /// Announcements are attributed to the author whose key sealed them (see `announce`).
    fn handle_gossip(&mut self, event: gossipsub::Event) -> Option<NetEvent> {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            } if message.topic == self.topic.hash() => {
                let relayed_by = protocol_peer_id(&propagation_source);
                match self.sealer.open(Bytes::from(message.data), relayed_by) {
                    Ok((from, bytes)) => {
                        self.metrics.gossip_received.inc();
                        Some(NetEvent::GossipReceived { from, bytes })
                    }
                    Err(error) => {
                        self.metrics.gossip_dropped.inc();
                        tracing::debug!(relay = %propagation_source, %error, "announcement dropped");
                        None
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic, .. } if topic == self.topic.hash() => {
                protocol_peer_id(&peer_id).map(|peer| NetEvent::AnnouncementsJoined { peer })
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                let dropped = failed_messages.priority + failed_messages.non_priority;
                self.slow_peer(peer_id, u64::try_from(dropped).unwrap_or(u64::MAX));
                None
            }
            _ => None,
        }
    }

    /// A peer gossipsub found with a full send queue ([`super::slow_peers::SlowPeers`]): one that stays so for
    /// [`SLOW_PEER_GRACE`] is disconnected with one WARN (it redials, or we do through
    /// Kademlia, once it reads again).
    fn slow_peer(&mut self, peer: libp2p::PeerId, dropped: u64) {
        let Some(dropped) = self.slow.report(peer, std::time::Instant::now(), dropped) else {
            return;
        };
        self.metrics.slow_peer_disconnects.inc();
        let name = self
            .peers
            .protocol_of(&peer)
            .map_or_else(|| peer.to_string(), |p| p.to_string());
        tracing::warn!(
            "peer {name} has not read its announcements for {} s ({dropped} dropped); \
             disconnecting it, it reconnects once it reads again",
            SLOW_PEER_GRACE.as_secs()
        );
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Listen addresses a peer reports go to Kademlia, so others can find it through us; a peer
    /// that trains something else is named and refused.
    fn handle_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            let difference = self.training.as_ref().and_then(|ours| {
                TrainingDescriptor::of_agent(&info.agent_version)
                    .and_then(|theirs| ours.difference(theirs))
            });
            if let Some(difference) = difference {
                tracing::error!(
                    peer = %peer_id,
                    "peer trains something else ({difference}); every node of a mesh must \
                     use the same settings: refusing it"
                );
                self.ban_transport(peer_id, BanReason::DifferentTraining);
                return;
            }
            let kad = &mut self.swarm.behaviour_mut().kad;
            for addr in info.listen_addrs.into_iter().take(IDENTIFY_ADDRS_MAX) {
                kad.add_address(&peer_id, addr);
            }
        }
    }

    /// Reserves a slot on `peer` if it is a `--relay` and listens through it
    /// (`<relay>/p2p-circuit`), once connected to it: the relay client then uses this
    /// connection. (Asked before, it dials the relay itself, from the same port to the same
    /// address as the connection being dialed already, and that second dial fails.) The circuit
    /// address is advertised to peers like any listen address.
    pub(super) fn listen_via_relay(&mut self, peer: libp2p::PeerId) {
        let Some(addr) = self.relays.get(&peer) else {
            return;
        };
        if self.relay_listeners.values().any(|r| *r == peer) {
            return;
        }
        let circuit = addr.clone().with(libp2p::multiaddr::Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit) {
            Ok(listener) => {
                self.relay_listeners.insert(listener, peer);
            }
            Err(error) => tracing::warn!(%addr, %error, "cannot listen through relay"),
        }
    }

    /// AutoNAT's verdict on whether peers can dial this node, once per change: behind NAT
    /// without `--relay`, peers elsewhere cannot reach it, and the operator is told what to do.
    fn handle_autonat(&self, event: &autonat::Event) {
        let autonat::Event::StatusChanged { new, .. } = event else {
            return;
        };
        match new {
            autonat::NatStatus::Public(addr) => {
                tracing::info!("peers can dial this node at {addr} (AutoNAT)");
            }
            // Probes by peers behind NAT fail for a reachable relay too (seen with `make nat`: the
            // public relay's verdict flapped while both NAT'd nodes held reservations on it), so
            // a relay's operator is told where the real evidence is instead of being warned.
            autonat::NatStatus::Private if self.relay_server => tracing::info!(
                "AutoNAT's dial-back probes failed; a relay that nodes behind NAT reserve slots \
                 on (\"reachable through relay\" in their logs) is reachable all the same"
            ),
            autonat::NatStatus::Private if !self.relays.is_empty() => tracing::info!(
                "this node is behind NAT (AutoNAT): peers reach it through its relay, then try \
                 a direct connection by hole punching"
            ),
            autonat::NatStatus::Private => tracing::warn!(
                "this node is behind NAT (AutoNAT): peers outside its network cannot dial it; \
                 give --relay <a public node's address ending in /p2p/<id>>, started with \
                 --relay-server (docs/operator.md, \"Behind NAT\")"
            ),
            autonat::NatStatus::Unknown => {}
        }
    }

    /// A training mesh is small and dense (every contributor sends to every span owner), so
    /// every peer Kademlia learns of is dialed by peer id; noise checks who answers.
    fn handle_kad(&mut self, event: &kad::Event) {
        if let kad::Event::RoutingUpdated { peer, .. } = event
            && !self.swarm.is_connected(peer)
        {
            let opts = DialOpts::peer_id(*peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                tracing::debug!(%peer, %error, "kademlia dial not started");
            }
        }
    }

    /// Peers found on the LAN are dialed by peer id, so noise checks who answers.
    fn handle_mdns(&mut self, event: mdns::Event) {
        let mdns::Event::Discovered(found) = event else {
            return;
        };
        for (peer, addr) in found.into_iter().take(MDNS_PEERS_MAX) {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                tracing::debug!(%peer, %error, "mdns dial not started");
            }
        }
    }
}

fn send_failure(error: &OutboundFailure) -> SendFailure {
    match error {
        OutboundFailure::DialFailure => SendFailure::NotConnected,
        OutboundFailure::Timeout => SendFailure::Timeout,
        OutboundFailure::ConnectionClosed => SendFailure::ConnectionClosed,
        OutboundFailure::UnsupportedProtocols => SendFailure::Unsupported,
        OutboundFailure::Io(e) => SendFailure::Io(e.kind()),
    }
}

/// The relay client's news: a reservation on a `--relay` (once, not at every renewal), or one
/// refused.
fn handle_relay_client(event: &relay::client::Event) {
    match event {
        relay::client::Event::ReservationReqAccepted {
            relay_peer_id,
            renewal: false,
            ..
        } => tracing::info!(
            relay = %relay_peer_id,
            "reachable through relay: peers behind other NATs can connect"
        ),
        relay::client::Event::ReservationReqAccepted { .. } => {}
        other => tracing::debug!(?other, "relay client"),
    }
}

/// The outcome of hole punching to a peer reached through a relay.
fn handle_dcutr(event: &dcutr::Event) {
    match &event.result {
        Ok(_) => tracing::info!(
            transport_peer = %event.remote_peer_id,
            "hole punching gave a direct connection"
        ),
        Err(error) => tracing::info!(
            transport_peer = %event.remote_peer_id,
            "hole punching failed ({error}); traffic with this peer stays relayed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::transport_cause;

    /// The words an operator needs for each way a bootstrap dial fails (the texts are what
    /// libp2p's TCP, pnet and noise layers report).
    #[test]
    fn dial_failures_name_their_likely_cause() {
        let cases = [
            (
                "failed to connect: connection refused (os error 111)",
                "nothing listens",
            ),
            ("timeout has been reached", "--mesh-key"),
            ("noise: decrypt error", "--mesh-key"),
            ("unexpected eof", "--mesh-key"),
            ("network is unreachable (os error 101)", "cannot be reached"),
        ];
        for (text, words) in cases {
            assert!(transport_cause(text).contains(words), "{text}");
        }
    }
}
