//! How the swarm loop turns libp2p events into [`NetEvent`]s: one small function per source.
//! None of this is protocol logic: peers are mapped, frames acknowledged, addresses learned.

use std::ops::ControlFlow;

use bytes::Bytes;
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundFailure};
use libp2p::swarm::DialError;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{gossipsub, identify, kad, mdns};

use super::behaviour::MeshBehaviourEvent;
use super::config::TrainingDescriptor;
use super::frame::{Frame, FrameAck};
use super::identity::protocol_peer_id;
use super::lane::{LaneOffer, OfferAck};
use super::messages::{BanReason, DialFailure, NetEvent, SendFailure};
use super::swarm_loop::{PendingKey, SwarmLoop, frame_bytes};

/// Addresses taken from one identify message; the rest are ignored.
const IDENTIFY_ADDRS_MAX: usize = 8;
/// Peers taken from one mDNS discovery.
const MDNS_PEERS_MAX: usize = 32;

type FrameEvent = request_response::Event<Frame, FrameAck>;
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
            MeshBehaviourEvent::Limits(never) | MeshBehaviourEvent::Bans(never) => match never {},
        };
        match out {
            Some(event) => self.emit(event).await,
            None => ControlFlow::Continue(()),
        }
    }

    /// A peer's first connection maps it and offers it a lane; peers without an ed25519 key
    /// are not admitted.
    pub(super) fn handle_connected(
        &mut self,
        peer: libp2p::PeerId,
        established: u32,
        remote: &libp2p::Multiaddr,
    ) -> Option<NetEvent> {
        if established > 1 {
            return None;
        }
        let Some(protocol) = protocol_peer_id(&peer) else {
            tracing::warn!(%peer, "peer has no ed25519 identity; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
            return None;
        };
        self.peers.insert(peer, protocol);
        if let Some(offer) = self.lanes.connected(protocol, remote) {
            self.swarm.behaviour_mut().lanes.send_request(&peer, offer);
        }
        tracing::info!(peer = %protocol, transport_peer = %peer, "peer connected");
        Some(NetEvent::PeerConnected { peer: protocol })
    }

    pub(super) fn handle_closed(
        &mut self,
        peer: libp2p::PeerId,
        remaining: u32,
    ) -> Option<NetEvent> {
        if remaining > 0 {
            return None;
        }
        let protocol = self.peers.remove(&peer)?;
        self.lanes.disconnected(&protocol);
        tracing::info!(peer = %protocol, "peer disconnected");
        Some(NetEvent::PeerDisconnected { peer: protocol })
    }

    pub(super) fn handle_dial_error(
        &self,
        peer: Option<libp2p::PeerId>,
        error: &DialError,
    ) -> NetEvent {
        tracing::debug!(?peer, %error, "dial failed");
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
            _ => None,
        }
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
