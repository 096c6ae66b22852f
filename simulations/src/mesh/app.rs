//! The [`Application`] that runs real protocol peers on the simulated network.

use super::MeshSpec;
use super::model::{ToyModel, initial_params, params_bytes};
use super::record::{MeshCounts, MeshLog, Verdict};
use crate::churn::{ChurnProcess, Transition};
use crate::compute::ComputeModel;
use crate::engine::{Application, Outbox};
use crate::net::{Delivered, PeerIdx};
use crate::rng::{Domain, SeedTree};
use crate::runner::RoundRecord;
use crate::time::SimTime;
use gradmesh_protocol::driver::InvariantChecker;
use gradmesh_protocol::peer::{Event, Output, Peer, Profile};
use gradmesh_protocol::wire::{self, Envelope};
use gradmesh_protocol::{Digest, PeerId, PeerKey, RoundId, Timestamp};
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// What travels through the simulated network: a protocol message from an authenticated peer.
#[derive(Debug)]
pub struct Frame {
    from: PeerId,
    /// Lost in transit (drawn at send time under the fault schedule's drop rate): the flow
    /// still uses bandwidth, but the receiver never sees it.
    lost: bool,
    message: Message,
}

#[derive(Debug)]
enum Message {
    Decoded(Box<Envelope>),
    /// The frame [`wire::encode`] produced; decoded on arrival.
    Encoded(Vec<u8>),
}

/// The mesh's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshTimer {
    /// Start the founders, arm churn, kills, joins and partitions.
    Init,
    /// Node `node`'s protocol deadline (stale unless `epoch` is its latest).
    Peer {
        /// Node index.
        node: usize,
        /// Arming epoch.
        epoch: u64,
    },
    /// Node `node`'s gradient is computed.
    Gradient {
        /// Node index.
        node: usize,
        /// Request epoch.
        epoch: u64,
    },
    /// A churn transition of a founding slot.
    Churn(Transition),
    /// Kill node `0` (if it is alive).
    Kill(usize),
    /// Scheduled join number `0`.
    Join(usize),
    /// Partition window `0` starts.
    PartitionStart(usize),
    /// Partition window `0` heals.
    PartitionEnd(usize),
    /// The run's hard end.
    End,
}

#[derive(Debug)]
struct MeshNode {
    slot: PeerIdx,
    id: PeerId,
    peer: Option<Peer>,
    model: ToyModel,
    timer_epoch: u64,
    gradient_epoch: u64,
}

type Out = Outbox<Frame, MeshTimer>;

/// Real [`Peer`] machines on the simulated network, one per live node.
#[derive(Debug)]
pub struct ProtocolMesh {
    spec: MeshSpec,
    compute: ComputeModel,
    churn: ChurnProcess,
    loss: ChaCha8Rng,
    nodes: Vec<MeshNode>,
    by_id: BTreeMap<PeerId, usize>,
    slot_node: Vec<Option<usize>>,
    checker: InvariantChecker,
    log: MeshLog,
    ended: bool,
}

fn ts(t: SimTime) -> Timestamp {
    t.into()
}

impl ProtocolMesh {
    /// A mesh for `spec`; all randomness derives from `seeds`.
    #[must_use]
    pub fn new(mut spec: MeshSpec, seeds: SeedTree) -> Self {
        let founders = spec.founders;
        spec.config = spec.config.with_genesis_quorum(founders / 2 + 1);
        let slots = spec.net.peers().len();
        Self {
            compute: ComputeModel::new(&spec.step_times, spec.stragglers, seeds),
            churn: ChurnProcess::new(spec.churn.clone(), founders, seeds),
            loss: seeds.rng(Domain::Loss, 1),
            nodes: Vec::new(),
            by_id: BTreeMap::new(),
            slot_node: vec![None; slots],
            checker: InvariantChecker::new(spec.config.round_timeout())
                .with_aggregation(spec.config.aggregation())
                .with_codec(spec.config.codec()),
            log: MeshLog::default(),
            ended: false,
            spec,
        }
    }

    /// Distinct rounds committed so far.
    #[must_use]
    pub fn rounds_committed(&self) -> usize {
        self.log.rounds_committed()
    }

    /// Whether the run is over: its end passed, or the round target was met a quarter of a round
    /// timeout ago.
    #[must_use]
    pub fn is_done(&self, now: SimTime) -> bool {
        // Other peers commit a round within a few message latencies of the first.
        let grace = self.spec.config.round_timeout() / 4;
        self.ended
            || self
                .spec
                .rounds
                .and_then(|r| self.log.commit_time(r as usize))
                .is_some_and(|t| now > t.plus(grace))
    }

    /// One row per committed round, at most the round target.
    #[must_use]
    pub fn records(&self) -> Vec<RoundRecord> {
        let mut rows = self.log.records();
        if let Some(r) = self.spec.rounds {
            rows.truncate(r as usize);
        }
        rows
    }

    /// Totals of the run.
    #[must_use]
    pub fn counts(&self) -> MeshCounts {
        self.log.counts(&self.checker)
    }

    /// Safety (the checker's first violation) and liveness at `end`.
    #[must_use]
    pub fn verdict(&self, end: SimTime) -> Verdict {
        let alive: Vec<(PeerId, SimTime)> = self
            .nodes
            .iter()
            .filter(|n| n.peer.is_some())
            .map(|n| (n.id, self.log.born(n.id)))
            .collect();
        let undecided = self
            .nodes
            .iter()
            .enumerate()
            .any(|(i, n)| n.peer.is_some() && self.checker.is_withholding(i));
        let mut verdict = self.log.verdict(
            &self.checker,
            &alive,
            undecided,
            end,
            self.spec.faults.faults_end,
        );
        verdict.survivors_differ = self.survivors_differ();
        verdict
    }

    /// Live peers holding a state of the same round must hold the same state digest and the
    /// same parameter bytes (checked on the models themselves, independently of the protocol).
    fn survivors_differ(&self) -> Option<String> {
        let mut by_round: BTreeMap<RoundId, (Digest, Digest, PeerId)> = BTreeMap::new();
        for n in &self.nodes {
            let Some(state) = n.peer.as_ref().and_then(Peer::state) else {
                continue;
            };
            if n.peer.as_ref().is_some_and(Peer::is_joining) {
                continue;
            }
            let params = Digest::of(&params_bytes(n.model.params()));
            let seen = by_round
                .entry(state.round)
                .or_insert((state.digest, params, n.id));
            if (seen.0, seen.1) != (state.digest, params) {
                return Some(format!(
                    "peers {} and {} both hold round {:?} with different states",
                    seen.2, n.id, state.round
                ));
            }
        }
        None
    }

    /// Parameters of every live node that holds a state (for convergence tests).
    #[must_use]
    pub fn live_params(&self) -> Vec<&[f32]> {
        self.nodes
            .iter()
            .filter(|n| n.peer.as_ref().is_some_and(|p| p.state().is_some()))
            .map(|n| n.model.params())
            .collect()
    }

    fn on_init(&mut self, now: SimTime, out: &mut Out) {
        let initial = initial_params(self.spec.floats);
        for s in 0..self.slot_node.len() {
            let slot = PeerIdx(s as u32);
            let founding = s < self.spec.founders && self.churn.is_initially_up(slot);
            if founding {
                self.spawn(now, slot, Some(initial.clone()), out);
            } else {
                out.peer_down(slot);
            }
            if s < self.spec.founders
                && let Some(t) = self.churn.first(slot)
            {
                out.set_timer(t.at, MeshTimer::Churn(t));
            }
        }
        let faults = &self.spec.faults;
        for &(at, node) in &faults.kills {
            out.set_timer(at.max(now), MeshTimer::Kill(node));
        }
        for (j, &at) in faults.joins.iter().enumerate() {
            out.set_timer(at.max(now), MeshTimer::Join(j));
        }
        for (i, p) in faults.partitions.iter().enumerate() {
            out.set_timer(p.start.max(now), MeshTimer::PartitionStart(i));
            out.set_timer(p.end.max(now), MeshTimer::PartitionEnd(i));
        }
        out.set_timer(self.spec.until.max(now), MeshTimer::End);
    }

    /// Starts a new node in `slot`: a founder holding `initial`, or a joiner.
    fn spawn(&mut self, now: SimTime, slot: PeerIdx, initial: Option<Vec<f32>>, out: &mut Out) {
        let index = self.nodes.len();
        let key = PeerKey::from_index(index as u64);
        let id = key.id();
        let model = ToyModel::new(index, initial.clone().unwrap_or_default(), self.spec.floats);
        let link = self.spec.net.peers()[slot.get()];
        let profile = Profile {
            bandwidth_bytes_per_s: link.up_bytes_per_s.max(1.0) as u64,
            samples_per_s: 1000,
            samples_per_step: model.weight(),
        };
        let bytes = initial.as_deref().map(params_bytes);
        let config = self.spec.config.clone();
        let Ok(peer) = Peer::new(config, key, profile, bytes, ts(now)) else {
            return;
        };
        self.checker.record_birth(index, ts(now));
        self.log.record_birth(id, now);
        self.nodes.push(MeshNode {
            slot,
            id,
            peer: Some(peer),
            model,
            timer_epoch: 0,
            gradient_epoch: 0,
        });
        self.by_id.insert(id, index);
        self.slot_node[slot.get()] = Some(index);
        self.drain(now, index, out);
    }

    fn kill(&mut self, node: usize, out: &mut Out) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if n.peer.take().is_none() {
            return;
        }
        self.checker.record_kill(node);
        self.log.record_kill();
        self.slot_node[n.slot.get()] = None;
        out.peer_down(n.slot);
    }

    fn on_churn(&mut self, now: SimTime, t: Transition, out: &mut Out) {
        if t.is_up {
            out.peer_up(t.peer);
            self.log.record_join();
            self.spawn(now, t.peer, None, out);
        } else if let Some(node) = self.slot_node[t.peer.get()] {
            self.kill(node, out);
        } else {
            out.peer_down(t.peer);
        }
        if let Some(next) = self.churn.next(t) {
            out.set_timer(next.at, MeshTimer::Churn(next));
        }
    }

    fn on_join(&mut self, now: SimTime, j: usize, out: &mut Out) {
        let slot = PeerIdx((self.spec.founders + j) as u32);
        if slot.get() >= self.slot_node.len() || self.slot_node[slot.get()].is_some() {
            return;
        }
        out.peer_up(slot);
        self.log.record_join();
        self.spawn(now, slot, None, out);
    }

    fn on_peer_timer(&mut self, now: SimTime, node: usize, epoch: u64, out: &mut Out) {
        let n = &mut self.nodes[node];
        if n.timer_epoch != epoch {
            return;
        }
        if let Some(peer) = n.peer.as_mut() {
            peer.handle_timeout(ts(now));
            self.drain(now, node, out);
        }
    }

    fn on_gradient(&mut self, now: SimTime, node: usize, epoch: u64, out: &mut Out) {
        let n = &mut self.nodes[node];
        if n.gradient_epoch != epoch {
            return;
        }
        let Some(peer) = n.peer.as_mut() else { return };
        let Some(base) = peer.state() else { return };
        let (weight, grad) = (n.model.weight(), n.model.gradient());
        self.checker
            .record_gradient(n.id, base, weight, grad.clone());
        peer.handle_gradient(ts(now), weight, grad);
        self.drain(now, node, out);
    }

    fn on_message(&mut self, now: SimTime, msg: Delivered<Frame>, out: &mut Out) {
        let Some(node) = self.slot_node[msg.to.get()] else {
            return;
        };
        let frame = msg.payload;
        if frame.lost {
            self.log.record_lost();
            return;
        }
        let envelope = match frame.message {
            Message::Decoded(e) => *e,
            // Our own encoder made this frame: a decode failure is a bug, not a drop.
            Message::Encoded(bytes) => match wire::decode(&bytes, usize::MAX) {
                Ok(e) => e,
                Err(e) => return self.checker.record_decode_failure(e),
            },
        };
        if let Some(peer) = self.nodes[node].peer.as_mut() {
            peer.handle_message(ts(now), frame.from, envelope);
            self.drain(now, node, out);
        }
    }

    /// Drains node `i`'s outputs into the network and its model, then rearms its timer.
    fn drain(&mut self, now: SimTime, i: usize, out: &mut Out) {
        while let Some(output) = self.nodes[i].peer.as_mut().and_then(Peer::poll_output) {
            match output {
                Output::Send { to, envelope } => {
                    if let Some(&dest) = self.by_id.get(&to) {
                        self.transmit(now, i, dest, envelope, out);
                    }
                }
                Output::Broadcast { envelope } => self.broadcast(now, i, &envelope, out),
                Output::ComputeGradient { .. } => {
                    let step_s = self.compute.draw_step_s(self.nodes[i].slot);
                    let n = &mut self.nodes[i];
                    n.gradient_epoch += 1;
                    let epoch = n.gradient_epoch;
                    let at = now.plus_micros(crate::time::secs_to_micros_ceil(step_s));
                    out.set_timer(at, MeshTimer::Gradient { node: i, epoch });
                }
                Output::LoadState(snapshot) => {
                    self.checker.record_load(i, &snapshot, ts(now));
                    self.log.record_resync(now);
                    self.nodes[i].model.load(snapshot.bytes());
                }
                Output::ApplyRound(result) => self.apply_round(now, i, &result),
                Output::Event(e) => self.on_event(now, i, &e),
                // Simulated peers never restart from a checkpoint.
                Output::Persist(_) => {}
            }
        }
        let n = &mut self.nodes[i];
        if let Some(t) = n.peer.as_ref().and_then(Peer::poll_timeout) {
            n.timer_epoch += 1;
            let node = i;
            let epoch = n.timer_epoch;
            out.set_timer(SimTime::from(t).max(now), MeshTimer::Peer { node, epoch });
        }
    }

    fn apply_round(
        &mut self,
        now: SimTime,
        i: usize,
        result: &gradmesh_protocol::reduce::RoundResult,
    ) {
        self.checker.record_commit(i, result);
        self.log.record_committee(result.round, &result.committee);
        let n = &mut self.nodes[i];
        let bytes = n.model.apply(result);
        if let Some(peer) = n.peer.as_mut()
            && peer.handle_state(ts(now), result.round, bytes).is_ok()
        {
            let state = peer.state();
            self.checker.record_state(i, state, ts(now));
        }
    }

    fn on_event(&mut self, now: SimTime, i: usize, e: &Event) {
        self.checker.record_event(i, e, ts(now));
        let active = self.slot_node.iter().filter(|s| s.is_some()).count();
        self.log.record_event(now, self.nodes[i].id, e, active);
    }

    fn broadcast(&mut self, now: SimTime, from: usize, envelope: &Envelope, out: &mut Out) {
        let dests: Vec<usize> = self.slot_node.iter().flatten().copied().collect();
        for to in dests.into_iter().filter(|&to| to != from) {
            self.transmit(now, from, to, envelope.clone(), out);
        }
    }

    fn transmit(
        &mut self,
        now: SimTime,
        from: usize,
        to: usize,
        envelope: Envelope,
        out: &mut Out,
    ) {
        let header_and_payload = wire::encoded_len(&envelope) as f64;
        let scaled =
            (self.spec.payload_scale - 1.0).max(0.0) * wire::payload_bytes(&envelope.body) as f64;
        let bytes = (header_and_payload + scaled).round() as u64;
        let lost = now < self.spec.faults.faults_end
            && self.spec.faults.drop_rate > 0.0
            && self
                .loss
                .random_bool(self.spec.faults.drop_rate.clamp(0.0, 1.0));
        let message = if self.spec.through_wire {
            match wire::encode(&envelope) {
                Ok(frame) => Message::Encoded(frame),
                Err(e) => return self.checker.record_decode_failure(e),
            }
        } else {
            Message::Decoded(Box::new(envelope))
        };
        let (a, b) = (self.nodes[from].slot, self.nodes[to].slot);
        self.log.record_sent(bytes);
        let from = self.nodes[from].id;
        out.send(
            a,
            b,
            bytes,
            Frame {
                from,
                lost,
                message,
            },
        );
    }
}

impl Application for ProtocolMesh {
    type Payload = Frame;
    type Timer = MeshTimer;

    fn handle_message(&mut self, now: SimTime, msg: Delivered<Frame>, out: &mut Out) {
        self.on_message(now, msg, out);
    }

    fn handle_timer(&mut self, now: SimTime, timer: MeshTimer, out: &mut Out) {
        match timer {
            MeshTimer::Init => self.on_init(now, out),
            MeshTimer::Peer { node, epoch } => self.on_peer_timer(now, node, epoch, out),
            MeshTimer::Gradient { node, epoch } => self.on_gradient(now, node, epoch, out),
            MeshTimer::Churn(t) => self.on_churn(now, t, out),
            MeshTimer::Kill(node) => self.kill(node, out),
            MeshTimer::Join(j) => self.on_join(now, j, out),
            MeshTimer::PartitionStart(i) => {
                out.partition(self.spec.faults.partitions[i].side_of.clone());
            }
            MeshTimer::PartitionEnd(_) => out.repair(),
            MeshTimer::End => self.ended = true,
        }
    }
}
