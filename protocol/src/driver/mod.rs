//! A deterministic in-memory mesh: N peer machines, a toy model and a seeded network, on a
//! simulated clock. Used by the protocol's invariant tests, the in-memory demo and as the
//! reference shell for the simulator.
//!
//! Every peer runs the real [`Peer`] machine. The "model" is a vector of parameters; a peer's
//! gradient pulls the parameters toward its own target (so the mesh has something to agree on),
//! and applying a round is a plain SGD step, bit-identical on every peer. The network delivers
//! each message after a seeded latency, drops a seeded fraction, and honours kills, joins and
//! partitions from a [`Schedule`]. An [`InvariantChecker`] watches every output as it happens.
//!
//! Events are ordered by `(time, sequence number)`, and every random draw comes from one
//! ChaCha8 stream seeded by the schedule, so a seed reproduces a run exactly.

mod check;
mod shell;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::PeerConfig;
use crate::ids::{Digest, PeerId, RoundId};
use crate::keys::Seal;
use crate::peer::{Output, Peer, Profile};
use crate::reduce::RoundResult;
use crate::sync::StateSnapshot;
use crate::time::Timestamp;
use crate::wire::{self, Body, Certificate, CommitNotice, Envelope, ROSTER_MEMBERS_MAX};

pub use check::{InvariantChecker, Violation};
pub use shell::Node;

/// Faults and timing for one run. Everything random in the run derives from `seed`.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Seed of the run's random stream.
    pub seed: u64,
    /// Founding peers.
    pub peers: usize,
    /// Length of the averaged vector.
    pub vector_len: usize,
    /// One-way latency range of a message.
    pub latency: (Duration, Duration),
    /// Time to compute a gradient.
    pub compute: (Duration, Duration),
    /// Probability that a message between live peers is lost.
    pub drop_rate: f64,
    /// Kill founding or joined peer `index` at a time.
    pub kills: Vec<(Duration, usize)>,
    /// A new peer joins at each time.
    pub joins: Vec<Duration>,
    /// Peers in the mask cannot reach peers outside it between the two times.
    pub partition: Option<(Duration, Duration, u64)>,
    /// Time at which faults stop (drops and partitions end; no kill or join is later).
    pub faults_end: Duration,
    /// Total run time.
    pub run_for: Duration,
    /// Encode and decode every frame through [`wire`] (slower; proves the codec on real traffic).
    pub through_wire: bool,
    /// Peer configuration (its aggregation rule and span codec are also those the checker
    /// recomputes with).
    pub config: PeerConfig,
    /// Byzantine founders, for tests of robust aggregation; `None` for honest runs.
    pub attack: Option<Attack>,
}

/// Test-only Byzantine behaviour: the founders listed send their honest gradient multiplied by
/// `scale` (say `-10.0`: sign-flipped and scaled ×10), with their honest weight, every round. The
/// checker records what they sent, so the invariants still hold against the real inputs.
///
/// They can also lie in the protocol, to split the honest peers and commit each side on its
/// own. With `equivocates_spans`, in even rounds every reduced span they send to a *victim* (a
/// peer whose index is 1 modulo 3, a minority) has its first value raised by 1, so the victims
/// assemble another result than the rest (odd rounds are left honest, so the victims, once
/// resynced, contribute again and the checker's liveness rule still applies to them). Without
/// lossy links or partitions nobody relays the perturbed spans, so what the victims hold stays a
/// minority's; with them a relayed perturbed span could reach a majority and commit, which the
/// checker reports (a span owner is trusted with its span's values, docs/protocol.md §5.5). With
/// `forges_commits`, every vote they hear becomes a forged commit notice for that digest, sent
/// to every peer and naming every contributor as a voter; asked for seals, they send all the
/// seals for that digest they have overheard in the round. With `forges_states`, every
/// announcement they send claims a made-up state ([`FORGED_ROUND`], every parameter zero, the
/// attacker its only committee member), attested by the attacker, and they serve that state —
/// manifest, attestation and chunks — to whoever asks (issue 16, rows 1 and 2: one such peer
/// used to halt every node, then make them all load its state). Rosters then leave them out,
/// and the checker does not require their liveness.
#[derive(Debug, Clone, PartialEq)]
pub struct Attack {
    /// Indices of the attacking founders.
    pub peers: Vec<usize>,
    /// Factor applied to their gradients.
    pub scale: f32,
    /// Send the victims perturbed reduced spans.
    pub equivocates_spans: bool,
    /// Turn every vote heard into a commit notice to everyone.
    pub forges_commits: bool,
    /// Announce and serve a made-up state far ahead.
    pub forges_states: bool,
}

impl Attack {
    /// Whether node `index` is a victim of lying attackers.
    #[must_use]
    pub fn is_victim(&self, index: usize) -> bool {
        index % 3 == 1 && !self.peers.contains(&index)
    }

    /// An attacker that equivocates about the spans it owns.
    fn equivocates(attack: Option<&Self>, index: usize) -> bool {
        attack.is_some_and(|a| a.equivocates_spans && a.peers.contains(&index))
    }

    /// An attacker that announces states it does not hold.
    fn forges_states(attack: Option<&Self>, index: usize) -> bool {
        attack.is_some_and(|a| a.forges_states && a.peers.contains(&index))
    }

    /// An attacker that forges commit notices.
    fn forges(attack: Option<&Self>, index: usize) -> bool {
        attack.is_some_and(|a| a.forges_commits && a.peers.contains(&index))
    }
}

impl Schedule {
    /// A fault-free schedule of `peers` peers with short rounds.
    #[must_use]
    pub fn calm(seed: u64, peers: usize) -> Self {
        let config = test_config();
        Self {
            seed,
            peers,
            vector_len: 64,
            latency: (Duration::from_millis(1), Duration::from_millis(10)),
            compute: (Duration::from_millis(5), Duration::from_millis(30)),
            drop_rate: 0.0,
            kills: Vec::new(),
            joins: Vec::new(),
            partition: None,
            faults_end: Duration::ZERO,
            run_for: Duration::from_secs(5),
            through_wire: true,
            config,
            attack: None,
        }
    }
}

/// The configuration the driver's tests use: 1 s rounds.
#[must_use]
pub fn test_config() -> PeerConfig {
    test_config_builder().build().unwrap_or_default()
}

/// The builder behind [`test_config`], for tests that change one more setting.
#[must_use]
pub fn test_config_builder() -> crate::config::PeerConfigBuilder {
    PeerConfig::builder()
        .scaled_to(Duration::from_secs(1))
        .announce_interval(Duration::from_millis(250))
        .peer_ttl(Duration::from_millis(1000))
        .collect_window(Duration::from_millis(150))
        .state_chunk_bytes(64)
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: PeerId,
        envelope: Box<Envelope>,
    },
    Frame {
        to: usize,
        from: PeerId,
        frame: Vec<u8>,
    },
    Timer {
        node: usize,
        epoch: u64,
    },
    Gradient {
        node: usize,
        epoch: u64,
    },
    Kill(usize),
    Join,
}

/// Counts of what happened in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered.
    pub messages: u64,
    /// Bytes delivered (as encoded on the wire).
    pub bytes: u64,
    /// Messages lost to drops, partitions and dead receivers.
    pub lost: u64,
    /// Peers killed.
    pub kills: u64,
    /// Peers that joined.
    pub joins: u64,
    /// Reduced spans lying attackers perturbed (see [`Attack`]).
    pub perturbed_spans: u64,
    /// Commit notices lying attackers forged.
    pub forged_commits: u64,
    /// Announcements of made-up states that lying attackers sent.
    pub forged_announcements: u64,
}

/// The in-memory mesh.
#[derive(Debug)]
pub struct Driver {
    schedule: Schedule,
    now: Timestamp,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<(Timestamp, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    nodes: Vec<Node>,
    checker: InvariantChecker,
    stats: Stats,
    log: Vec<String>,
    history: Vec<(Timestamp, PeerId, crate::peer::Event)>,
    /// The first committed result of each round, kept only with [`Driver::with_log`].
    committed: BTreeMap<RoundId, RoundResult>,
    /// Seals of the votes lying attackers heard, by round and digest (forged notices carry them).
    overheard: BTreeMap<(RoundId, Digest), Vec<Seal>>,
    /// The made-up state state-forging attackers announce and serve.
    forged: Option<StateSnapshot>,
    keep_log: bool,
}

/// The round of the state a state-forging attacker announces ([`Attack::forges_states`]).
pub const FORGED_ROUND: RoundId = RoundId(1_000_000);

/// Bound on events in one run: a protocol that keeps waking itself up without progress is a bug.
const EVENTS_MAX: u64 = 5_000_000;

fn at(d: Duration) -> Timestamp {
    Timestamp::ZERO + d
}

impl Driver {
    /// Builds the mesh of `schedule.peers` founders, all holding the same initial parameters.
    #[must_use]
    pub fn new(schedule: Schedule) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(schedule.seed);
        let mut schedule = schedule;
        schedule.config = schedule.config.with_genesis_quorum(schedule.peers / 2 + 1);
        let mut driver = Self {
            checker: InvariantChecker::new(schedule.config.round_timeout())
                .with_aggregation(schedule.config.aggregation())
                .with_codec(schedule.config.codec()),
            schedule,
            now: Timestamp::ZERO,
            rng,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            nodes: Vec::new(),
            stats: Stats::default(),
            log: Vec::new(),
            history: Vec::new(),
            committed: BTreeMap::new(),
            overheard: BTreeMap::new(),
            forged: None,
            keep_log: false,
        };
        let initial = shell::initial_params(driver.schedule.vector_len);
        for _ in 0..driver.schedule.peers {
            driver.spawn(Some(initial.clone()));
        }
        for (t, i) in driver.schedule.kills.clone() {
            driver.push(at(t), Event::Kill(i));
        }
        for t in driver.schedule.joins.clone() {
            driver.push(at(t), Event::Join);
        }
        driver
    }

    /// Keeps a human-readable log of protocol events (see [`Driver::log`]).
    #[must_use]
    pub fn with_log(mut self) -> Self {
        self.keep_log = true;
        self
    }

    fn push(&mut self, time: Timestamp, event: Event) {
        self.seq += 1;
        self.events.insert(self.seq, event);
        self.queue.push(Reverse((time, self.seq)));
    }

    fn spawn(&mut self, initial: Option<Vec<f32>>) {
        let index = self.nodes.len();
        let key = crate::keys::PeerKey::from_index(index as u64);
        let profile = Profile {
            bandwidth_bytes_per_s: 1_000_000 * (1 + (index as u64 % 4)),
            samples_per_s: 1000,
            samples_per_step: 16 + (index as u32 % 5) * 8,
        };
        let bytes = initial.as_deref().map(shell::params_bytes);
        let peer = Peer::new(self.schedule.config.clone(), key, profile, bytes, self.now);
        let Ok(peer) = peer else { return };
        let params = initial.unwrap_or_default();
        self.checker.record_birth(index, self.now);
        if Attack::forges_states(self.schedule.attack.as_ref(), index) {
            self.checker.exempt_from_liveness(index);
        }
        let mut node = Node::new(index, peer, params, self.schedule.vector_len);
        if let Some(attack) = &self.schedule.attack
            && attack.peers.contains(&index)
        {
            node.scale = attack.scale;
        }
        self.nodes.push(node);
        self.drain(index);
    }

    /// Runs until the schedule's end; returns the checker's verdict.
    ///
    /// # Errors
    /// The first invariant [`Violation`].
    pub fn run(&mut self) -> Result<(), Violation> {
        let end = at(self.schedule.run_for);
        self.step_until(end, |_| false)?;
        self.now = end;
        let settle = self
            .schedule
            .run_for
            .saturating_sub(self.schedule.faults_end)
            / 2;
        self.checker.finish(&self.nodes, self.now, settle)
    }

    /// Processes events up to `end`, stopping early once `done` holds after an event.
    /// Returns whether `done` held.
    ///
    /// # Errors
    /// The first invariant [`Violation`], or [`Violation::Runaway`] past the event budget.
    pub fn step_until(
        &mut self,
        end: Timestamp,
        done: impl Fn(&Self) -> bool,
    ) -> Result<bool, Violation> {
        let mut budget = EVENTS_MAX;
        while let Some(&Reverse((time, seq))) = self.queue.peek() {
            if time > end {
                break;
            }
            budget -= 1;
            if budget == 0 {
                return Err(Violation::Runaway { at: self.now });
            }
            self.queue.pop();
            self.now = time;
            if let Some(event) = self.events.remove(&seq) {
                self.apply(event);
            }
            if let Some(v) = self.checker.violation() {
                return Err(v.clone());
            }
            if done(self) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Kills node `index` now, mid-whatever it is doing.
    pub fn kill_now(&mut self, index: usize) {
        self.kill(index);
    }

    /// A new peer (no state) joins now; returns its index.
    pub fn join_now(&mut self) -> usize {
        self.stats.joins += 1;
        self.spawn(None);
        self.nodes.len() - 1
    }

    /// Whether every live peer holds the same committed state (and none is joining).
    #[must_use]
    pub fn survivors_agree(&self) -> bool {
        let mut states = self
            .nodes
            .iter()
            .filter(|n| n.is_alive())
            .map(|n| (n.state(), n.is_joining()));
        let Some((first, false)) = states.next() else {
            return false;
        };
        first.is_some() && states.all(|(s, joining)| s == first && !joining)
    }

    /// The first committed result of each round, if enabled with [`Driver::with_log`].
    #[must_use]
    pub const fn committed(&self) -> &BTreeMap<RoundId, RoundResult> {
        &self.committed
    }

    /// Protocol events in order, if enabled with [`Driver::with_log`].
    #[must_use]
    pub fn history(&self) -> &[(Timestamp, PeerId, crate::peer::Event)] {
        &self.history
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, envelope } => self.deliver(to, from, *envelope),
            Event::Frame { to, from, frame } => {
                // Frames were produced by our own encoder: a decode failure is a bug, so it is
                // recorded as a violation rather than dropped.
                match wire::decode(&frame, usize::MAX) {
                    Ok(envelope) => self.deliver(to, from, envelope),
                    Err(e) => self.checker.record_decode_failure(e),
                }
            }
            Event::Timer { node, epoch } => {
                if self.nodes[node].timer_epoch == epoch
                    && let Some(peer) = self.nodes[node].peer.as_mut()
                {
                    peer.handle_timeout(self.now);
                    self.drain(node);
                }
            }
            Event::Gradient { node, epoch } => self.gradient_ready(node, epoch),
            Event::Kill(i) => self.kill(i),
            Event::Join => {
                self.stats.joins += 1;
                self.note(format!(
                    "join  peer {}",
                    PeerId::from_index(self.nodes.len() as u64)
                ));
                self.spawn(None);
            }
        }
    }

    fn deliver(&mut self, to: usize, from: PeerId, envelope: Envelope) {
        if Attack::forges_states(self.schedule.attack.as_ref(), to)
            && envelope.round == FORGED_ROUND
            && let Body::StateRequest(request) = &envelope.body
            && let Some(forged) = self.forged_state(to)
        {
            let body = match forged.serve(*request) {
                Body::StateManifest(mut manifest) => {
                    let state = forged.summary();
                    let seal = Self::forger_key(to).seal_state(state.round, state.digest);
                    manifest.attestations = vec![seal];
                    Body::StateManifest(manifest)
                }
                body => body,
            };
            let sender = self.nodes[to].id;
            self.transmit(to, from, Envelope::new(sender, FORGED_ROUND, body));
            return;
        }
        if Attack::forges(self.schedule.attack.as_ref(), to) {
            match &envelope.body {
                Body::Vote(vote) => self.forge_commits(to, envelope.round, vote.result, vote.seal),
                Body::SealRequest(request) => {
                    self.serve_overheard(to, from, envelope.round, request.result);
                }
                _ => {}
            }
        }
        let now = self.now;
        match self.nodes[to].peer.as_mut() {
            Some(peer) => peer.handle_message(now, from, envelope),
            None => {
                self.stats.lost += 1;
                return;
            }
        }
        self.stats.messages += 1;
        self.drain(to);
    }

    /// A lying attacker `i` heard a vote: it tells everyone the digest committed, claiming that
    /// every contributor voted for it.
    fn forge_commits(&mut self, i: usize, round: RoundId, result: Digest, seal: Seal) {
        let seals = self.overheard.entry((round, result)).or_default();
        if !seals.contains(&seal) {
            seals.push(seal);
        }
        let notice = CommitNotice {
            result,
            voters: vec![0xff; ROSTER_MEMBERS_MAX / 8],
        };
        let sender = self.nodes[i].id;
        let targets: Vec<PeerId> = self
            .nodes
            .iter()
            .filter(|n| n.index != i && n.peer.is_some())
            .map(|n| n.id)
            .collect();
        for to in targets {
            self.stats.forged_commits += 1;
            let body = Body::Commit(notice.clone());
            self.transmit(i, to, Envelope::new(sender, round, body));
        }
    }

    /// A lying attacker `i` asked for seals by `to` answers with every seal for that digest it has
    /// overheard in that round (its own machine answers honestly as well).
    fn serve_overheard(&mut self, i: usize, to: PeerId, round: RoundId, result: Digest) {
        let Some(seals) = self.overheard.get(&(round, result)).cloned() else {
            return;
        };
        let sender = self.nodes[i].id;
        let body = Body::Seals(Certificate { result, seals });
        self.transmit(i, to, Envelope::new(sender, round, body));
    }

    fn forger_key(i: usize) -> crate::keys::PeerKey {
        crate::keys::PeerKey::from_index(i as u64)
    }

    /// The made-up state attacker `i` announces and serves: every parameter zero, the attacker
    /// its only committee member. (Attackers share it: the first one makes it.)
    fn forged_state(&mut self, i: usize) -> Option<StateSnapshot> {
        if self.forged.is_none() {
            let zeros = vec![0.0f32; self.schedule.vector_len];
            let chunk = self.schedule.config.state_chunk_bytes;
            self.forged = StateSnapshot::new(
                FORGED_ROUND,
                vec![self.nodes.get(i)?.id],
                shell::params_bytes(&zeros),
                chunk,
            )
            .ok();
        }
        self.forged.clone()
    }

    fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i)
            && node.peer.take().is_some()
        {
            self.stats.kills += 1;
            self.checker.record_kill(i);
            let id = PeerId::from_index(i as u64);
            self.note(format!("kill  peer {id}"));
        }
    }

    fn gradient_ready(&mut self, node: usize, epoch: u64) {
        let now = self.now;
        let n = &mut self.nodes[node];
        if n.gradient_epoch != epoch {
            return;
        }
        let Some(base) = n.state() else { return };
        let (weight, grad) = n.gradient();
        self.checker
            .record_gradient(n.id, base, weight, grad.clone());
        if let Some(peer) = n.peer.as_mut() {
            peer.handle_gradient(now, weight, grad);
        }
        self.drain(node);
    }

    /// Drains node `i`'s outputs into the network and its shell, then rearms its timer.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(out) = self.nodes[i].peer.as_mut().and_then(Peer::poll_output) {
            match out {
                Output::Send { to, envelope } => self.transmit(i, to, envelope),
                Output::Broadcast { envelope } => {
                    for to in 0..self.nodes.len() {
                        if to != i && self.nodes[to].peer.is_some() {
                            let dest = self.nodes[to].id;
                            self.transmit(i, dest, envelope.clone());
                        }
                    }
                }
                Output::ComputeGradient { .. } => {
                    let (lo, hi) = self.schedule.compute;
                    let delay = self.draw(lo, hi);
                    let epoch = self.nodes[i].next_gradient_epoch();
                    self.push(now + delay, Event::Gradient { node: i, epoch });
                }
                Output::LoadState(snapshot) => {
                    self.checker.record_load(i, &snapshot, now);
                    self.nodes[i].load(snapshot.bytes());
                }
                Output::ApplyRound(result) => {
                    self.checker.record_commit(i, &result);
                    if self.keep_log {
                        self.committed
                            .entry(result.round)
                            .or_insert_with(|| result.clone());
                    }
                    let bytes = self.nodes[i].apply(&result);
                    let round = result.round;
                    if let Some(peer) = self.nodes[i].peer.as_mut()
                        && peer.handle_state(now, round, bytes).is_ok()
                    {
                        let state = peer.state();
                        self.checker.record_state(i, state, now);
                    }
                }
                // The driver never restarts a peer from a checkpoint: nothing to keep.
                Output::Persist(_) => {}
                Output::Event(e) => {
                    self.checker.record_event(i, &e, now);
                    if self.keep_log {
                        let id = self.nodes[i].id;
                        self.log.push(format!("{now} {id} {e:?}"));
                        self.history.push((now, id, e));
                    }
                }
            }
        }
        let next = self.nodes[i].peer.as_ref().and_then(Peer::poll_timeout);
        if let Some(t) = next {
            let epoch = self.nodes[i].next_timer_epoch();
            self.push(t.max(now), Event::Timer { node: i, epoch });
        }
    }

    fn draw(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let micros = self.rng.random_range(lo.as_micros()..=hi.as_micros());
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn transmit(&mut self, from: usize, to: PeerId, mut envelope: Envelope) {
        let Some(dest) = self.nodes.iter().position(|n| n.id == to) else {
            return;
        };
        if Attack::forges_states(self.schedule.attack.as_ref(), from)
            && let Body::Announce(announce) = &mut envelope.body
            && let Some(forged) = self.forged_state(from)
        {
            let state = forged.summary();
            announce.state = Some(state);
            announce.attestation =
                Some(Self::forger_key(from).seal_state(state.round, state.digest));
            announce.lock = None;
            self.stats.forged_announcements += 1;
        }
        if let Some(attack) = &self.schedule.attack
            && Attack::equivocates(Some(attack), from)
            && attack.is_victim(dest)
            && envelope.round.0.is_multiple_of(2)
            && let Body::Reduced(reduced) = &mut envelope.body
            && let Some(first) = reduced.data.first()
        {
            let mut values = reduced.data.to_vec();
            values[0] = first + 1.0;
            reduced.data = values.into();
            self.stats.perturbed_spans += 1;
        }
        let (lo, hi) = self.schedule.latency;
        let delay = self.draw(lo, hi);
        let in_fault_window = self.now < at(self.schedule.faults_end);
        let dropped = in_fault_window
            && self
                .rng
                .random_bool(self.schedule.drop_rate.clamp(0.0, 1.0));
        if dropped || self.partitioned(from, dest) {
            self.stats.lost += 1;
            return;
        }
        let sender = self.nodes[from].id;
        self.stats.bytes += wire::encoded_len(&envelope) as u64;
        let time = self.now + delay;
        if self.schedule.through_wire {
            match wire::encode(&envelope) {
                Ok(frame) => self.push(
                    time,
                    Event::Frame {
                        to: dest,
                        from: sender,
                        frame,
                    },
                ),
                Err(e) => self.checker.record_decode_failure(e),
            }
        } else {
            self.push(
                time,
                Event::Deliver {
                    to: dest,
                    from: sender,
                    envelope: Box::new(envelope),
                },
            );
        }
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        let Some((start, len, mask)) = self.schedule.partition else {
            return false;
        };
        let inside = |i: usize| i < 64 && mask & (1 << i) != 0;
        let active = self.now >= at(start) && self.now < at(start + len);
        active && inside(a) != inside(b)
    }

    fn note(&mut self, line: String) {
        if self.keep_log {
            self.log.push(format!("{} {line}", self.now));
        }
    }

    /// The nodes (alive and dead).
    #[must_use]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// What the checker saw.
    #[must_use]
    pub const fn checker(&self) -> &InvariantChecker {
        &self.checker
    }

    /// Network counts.
    #[must_use]
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The event log, if enabled with [`Driver::with_log`].
    #[must_use]
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// Current simulated time.
    #[must_use]
    pub const fn now(&self) -> Timestamp {
        self.now
    }
}

#[cfg(test)]
mod tests;
