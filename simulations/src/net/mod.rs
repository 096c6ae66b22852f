//! The flow-level network: messages become flows through max-min shared links, then propagate for
//! the one-way latency and are delivered.
//!
//! The network is itself a sans-IO machine in the shape of the protocol's: inputs
//! (`handle_send`, `handle_timeout`, `handle_peer_down`, `partition`, ...) take `now`, deliveries
//! are drained with [`Network::poll_delivery`], and [`Network::poll_timeout`] gives the next
//! instant anything happens. Rate recomputation is deferred to `poll_timeout`, so every send and
//! completion at one instant costs a single recomputation of the affected component.
//!
//! Model: a message of `B` bytes from `a` to `b` is a flow over `a`'s uplink, `b`'s downlink and,
//! between two sites, the sender site's uplink and the receiver site's downlink. Its rate is its
//! max-min fair share; it drains `B` bytes (more under [`LossModel::Retransmit`]); then it arrives
//! after `latency(a, b)`. So an isolated message takes `latency + B / bandwidth`, the α-β cost.

mod buckets;
mod config;
mod flow;
mod maxmin;
#[cfg(test)]
mod tests;

pub use config::{LossModel, NetConfig, NetConfigError, PeerLink, SiteLink};

use crate::rng::{Domain, SeedTree};
use crate::time::SimTime;
use buckets::TimeBuckets;
use flow::{FlowSlot, FlowTable, LINKS_PER_FLOW_MAX, NewFlow};
use maxmin::{Rescheduled, Solver};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

/// A simulated peer, by index into the network configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerIdx(pub u32);

impl PeerIdx {
    /// The index as a `usize`.
    #[must_use]
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

/// A message handed to its receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered<P> {
    /// The sender.
    pub from: PeerIdx,
    /// The receiver.
    pub to: PeerIdx,
    /// Payload bytes as sent (before any retransmission overhead).
    pub bytes: u64,
    /// When the sender handed it to the network.
    pub sent_at: SimTime,
    /// What the application attached.
    pub payload: P,
}

/// What happened to a message handed to [`Network::handle_send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum SendStatus {
    /// The flow started (it may still be lost under [`LossModel::Drop`] or cancelled later).
    Started,
    /// Sender or receiver is down: nothing is sent.
    PeerDown,
    /// Sender and receiver are on different sides of a partition: nothing is sent.
    Partitioned,
}

/// Which flows a rate recomputation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecomputeScope {
    /// Only the connected component (links ↔ flows) of the links whose flow set changed. The
    /// result is identical to a global recomputation: max-min rates of one component do not
    /// depend on any other component.
    #[default]
    Component,
    /// Every flow, every time: the textbook scheme, kept to measure what the component scope saves.
    Global,
}

/// Counters of the network's work, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages accepted by `handle_send`.
    pub sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages refused at send or lost in transit (loss, dead receiver, partition).
    pub dropped: u64,
    /// Flows cancelled mid-transfer by a peer going down or a partition.
    pub cancelled: u64,
    /// Payload bytes delivered.
    pub bytes_delivered: u64,
    /// Max-min recomputations run.
    pub recomputes: u64,
    /// Flow-link incidences visited by those recomputations.
    pub recompute_visits: u64,
    /// Most flows active at once.
    pub flows_peak: u64,
}

#[derive(Debug, Clone, Copy)]
struct PeerState {
    is_up: bool,
    incarnation: u32,
    side: u32,
}

/// Per-flow facts the table does not need: kept with the payload.
#[derive(Debug)]
struct InTransit<P> {
    /// Send order: messages completing at one instant are delivered in send order.
    seq: u64,
    bytes: u64,
    sent_at: SimTime,
    dst_incarnation: u32,
    is_lost: bool,
    payload: P,
}

/// A message that has drained and is propagating.
#[derive(Debug)]
struct Propagating<P> {
    from: u32,
    to: u32,
    transit: InTransit<P>,
}

/// The network model. `P` is the application's payload type.
#[derive(Debug)]
pub struct Network<P> {
    config: NetConfig,
    table: FlowTable<InTransit<P>>,
    solver: Solver,
    peers: Vec<PeerState>,
    completions: TimeBuckets<Rescheduled>,
    propagating: TimeBuckets<Propagating<P>>,
    ready: VecDeque<Delivered<P>>,
    dirty: Vec<u32>,
    rescheduled: Vec<Rescheduled>,
    loss_rng: ChaCha8Rng,
    scope: RecomputeScope,
    seq: u64,
    now: SimTime,
    stats: NetStats,
}

impl<P> Network<P> {
    /// A network with every peer up, no flows, at time zero.
    #[must_use]
    pub fn new(config: NetConfig, seeds: SeedTree) -> Self {
        let mut caps = Vec::with_capacity(2 * (config.peers().len() + config.sites().len()));
        for p in config.peers() {
            caps.extend([p.up_bytes_per_s, p.down_bytes_per_s]);
        }
        for s in config.sites() {
            caps.extend([s.up_bytes_per_s, s.down_bytes_per_s]);
        }
        let peer = PeerState {
            is_up: true,
            incarnation: 0,
            side: 0,
        };
        Self {
            peers: vec![peer; config.peers().len()],
            table: FlowTable::new(caps),
            config,
            solver: Solver::default(),
            completions: TimeBuckets::default(),
            propagating: TimeBuckets::default(),
            ready: VecDeque::new(),
            dirty: Vec::new(),
            rescheduled: Vec::new(),
            loss_rng: seeds.rng(Domain::Loss, 0),
            scope: RecomputeScope::Component,
            seq: 0,
            now: SimTime::ZERO,
            stats: NetStats::default(),
        }
    }

    /// Sets which flows a recomputation covers (rates are the same either way; cost differs).
    pub fn set_recompute_scope(&mut self, scope: RecomputeScope) {
        self.scope = scope;
    }

    /// The validated configuration.
    #[must_use]
    pub const fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Work counters so far.
    #[must_use]
    pub fn stats(&self) -> NetStats {
        NetStats {
            recomputes: self.solver.recomputes_total,
            recompute_visits: self.solver.visits_total,
            ..self.stats
        }
    }

    /// Flows currently draining.
    #[must_use]
    pub fn active_flows(&self) -> usize {
        self.table.live()
    }

    /// Whether `peer` is up.
    #[must_use]
    pub fn is_up(&self, peer: PeerIdx) -> bool {
        self.peers[peer.get()].is_up
    }

    /// Starts sending `bytes` from `from` to `to`; the payload comes out of
    /// [`Self::poll_delivery`] once the flow has drained and the latency has elapsed.
    pub fn handle_send(
        &mut self,
        now: SimTime,
        from: PeerIdx,
        to: PeerIdx,
        bytes: u64,
        payload: P,
    ) -> SendStatus {
        self.advance(now);
        let (src, dst) = (self.peers[from.get()], self.peers[to.get()]);
        if !src.is_up || !dst.is_up {
            self.stats.dropped += 1;
            return SendStatus::PeerDown;
        }
        if src.side != dst.side {
            self.stats.dropped += 1;
            return SendStatus::Partitioned;
        }
        self.stats.sent += 1;
        let is_lost = match self.config.loss() {
            LossModel::Drop { rate } => self.loss_rng.random_bool(rate),
            _ => false,
        };
        self.seq += 1;
        let transit = InTransit {
            seq: self.seq,
            bytes,
            sent_at: now,
            dst_incarnation: dst.incarnation,
            is_lost,
            payload,
        };
        if bytes == 0 {
            self.start_propagation(now, from.0, to.0, transit);
            return SendStatus::Started;
        }
        self.start_flow(now, from.0, to.0, transit);
        SendStatus::Started
    }

    fn start_flow(&mut self, now: SimTime, src: u32, dst: u32, transit: InTransit<P>) {
        let (links, n_links) = self.route(src, dst);
        let wire_bytes = match self.config.loss() {
            LossModel::Retransmit { rate } => transit.bytes as f64 / (1.0 - rate),
            _ => transit.bytes as f64,
        };
        self.table.insert(NewFlow {
            src,
            dst,
            links,
            n_links,
            wire_bytes,
            now,
            seq: transit.seq,
            message: transit,
        });
        self.dirty.extend_from_slice(&links[..usize::from(n_links)]);
        self.stats.flows_peak = self.stats.flows_peak.max(self.table.live() as u64);
    }

    /// The links a flow from `src` to `dst` crosses.
    fn route(&self, src: u32, dst: u32) -> ([u32; LINKS_PER_FLOW_MAX], u8) {
        let peers = self.config.peers();
        let n_peers = u32::try_from(peers.len()).expect("peer count fits u32");
        let mut links = [2 * src, 2 * dst + 1, 0, 0];
        let mut n = 2;
        if let (Some(sa), Some(sb)) = (peers[src as usize].site, peers[dst as usize].site)
            && sa != sb
        {
            links[2] = 2 * n_peers + 2 * sa;
            links[3] = 2 * n_peers + 2 * sb + 1;
            n = 4;
        }
        (links, n)
    }

    fn start_propagation(&mut self, drained_at: SimTime, from: u32, to: u32, t: InTransit<P>) {
        let arrive_at = drained_at.plus_micros(self.config.latency_us(from as usize, to as usize));
        self.propagating.push(
            arrive_at,
            Propagating {
                from,
                to,
                transit: t,
            },
        );
    }

    /// Completes every flow that has drained by `now` and delivers every message that has
    /// arrived by `now`. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: SimTime) {
        self.advance(now);
        while let Some((at, mut due)) = self.completions.pop_due(now) {
            due.sort_unstable_by_key(|r| r.seq);
            for r in &due {
                let flow = &self.table.flows[r.slot as usize];
                if !self.table.is_live(r.slot) || flow.version != r.version {
                    continue; // Superseded by a rate change, or cancelled.
                }
                let (src, dst, links, n) = (flow.src, flow.dst, flow.links, flow.n_links);
                self.dirty.extend_from_slice(&links[..usize::from(n)]);
                let transit = self.table.remove(r.slot).expect("checked live above");
                self.start_propagation(at, src, dst, transit);
            }
            self.completions.recycle(due);
        }
        self.deliver_arrived(now);
    }

    fn deliver_arrived(&mut self, now: SimTime) {
        while let Some((_, mut arrived)) = self.propagating.pop_due(now) {
            for p in arrived.drain(..) {
                self.deliver(p);
            }
            self.propagating.recycle(arrived);
        }
    }

    fn deliver(&mut self, p: Propagating<P>) {
        let (src, dst) = (self.peers[p.from as usize], self.peers[p.to as usize]);
        let t = p.transit;
        if t.is_lost || !dst.is_up || dst.incarnation != t.dst_incarnation || src.side != dst.side {
            self.stats.dropped += 1;
            return;
        }
        self.stats.delivered += 1;
        self.stats.bytes_delivered += t.bytes;
        self.ready.push_back(Delivered {
            from: PeerIdx(p.from),
            to: PeerIdx(p.to),
            bytes: t.bytes,
            sent_at: t.sent_at,
            payload: t.payload,
        });
    }

    /// The next delivered message, in (arrival time, send order) order.
    #[must_use]
    pub fn poll_delivery(&mut self) -> Option<Delivered<P>> {
        self.ready.pop_front()
    }

    /// The earliest instant at which a flow drains or a message arrives; `None` when idle.
    /// Takes `&mut self` because pending rate recomputations run here, once per instant.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<SimTime> {
        self.flush();
        if !self.ready.is_empty() {
            return Some(self.now);
        }
        let table = &self.table;
        let is_current = |r: &Rescheduled| {
            table.is_live(r.slot) && table.flows[r.slot as usize].version == r.version
        };
        self.completions.prune_front(is_current);
        let flow = self.completions.first_time();
        let arrival = self.propagating.first_time();
        flow.into_iter().chain(arrival).min()
    }

    /// Takes `peer` down: its flows are cancelled mid-transfer (the receivers never get them),
    /// and messages still propagating to it are dropped on arrival.
    pub fn handle_peer_down(&mut self, now: SimTime, peer: PeerIdx) {
        self.advance(now);
        let state = &mut self.peers[peer.get()];
        state.is_up = false;
        state.incarnation = state.incarnation.wrapping_add(1);
        for link in [2 * peer.0, 2 * peer.0 + 1] {
            while let Some(&slot) = self.table.links[link as usize].flows.last() {
                self.cancel(slot);
            }
        }
    }

    /// Brings `peer` back up with empty queues.
    pub fn handle_peer_up(&mut self, now: SimTime, peer: PeerIdx) {
        self.advance(now);
        self.peers[peer.get()].is_up = true;
    }

    /// Splits the peers into sides (`side_of[peer]`); flows between different sides are
    /// cancelled and later sends between them are refused until [`Self::repair`].
    pub fn partition(&mut self, now: SimTime, side_of: &[u32]) {
        self.advance(now);
        for (p, &side) in self.peers.iter_mut().zip(side_of) {
            p.side = side;
        }
        let crossing: Vec<FlowSlot> = (0..self.table.flows.len())
            .filter_map(|i| u32::try_from(i).ok())
            .filter(|&slot| self.table.is_live(slot))
            .filter(|&slot| {
                let f = &self.table.flows[slot as usize];
                self.peers[f.src as usize].side != self.peers[f.dst as usize].side
            })
            .collect();
        for slot in crossing {
            self.cancel(slot);
        }
    }

    /// Heals every partition.
    pub fn repair(&mut self, now: SimTime) {
        self.advance(now);
        for p in &mut self.peers {
            p.side = 0;
        }
    }

    fn cancel(&mut self, slot: FlowSlot) {
        let f = &self.table.flows[slot as usize];
        self.dirty
            .extend_from_slice(&f.links[..usize::from(f.n_links)]);
        if self.table.remove(slot).is_some() {
            self.stats.cancelled += 1;
            self.stats.dropped += 1;
        }
    }

    /// Moves the clock; a pending recomputation belongs to the earlier instant, so it runs first.
    fn advance(&mut self, now: SimTime) {
        assert!(
            now >= self.now,
            "network time went backwards: {now} < {}",
            self.now
        );
        if now > self.now {
            self.flush();
            self.now = now;
        }
    }

    fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        self.rescheduled.clear();
        let mut dirty = core::mem::take(&mut self.dirty);
        if self.scope == RecomputeScope::Global {
            dirty.clear();
            dirty.extend(0..u32::try_from(self.table.links.len()).expect("link count fits u32"));
        }
        self.solver
            .recompute(&mut self.table, &dirty, self.now, &mut self.rescheduled);
        dirty.clear();
        self.dirty = dirty;
        for r in self.rescheduled.drain(..) {
            self.completions.push(r.finish_at, r);
        }
        if self.completions.len() > 2 * self.table.live() + 4096 {
            self.compact_completions();
        }
    }

    /// Drops superseded completion entries so the heap stays proportional to live flows.
    fn compact_completions(&mut self) {
        let table = &self.table;
        self.completions
            .retain(|r| table.is_live(r.slot) && table.flows[r.slot as usize].version == r.version);
    }
}
