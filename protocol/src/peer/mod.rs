//! The peer machine: one gradmesh peer's whole protocol — membership, roster agreement, the
//! round lifecycle, state sync and serving donors — composed from the round and sync machines.
//!
//! Lifecycle of a contributing peer, one round at a time:
//!
//! | stage       | waits for                                 | then                                   |
//! |-------------|-------------------------------------------|----------------------------------------|
//! | `Computing` | the shell's gradient (`handle_gradient`)  | announce *ready*, go to `Ready`        |
//! | `Ready`     | a roster naming it (or it proposes one)   | start the round, go to `InRound`       |
//! | `InRound`   | the round to finish                       | commit → `Applying`; abort → `Ready`   |
//! | `Applying`  | the shell's new state (`handle_state`)    | ask for a gradient, go to `Computing`  |
//! | `Joining`   | a roster naming it observer, then its sync| load state, apply buffered commits     |
//!
//! Round ids count attempts: a round that aborts is retried under the next id with the same
//! gradient (it was computed on the unchanged state). A peer that learns the mesh committed a
//! state it does not hold (`Diverged`, or an announcement of a newer state) becomes a joiner: the
//! next roster names it *observer*, it fetches the roster's base state from the contributors and
//! receives that round's all-gather, so it holds the committed state one round later and
//! contributes in the round after — a join takes at most two rounds.

mod leader;
mod lineage;
mod lock;
mod output;
mod refound;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::config::{PeerConfig, ServeState};
use crate::ids::{Digest, PeerId, RoundId};
use crate::keys::{PeerKey, Seal};
use crate::reduce::{ReduceRound, RoundOutcome, RoundOutput, RoundResult, SealBook};
use crate::roster::{Roster, leader_key};
use crate::sync::{DonorFault, SnapshotError, StateSnapshot, StateSync, SyncOutput, Vouchers};
use crate::time::Timestamp;
use crate::wire::{
    ATTESTATIONS_MAX, Announce, Body, Envelope, LineageLink, Proposal, Role, StateSummary,
};

pub use output::{Event, Output, Promise};

/// Most messages buffered for rounds this peer has not started yet (they arrive before the
/// roster when the leader is slow to reach us). Bounded so a peer cannot be flooded.
const EARLY_MESSAGES_MAX: usize = 4 * crate::wire::ROSTER_MEMBERS_MAX;

/// Messages are buffered for the next round and at most this many rounds past it: later ones
/// are for rounds that may never come (a far-future round id costs a sender nothing).
const EARLY_ROUNDS_AHEAD: u64 = 2;

/// Bytes of early messages one sender may have buffered, beyond the size of our state: a
/// contributor sends us at most its part of our spans and its reduced spans, less than the state.
const EARLY_BYTES_PER_SENDER_SLACK: usize = 64 << 10;

/// Bytes of early messages buffered in all, beyond twice the size of our state (a round's worth
/// of contributions and reduced spans, for the next rounds).
const EARLY_BYTES_SLACK: usize = 1 << 20;

/// Most peers remembered as members (seen contributing) for [`ServeState::Members`]; the ones
/// seen longest ago are forgotten first.
const MEMBERS_SEEN_MAX: usize = 4 * crate::wire::ROSTER_MEMBERS_MAX;

/// Most states remembered as refused (the oldest refusal is forgotten first). Bounded so that a
/// peer announcing fresh fake states cannot grow it.
const REFUSED_MAX: usize = 64;

/// How long a state whose sync failed (every donor dropped) is not fetched again, in round
/// timeouts: long enough to go back to training on our own state, short enough that a real state
/// whose donors were only slow is fetched again.
const SYNC_FAILED_REFUSAL_ROUNDS: u32 = 1;

/// How long a state the shell could not load is refused, in round timeouts.
const LOAD_REFUSAL_ROUNDS: u32 = 30;

/// State attestations kept per announcing peer (its latest ones), for donors to forward: enough
/// to cover the states a peer still serves ([`PeerConfig::snapshots_retained`]) while rounds
/// commit faster than announcements arrive.
const ATTESTED_PER_PEER: usize = 8;

/// Peers whose attestations are kept at most; past it, those of silent peers are dropped.
const ATTESTERS_MAX: usize = crate::wire::ROSTER_MEMBERS_MAX;

/// Round timeouts without a state change after which a peer takes two live attesters of a
/// state as enough ([`Vouchers::backstop`]).
const STUCK_ROUND_TIMEOUTS: u32 = 3;

/// What a peer says about itself in announcements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Usable bandwidth in bytes per second (sizes the span this peer owns).
    pub bandwidth_bytes_per_s: u64,
    /// Compute speed, samples per second.
    pub samples_per_s: u32,
    /// Samples behind each gradient (the gradient's weight).
    pub samples_per_step: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Joining,
    Computing,
    Ready { since: Timestamp },
    InRound,
    Applying { round: RoundId },
}

#[derive(Debug, Clone)]
struct Known {
    announce: Announce,
    /// The envelope's round: the sender's next round. It never starts a round below it.
    round: RoundId,
    seen: Timestamp,
}

#[derive(Debug, Clone)]
struct Gradient {
    base: StateSummary,
    weight: u32,
    data: Arc<[f32]>,
}

/// One peer's protocol state machine. Inputs are `handle_*`, outputs are drained with
/// [`Peer::poll_output`], and [`Peer::poll_timeout`] says when to call [`Peer::handle_timeout`].
#[derive(Debug)]
pub struct Peer {
    config: PeerConfig,
    /// Signs this peer's votes; `me` is its id.
    key: Arc<PeerKey>,
    me: PeerId,
    profile: Profile,
    stage: Stage,
    state: Option<StateSummary>,
    snapshots: BTreeMap<RoundId, StateSnapshot>,
    next_round: RoundId,
    gradient: Option<Gradient>,
    round: Option<ReduceRound>,
    /// This peer's last vote on its current state, with the voted result if it holds it
    /// (`lock.rs`); it bounds what the peer may vote for in later rounds on the same state.
    lock: Option<lock::Lock>,
    /// A lock from before a restart ([`Peer::resume_with_promise`]) on a state this peer does
    /// not hold (yet): it becomes `lock` if the peer comes to hold that state again.
    dormant_lock: Option<lock::Lock>,
    /// The last [`Promise`] handed to the shell to persist.
    persisted: Option<Promise>,
    /// [`Peer::leave`] was called: the peer finishes the round it runs and takes no other.
    leaving: bool,
    sync: Option<StateSync>,
    /// The state this peer held when a sync finished, until the shell is known to have loaded
    /// the synced one: a state the shell refuses ([`Peer::handle_state_refused`]) falls back to it.
    before_sync: Option<(Option<StateSnapshot>, RoundId)>,
    /// States not to fetch (again) before the given time: their sync failed or the shell could
    /// not load them. At most [`REFUSED_MAX`].
    refused: BTreeMap<StateSummary, Timestamp>,
    /// Peers seen contributing (in rosters and committees) or founding (announcing our initial
    /// state before the first commit), oldest first: who may fetch our states under
    /// [`ServeState::Members`]. At most [`MEMBERS_SEEN_MAX`].
    members_seen: BTreeMap<PeerId, u64>,
    /// `members_seen` by when each was last seen (a counter), to forget the oldest first.
    members_by_age: BTreeMap<u64, PeerId>,
    members_clock: u64,
    /// Committed results waiting for the state they apply to (observers syncing, or results
    /// that arrive while the shell is still applying the previous one), by round.
    pending: BTreeMap<RoundId, RoundResult>,
    /// The donors of the last completed sync, named if its state does not load.
    synced_from: Vec<PeerId>,
    /// The sealed votes of the last finished round, answered to members that missed some.
    last_seals: Option<(RoundId, SealBook)>,
    /// The last result this peer saw decided on a state it holds without holding the result
    /// (it diverged): that state, the result's digest and everyone seen voting for it there
    /// (over every round that decided it again). Each of them voted that the mesh's next
    /// state is built on this result, so one of them vouches for it ([`Vouchers::witnesses`]),
    /// for a state no later than the round that first decided it (the result's round).
    witnessed: Option<(StateSummary, Digest, RoundId, BTreeSet<PeerId>)>,
    /// When this peer's state last changed (or it started).
    progress_at: Timestamp,
    /// Since when this peer has heard from no strict majority of its state's committee
    /// (`refound.rs`), whether it reported it, and when it last looked.
    lost_since: Option<Timestamp>,
    lost_reported: bool,
    lost_checked: Timestamp,
    /// The round being applied by the shell and its contributors (the next state's committee).
    applying: Option<(RoundId, Vec<PeerId>)>,
    /// No roster is proposed before this: founders first hear each other's announcements.
    discovery_until: Timestamp,
    known: BTreeMap<PeerId, Known>,
    /// The state attestations each known peer announced, latest last (at most
    /// [`ATTESTED_PER_PEER`] each), with whether the seal was verified yet: a donor forwards
    /// them with a manifest, verifying each once before it does.
    attested: BTreeMap<PeerId, VecDeque<(StateSummary, Seal, bool)>>,
    /// Our own attestation of the state we hold (signed once per state).
    own_attestation: Option<(StateSummary, Seal)>,
    /// The states we held at which our committee had turned over, with their attestations,
    /// for manifests we serve (`lineage.rs`).
    lineage: lineage::Lineage,
    /// Messages for rounds not started yet, each with its encoded size (`buffer_early`).
    early: BTreeMap<RoundId, Vec<(Envelope, usize)>>,
    early_count: usize,
    /// Encoded bytes of the messages in `early`, in all and by sender.
    early_bytes: usize,
    early_bytes_by_sender: BTreeMap<PeerId, usize>,
    /// The last proposal attempt lacked a committee majority; retry on the next announcement.
    propose_blocked: bool,
    /// Who proposed the roster of the running round.
    round_leader: Option<PeerId>,
    /// The last round this peer proposed a roster for; it proposes once per round.
    proposed: Option<RoundId>,
    next_announce: Timestamp,
    /// Sequence number of our last announcement.
    announce_seq: u64,
    /// Cached leader order (`leader.rs`).
    leader_order: leader::LeaderOrder,
    outputs: VecDeque<Output>,
}

impl Peer {
    /// A founding peer holding `initial` (the serialized initial state, identical on every
    /// founder), or a joiner when `initial` is `None`. `key` signs its votes; its id is the
    /// key's ([`PeerKey::id`]).
    ///
    /// # Errors
    /// [`SnapshotError`] if the initial state is too large to snapshot.
    pub fn new(
        config: PeerConfig,
        key: PeerKey,
        profile: Profile,
        initial: Option<Arc<[u8]>>,
        now: Timestamp,
    ) -> Result<Self, SnapshotError> {
        let announce_interval = config.announce_interval;
        let announce_seq = config.announce_seq_base;
        let mut peer = Self {
            config,
            me: key.id(),
            key: Arc::new(key),
            profile,
            stage: Stage::Joining,
            state: None,
            snapshots: BTreeMap::new(),
            next_round: RoundId(1),
            gradient: None,
            round: None,
            lock: None,
            dormant_lock: None,
            persisted: None,
            leaving: false,
            sync: None,
            before_sync: None,
            refused: BTreeMap::new(),
            members_seen: BTreeMap::new(),
            members_by_age: BTreeMap::new(),
            members_clock: 0,
            pending: BTreeMap::new(),
            synced_from: Vec::new(),
            last_seals: None,
            witnessed: None,
            progress_at: now,
            lost_since: None,
            lost_reported: false,
            lost_checked: now,
            applying: None,
            discovery_until: now + announce_interval,
            known: BTreeMap::new(),
            attested: BTreeMap::new(),
            own_attestation: None,
            lineage: lineage::Lineage::default(),
            early: BTreeMap::new(),
            early_count: 0,
            early_bytes: 0,
            early_bytes_by_sender: BTreeMap::new(),
            propose_blocked: false,
            round_leader: None,
            proposed: None,
            next_announce: now,
            announce_seq,
            leader_order: leader::LeaderOrder::default(),
            outputs: VecDeque::new(),
        };
        match initial {
            Some(bytes) => peer.handle_state(now, RoundId(0), bytes)?,
            None => peer.announce(now),
        }
        Ok(peer)
    }

    /// A peer restarting from a saved state (a checkpoint): it holds `snapshot` — the state after
    /// round `snapshot.summary().round`, with that round's committee — and continues from there.
    /// If the mesh has moved on meanwhile, the next announcement it hears makes it resync.
    ///
    /// # Errors
    /// [`SnapshotError`] never in practice (the snapshot is built already); kept for symmetry
    /// with [`Peer::new`].
    pub fn resume(
        config: PeerConfig,
        key: PeerKey,
        profile: Profile,
        snapshot: StateSnapshot,
        now: Timestamp,
    ) -> Result<Self, SnapshotError> {
        Self::resume_with_promise(config, key, profile, snapshot, None, now)
    }

    /// [`Peer::resume`] keeping the promises of the peer's previous run (the last
    /// [`Output::Persist`] it handed out): it starts no round below the one it had reached,
    /// and its last vote binds it again on the state it was cast on, now or once it holds that
    /// state again (a checkpoint can be older than the vote).
    ///
    /// # Errors
    /// As [`Peer::resume`].
    pub fn resume_with_promise(
        config: PeerConfig,
        key: PeerKey,
        profile: Profile,
        snapshot: StateSnapshot,
        promise: Option<Promise>,
        now: Timestamp,
    ) -> Result<Self, SnapshotError> {
        let mut peer = Self::new(config, key, profile, None, now)?;
        peer.outputs.clear();
        if let Some(promise) = promise {
            peer.dormant_lock = promise
                .lock
                .clone()
                .map(|(base, vote)| lock::Lock::new(base, vote, None));
            peer.persisted = Some(promise);
        }
        peer.install(now, snapshot);
        if let Some(promised) = peer.persisted.as_ref().map(|p| p.next_round) {
            peer.next_round = peer.next_round.max(promised);
        }
        peer.apply_next_pending();
        peer.announce(now);
        Ok(peer)
    }

    /// The lineage this peer serves with its manifests (`lineage.rs`), for the shell to keep
    /// with its checkpoint: a restarted peer then proves, committee by committee, what it
    /// holds.
    #[must_use]
    pub fn lineage(&self) -> Vec<LineageLink> {
        self.lineage.export()
    }

    /// Restores the lineage a checkpoint kept ([`Peer::lineage`]); the state held stays its
    /// newest entry. Its attestations are verified before they are forwarded, as heard ones are.
    pub fn restore_lineage(&mut self, links: &[LineageLink]) {
        self.lineage = lineage::Lineage::import(links);
        if let Some(snapshot) = self.state.and_then(|s| self.snapshots.get(&s.round)) {
            let heard = self
                .own_attestation
                .filter(|(state, _)| *state == snapshot.summary())
                .map(|(_, seal)| seal);
            self.lineage.advance(
                snapshot.summary(),
                snapshot.content(),
                snapshot.committee(),
                heard,
            );
        }
    }

    /// This peer's id.
    #[must_use]
    pub const fn id(&self) -> PeerId {
        self.me
    }

    /// The key this peer signs with (the shell's own, handed to [`Peer::new`]).
    #[must_use]
    pub fn key(&self) -> &PeerKey {
        &self.key
    }

    /// The committed state this peer holds, if any.
    #[must_use]
    pub const fn state(&self) -> Option<StateSummary> {
        self.state
    }

    /// The committee of the state this peer holds: the contributors of the round that produced
    /// it (empty for the initial state, or before a state is held).
    #[must_use]
    pub fn state_committee(&self) -> &[PeerId] {
        self.state
            .and_then(|s| self.snapshots.get(&s.round))
            .map_or(&[], StateSnapshot::committee)
    }

    /// The round this peer will join next (or is running).
    #[must_use]
    pub const fn next_round(&self) -> RoundId {
        self.next_round
    }

    /// The peer is leaving the mesh (its node is stopping): it finishes the round it runs, so
    /// the others need not fail over its spans, but computes nothing more, announces itself
    /// not ready, takes no other roster, proposes none and starts no sync. The shell waits for
    /// [`Peer::is_settled`] (bounded by the round timeout), then goes.
    pub fn leave(&mut self, now: Timestamp) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.sync = None;
        self.announce(now);
    }

    /// Whether nothing is under way that the peer's shell must see through: no round runs and
    /// no committed result waits to be applied.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.round.is_none()
            && self.applying.is_none()
            && !matches!(self.stage, Stage::Applying { .. })
    }

    /// Whether this peer is waiting to obtain the mesh's state.
    #[must_use]
    pub const fn is_joining(&self) -> bool {
        matches!(self.stage, Stage::Joining)
    }

    /// The shell applied a round (or loaded the initial state, `round` 0) and now holds `bytes`.
    ///
    /// # Errors
    /// [`SnapshotError`] if the state is too large to snapshot.
    pub fn handle_state(
        &mut self,
        now: Timestamp,
        round: RoundId,
        bytes: Arc<[u8]>,
    ) -> Result<(), SnapshotError> {
        let committee = match self.applying.take() {
            Some((r, committee)) if r == round => committee,
            // The initial state (from `Peer::new`) has no committee.
            None if round == RoundId(0) && self.state.is_none() => Vec::new(),
            // Not the apply we asked for (it was on a state the shell refused since): the shell's
            // bytes are not a state of ours.
            other => {
                self.applying = other;
                return Ok(());
            }
        };
        self.before_sync = None;
        let snapshot = StateSnapshot::new(round, committee, bytes, self.config.state_chunk_bytes)?;
        self.install(now, snapshot);
        if self.stage == (Stage::Applying { round }) || round == RoundId(0) {
            self.apply_next_pending();
        }
        self.announce(now);
        Ok(())
    }

    /// The shell could not load the state of an [`Output::LoadState`] (it did not parse, or its
    /// values are not finite): a donor served bytes that match a digest some peer announced but
    /// that are no usable state. The peer drops that state, goes back to the one it held before
    /// the sync (if any), and does not fetch that state again for a while; it then fetches
    /// another state or trains on its own. A bad state never stops a peer.
    pub fn handle_state_refused(&mut self, now: Timestamp, refused: StateSummary) {
        if self.state != Some(refused) {
            return;
        }
        self.event(Event::StateRefused { state: refused });
        // Every donor that served part of it vouched for bytes that match the digest it
        // announced and are no state: name each.
        for peer in std::mem::take(&mut self.synced_from) {
            self.event(Event::DonorDropped {
                peer,
                fault: DonorFault::Unloadable,
            });
        }
        self.refuse(now, refused, LOAD_REFUSAL_ROUNDS);
        self.lineage.forget(refused);
        self.snapshots.remove(&refused.round);
        self.lock = None;
        self.pending.clear();
        self.applying = None;
        self.gradient = None;
        self.state = None;
        if let Some((held, next_round)) = self.before_sync.take() {
            // The refused state's round ids are a claim too: go back to ours.
            self.next_round = next_round;
            if let Some(previous) = held {
                self.install(now, previous);
            }
        }
        self.stage = Stage::Joining;
        self.maybe_start_sync(now);
        self.announce(now);
    }

    /// Whether `peer` may fetch our states under [`ServeState`]: anyone, or only members (peers
    /// seen contributing, or founding: see `members_seen`).
    fn may_fetch_state(&self, peer: PeerId) -> bool {
        match self.config.serve_state {
            ServeState::Anyone => true,
            ServeState::Members => self.members_seen.contains_key(&peer),
        }
    }

    /// Remembers `peers` as members (see `members_seen`); only kept under
    /// [`ServeState::Members`].
    fn note_members(&mut self, peers: &[PeerId]) {
        if self.config.serve_state != ServeState::Members {
            return;
        }
        for &peer in peers {
            if peer == self.me {
                continue;
            }
            if let Some(age) = self.members_seen.remove(&peer) {
                self.members_by_age.remove(&age);
            } else if self.members_seen.len() >= MEMBERS_SEEN_MAX
                && let Some((_, oldest)) = self.members_by_age.pop_first()
            {
                self.members_seen.remove(&oldest);
            }
            self.members_clock += 1;
            self.members_seen.insert(peer, self.members_clock);
            self.members_by_age.insert(self.members_clock, peer);
        }
    }

    /// Remembers `state` as not to be fetched for `rounds` round timeouts.
    fn refuse(&mut self, now: Timestamp, state: StateSummary, rounds: u32) {
        if self.refused.len() >= REFUSED_MAX && !self.refused.contains_key(&state) {
            let oldest = self.refused.iter().min_by_key(|(_, until)| **until);
            if let Some(oldest) = oldest.map(|(s, _)| *s) {
                self.refused.remove(&oldest);
            }
        }
        self.refused
            .insert(state, now + self.config.round_timeout * rounds);
    }

    /// Whether `state` may be fetched now (it was not refused, or its refusal ran out).
    fn fetchable(&self, now: Timestamp, state: StateSummary) -> bool {
        self.refused.get(&state).is_none_or(|until| now >= *until)
    }

    fn install(&mut self, now: Timestamp, snapshot: StateSnapshot) {
        self.progress_at = now;
        let summary = snapshot.summary();
        if self.config.serve_state == ServeState::Members {
            let committee = snapshot.committee().to_vec();
            self.note_members(&committee);
        }
        if self.lock.as_ref().is_some_and(|l| l.base() != summary) {
            self.lock = None;
        }
        match &self.dormant_lock {
            Some(d) if d.base() == summary && self.lock.is_none() => {
                self.lock = self.dormant_lock.take();
            }
            Some(d) if d.base().round < summary.round => self.dormant_lock = None,
            _ => {}
        }
        let heard = self
            .attested
            .values()
            .flat_map(|kept| kept.iter().filter(|(s, _, _)| *s == summary))
            .map(|(_, seal, _)| *seal);
        self.lineage
            .advance(summary, snapshot.content(), snapshot.committee(), heard);
        self.state = Some(summary);
        self.snapshots.insert(summary.round, snapshot);
        while self.snapshots.len() > self.config.snapshots_retained {
            self.snapshots.pop_first();
        }
        if self.next_round <= summary.round {
            self.next_round = summary.round.next();
        }
    }

    fn compute_next(&mut self) {
        self.gradient = None;
        self.stage = Stage::Computing;
        if self.leaving {
            return;
        }
        self.outputs.push_back(Output::ComputeGradient {
            round: self.next_round,
        });
    }

    /// The shell's gradient on the current state, with its weight (samples behind it).
    /// Ignored unless the peer asked for one and its state has not changed since.
    pub fn handle_gradient(&mut self, now: Timestamp, weight: u32, data: Arc<[f32]>) {
        let Some(base) = self.state else { return };
        if self.stage != Stage::Computing || weight == 0 {
            return;
        }
        self.gradient = Some(Gradient { base, weight, data });
        self.stage = Stage::Ready { since: now };
        self.announce(now);
        self.maybe_propose(now);
        // A round this started may have finished at once (a lone contributor's does): conclude
        // it now rather than at the next timer. (Other rounds' outputs wait for the next input,
        // as before, which keeps the simulator's seeded runs as they were.)
        if self.round.as_ref().is_some_and(ReduceRound::is_finished) {
            self.pump(now);
        }
    }

    /// A message from `from`, the peer the transport authenticated.
    pub fn handle_message(&mut self, now: Timestamp, from: PeerId, envelope: Envelope) {
        if envelope.sender != from {
            let claimed = envelope.sender;
            self.event(Event::Impersonation {
                peer: from,
                claimed,
            });
            return;
        }
        let round = envelope.round;
        match envelope.body {
            Body::Announce(a) => self.handle_announce(now, from, round, a),
            Body::Proposal(p) => self.handle_proposal(now, from, round, &p),
            Body::StateRequest(req) => {
                let body = if self.may_fetch_state(from) {
                    let served = self
                        .snapshots
                        .get(&round)
                        .map(|s| (s.summary(), s.serve(req)));
                    match served {
                        Some((summary, Body::StateManifest(mut manifest))) => {
                            manifest.attestations = self.attestations_of(summary);
                            manifest.lineage = self.lineage.before(summary.round);
                            Body::StateManifest(manifest)
                        }
                        Some((_, body)) => body,
                        None => Body::StateUnavailable,
                    }
                } else {
                    self.event(Event::StateWithheld { peer: from });
                    Body::StateUnavailable
                };
                self.send(from, round, body);
            }
            body @ (Body::StateManifest(_) | Body::StateChunk(_) | Body::StateUnavailable) => {
                if let Some(sync) = &mut self.sync
                    && sync.target().round == round
                {
                    sync.handle_message(now, from, body);
                }
            }
            Body::SealRequest(request)
                if self.last_seals.as_ref().is_some_and(|(r, _)| *r == round) =>
            {
                let answer = self
                    .last_seals
                    .as_mut()
                    .and_then(|(_, book)| book.answer(from, &request));
                if let Some(certificate) = answer {
                    self.send(from, round, Body::Seals(certificate));
                }
            }
            body => self.route_round_message(now, Envelope { body, ..envelope }),
        }
        self.pump(now);
    }

    fn route_round_message(&mut self, now: Timestamp, envelope: Envelope) {
        let current = self.round.as_ref().map(ReduceRound::round);
        if Some(envelope.round) == current {
            if let Some(round) = &mut self.round {
                round.handle_message(now, envelope.sender, envelope.body);
            }
        } else if envelope.round >= self.next_round && current.is_none_or(|c| envelope.round > c) {
            self.buffer_early(envelope);
        }
    }

    /// Keeps a message for a round this peer has not started, within bounds: rounds at most
    /// [`EARLY_ROUNDS_AHEAD`] past the next, at most [`EARLY_MESSAGES_MAX`] messages, and bytes
    /// bounded per sender and in all by the size of our state (plus a little). What does not fit
    /// is dropped: an honest sender's message for a round we join is re-requested or its round
    /// aborts, as when it is lost.
    fn buffer_early(&mut self, envelope: Envelope) {
        if envelope.round.0 > self.next_round.0.saturating_add(EARLY_ROUNDS_AHEAD)
            || self.early_count >= EARLY_MESSAGES_MAX
        {
            return;
        }
        let state_bytes = self
            .state
            .and_then(|s| self.snapshots.get(&s.round))
            .map_or(0, |snapshot| snapshot.bytes().len());
        let bytes = crate::wire::encoded_len(&envelope);
        let sender_bytes = self
            .early_bytes_by_sender
            .get(&envelope.sender)
            .copied()
            .unwrap_or(0);
        if sender_bytes + bytes > state_bytes + EARLY_BYTES_PER_SENDER_SLACK
            || self.early_bytes + bytes > 2 * state_bytes + EARLY_BYTES_SLACK
        {
            return;
        }
        self.early_count += 1;
        self.early_bytes += bytes;
        *self
            .early_bytes_by_sender
            .entry(envelope.sender)
            .or_default() += bytes;
        self.early
            .entry(envelope.round)
            .or_default()
            .push((envelope, bytes));
    }

    /// Drops the buffered messages of rounds before `round` and takes those of `round`.
    fn take_early(&mut self, round: RoundId) -> Vec<Envelope> {
        self.early.retain(|r, _| *r >= round);
        let taken = self.early.remove(&round).unwrap_or_default();
        self.early_count = self.early.values().map(Vec::len).sum();
        self.early_bytes_by_sender.clear();
        for (envelope, bytes) in self.early.values().flatten() {
            *self
                .early_bytes_by_sender
                .entry(envelope.sender)
                .or_default() += bytes;
        }
        self.early_bytes = self.early_bytes_by_sender.values().sum();
        taken.into_iter().map(|(envelope, _)| envelope).collect()
    }

    fn handle_announce(&mut self, now: Timestamp, from: PeerId, round: RoundId, a: Announce) {
        // An older announcement overtaken by a newer one says nothing new.
        if self
            .known
            .get(&from)
            .is_some_and(|k| k.announce.seq > a.seq)
        {
            return;
        }
        let theirs = a.state;
        let ready_for = a.ready_for;
        if let (Some(state), Some(seal)) = (theirs, a.attestation)
            && seal.signer() == from
        {
            if self.attested.len() >= ATTESTERS_MAX {
                let known = &self.known;
                self.attested.retain(|peer, _| known.contains_key(peer));
            }
            self.lineage.hear(state, seal);
            let kept = self.attested.entry(from).or_default();
            if kept.back().is_none_or(|(s, _, _)| *s != state) {
                kept.push_back((state, seal, false));
                if kept.len() > ATTESTED_PER_PEER {
                    kept.pop_front();
                }
            }
        }
        // Before the first commit, a peer announcing our initial (or re-founded) state is a
        // founder.
        if theirs.is_some() && theirs == self.state && self.state_committee().is_empty() {
            self.note_members(&[from]);
        }
        self.known.insert(
            from,
            Known {
                announce: a,
                round,
                seen: now,
            },
        );
        self.propose_blocked = false;
        // A member of our round that is already past it will never send its part.
        if let Some(round) = &mut self.round {
            let r = round.round();
            // Ready for a later round on a state older than this round: it gave up on it. (A
            // state of this round or newer means it committed, perhaps this very round.)
            let past = ready_for.is_some_and(|x| x > r) && theirs.is_none_or(|s| s.round < r);
            if past {
                round.handle_desertion(from);
            }
        }
        self.update_carry();
        if self.check_behind(now) {
            return;
        }
        self.settle_lock(now);
        self.maybe_start_sync(now);
        // Same state, further ahead in round ids: a round happened (and aborted) without us, or
        // we were slow. Our gradient is still valid; follow the round id.
        if theirs == self.state
            && let Some(r) = ready_for
            && r > self.next_round
            && matches!(self.stage, Stage::Ready { .. } | Stage::Computing)
        {
            self.next_round = r;
            if let Stage::Ready { .. } = self.stage {
                self.stage = Stage::Ready { since: now };
                self.announce(now);
            }
        }
        self.track_committee(now);
        self.maybe_propose(now);
    }

    /// Becomes a joiner if a live peer announces a newer state than ours: rounds were committed
    /// without us. Not while a round or an apply is in flight (those may be about to catch up).
    fn check_behind(&mut self, now: Timestamp) -> bool {
        if matches!(
            self.stage,
            Stage::InRound | Stage::Applying { .. } | Stage::Joining
        ) {
            return false;
        }
        // Cut off from our committee, and a peer re-founded our state: follow it (§5.6).
        self.adopt_refounded(now);
        let mine = self.state.map(|s| s.round);
        let behind = self
            .sync_targets(now)
            .keys()
            .any(|s| mine.is_none_or(|m| s.round > m));
        if behind {
            self.become_joiner(now);
        }
        behind
    }

    /// The states this peer may sync to, each with the live peers announcing it (its donors).
    ///
    /// Announcements are authenticated by the shell, but one peer's word is not enough: the
    /// committee of the state this peer holds (`C`, the contributors of the round that produced
    /// it) decides, so that a dishonest minority of `C`, or anyone outside it, cannot make this
    /// peer fetch a state however new it claims to be (docs/protocol.md §3.5, "Sync targets").
    /// In order:
    ///
    /// 1. states that a strict majority of `C` announces (this peer not counted): *vouched*;
    /// 2. none while this peer and the members of `C` announcing its state or an older one
    ///    make a strict majority: nothing can have been committed on its state without one of
    ///    them (a commit needs a majority of `C`, and its voters hold its result or are
    ///    joining);
    /// 3. otherwise the newer state that strictly more members of `C` announce than any other
    ///    (none on a tie: the next announcements settle it);
    /// 4. when no member of `C` announces a newer state (they crashed) — and always for a peer
    ///    without a committee (no state yet, or the initial state) — every state any live
    ///    peer announces: one peer's word, the price of catching up at all.
    fn sync_targets(&self, now: Timestamp) -> BTreeMap<StateSummary, Vec<PeerId>> {
        let mut tally: BTreeMap<StateSummary, Vec<PeerId>> = BTreeMap::new();
        for (peer, k) in &self.known {
            if let Some(s) = k.announce.state
                && !k.announce.wants_to_join
                && self.fetchable(now, s)
            {
                tally.entry(s).or_default().push(*peer);
            }
        }
        let full = self.state_committee();
        if full.is_empty() {
            return tally;
        }
        let majority = full.len() / 2 + 1;
        let others: BTreeSet<PeerId> = full.iter().copied().filter(|p| *p != self.me).collect();
        let backing = |peers: &Vec<PeerId>| peers.iter().filter(|p| others.contains(p)).count();
        let vouched: BTreeMap<StateSummary, Vec<PeerId>> = tally
            .iter()
            .filter(|(_, peers)| backing(peers) >= majority)
            .map(|(s, peers)| (*s, peers.clone()))
            .collect();
        if !vouched.is_empty() {
            return vouched;
        }
        let mine = self.state.map(|s| s.round);
        let with_me = usize::from(others.len() < full.len())
            + tally
                .iter()
                .filter(|(s, _)| mine.is_some_and(|m| s.round <= m))
                .map(|(_, peers)| backing(peers))
                .sum::<usize>();
        if with_me >= majority {
            return BTreeMap::new();
        }
        let newer: Vec<(StateSummary, usize)> = tally
            .iter()
            .filter(|(s, _)| mine.is_none_or(|m| s.round > m))
            .map(|(s, peers)| (*s, backing(peers)))
            .collect();
        let top = newer.iter().map(|(_, n)| *n).max().unwrap_or(0);
        if top == 0 {
            return tally;
        }
        let mut leaders = newer.iter().filter(|(_, n)| *n == top);
        match (leaders.next(), leaders.next()) {
            (Some((state, _)), None) => tally.remove_entry(state).into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    fn become_joiner(&mut self, now: Timestamp) {
        if self.stage != Stage::Joining {
            self.stage = Stage::Joining;
            self.gradient = None;
            self.announce(now);
        }
        self.maybe_start_sync(now);
    }

    /// A joiner that is not syncing fetches the newest state live peers announce, from the peers
    /// announcing it. It need not wait for a roster: a mesh whose committee needs this peer could
    /// otherwise never propose one.
    fn maybe_start_sync(&mut self, now: Timestamp) {
        if self.leaving
            || self.stage != Stage::Joining
            || self.sync.is_some()
            || self.round.is_some()
        {
            return;
        }
        // Newest round first; among equals, the state most peers announce.
        let best = self.sync_targets(now).into_iter().max_by(|a, b| {
            (a.0.round, a.1.len(), std::cmp::Reverse(a.0.digest)).cmp(&(
                b.0.round,
                b.1.len(),
                std::cmp::Reverse(b.0.digest),
            ))
        });
        let Some((target, donors)) = best else {
            self.resume_own_state(now);
            return;
        };
        if self.state.is_some_and(|s| s.round >= target.round) {
            self.resume_own_state(now);
            return;
        }
        // The initial state is the founders' own: a peer that fetches it would count as a
        // founder in the first round's genesis quorum. Joiners wait for the first commit.
        if target.round == RoundId(0) || self.hearing_peers(now) {
            return;
        }
        self.event(Event::SyncStarted {
            target,
            donors: donors.len(),
        });
        self.pending.retain(|r, _| *r > target.round);
        let vouchers = self.vouchers(now);
        self.sync = Some(StateSync::start(
            &self.config,
            target,
            vouchers,
            donors,
            now,
        ));
    }

    /// A joiner that holds a state of its own (it became a joiner because a newer state was
    /// announced) and has nothing newer left to fetch — that state's sync failed or was refused,
    /// or its announcer went silent — trains on its own state again. Without this, one
    /// announcement of a state that nobody serves would stop every peer that heard it.
    fn resume_own_state(&mut self, now: Timestamp) {
        if self.stage == Stage::Joining
            && self.state.is_some()
            && self.sync.is_none()
            && self.round.is_none()
            && self.applying.is_none()
        {
            self.event(Event::ResumedOwnState);
            self.apply_next_pending();
            self.announce(now);
        }
    }

    fn handle_proposal(&mut self, now: Timestamp, from: PeerId, round: RoundId, p: &Proposal) {
        if self.leaving || round < self.next_round || !self.may_supersede(now, from, round) {
            return;
        }
        let roster = match Roster::from_proposal(round, p) {
            Ok(r) => Arc::new(r),
            Err(error) => {
                return self.event(Event::BadProposal {
                    peer: from,
                    round,
                    error,
                });
            }
        };
        match roster.role(self.me) {
            Some(Role::Contributor) => self.start_contributing(now, roster),
            Some(Role::Observer) => self.start_observing(now, roster),
            None => {
                if self.state.is_none_or(|s| s.round < roster.base().round) {
                    self.become_joiner(now);
                }
            }
        }
        if self.round.as_ref().is_some_and(|r| r.round() == round) {
            self.round_leader = Some(from);
        }
    }

    /// Whether a proposal for `round` from `from` may be taken up: always when no round runs;
    /// when ours is the same round under a worse-ranked leader and we have not voted yet, we
    /// abandon ours for it. Before voting a peer has committed to nothing (its parts are bound
    /// to the roster's digest), so switching keeps every quorum argument intact, and peers
    /// that disagreed about the leader converge on the best-ranked one.
    fn may_supersede(&mut self, now: Timestamp, from: PeerId, round: RoundId) -> bool {
        let Some(current) = &self.round else {
            return true;
        };
        let better = current.round() == round
            && !current.has_voted()
            && current.roster().role(self.me) == Some(Role::Contributor)
            && self
                .round_leader
                .is_some_and(|l| leader_key(round, from) < leader_key(round, l));
        if better {
            self.round = None;
            self.stage = Stage::Ready { since: now };
            let reason = crate::reduce::AbortReason::Superseded;
            self.event(Event::RoundAborted { round, reason });
        }
        better
    }

    fn start_contributing(&mut self, now: Timestamp, roster: Arc<Roster>) {
        let Some(g) = &self.gradient else { return };
        let fits = matches!(self.stage, Stage::Ready { .. })
            && g.base == roster.base()
            && g.data.len() == roster.vector_len()
            && self.holds_committee_majority(roster.members());
        if !fits {
            return;
        }
        let local = Some((g.weight, g.data.clone()));
        let committee = self
            .state
            .and_then(|s| self.snapshots.get(&s.round))
            .map(|s| s.committee().to_vec());
        if committee.is_none() {
            return;
        }
        self.start_round(now, roster, Role::Contributor, local, committee);
    }

    fn start_observing(&mut self, now: Timestamp, roster: Arc<Roster>) {
        let base = roster.base();
        // A peer that just caught up (the leader has not heard yet) observes too: it applies this
        // round's result and contributes from the next one.
        let caught_up = self.state == Some(base)
            && matches!(self.stage, Stage::Computing | Stage::Ready { .. });
        if self.stage != Stage::Joining && !caught_up {
            return;
        }
        // An unfinished sync still serves if the results observed since its target lead to
        // this roster's base: they are applied in order once the state arrives.
        let sync_reaches_base = self.sync.as_ref().is_some_and(|s| {
            s.target() == base
                || self
                    .pending
                    .get(&base.round)
                    .is_some_and(|r| r.base.round >= s.target().round)
        });
        if self.state != Some(base) && !sync_reaches_base {
            if self.hearing_peers(now) {
                return;
            }
            let donors: Vec<PeerId> = roster
                .contributors()
                .iter()
                .copied()
                .filter(|p| *p != self.me)
                .collect();
            self.event(Event::SyncStarted {
                target: base,
                donors: donors.len(),
            });
            self.pending.clear();
            let vouchers = self.vouchers(now);
            self.sync = Some(StateSync::start(&self.config, base, vouchers, donors, now));
        }
        let committee = self.committee_of(base);
        self.start_round(now, roster, Role::Observer, None, committee);
    }

    /// The committee of state `base` as this peer knows it for sure: a state it holds or is
    /// applying, the result of a round it observed, or the state it syncs once the manifest
    /// verified against the digest. An observer needs it to decide by votes.
    fn committee_of(&self, base: StateSummary) -> Option<Vec<PeerId>> {
        if let Some(snapshot) = self.snapshots.get(&base.round)
            && snapshot.summary() == base
        {
            return Some(snapshot.committee().to_vec());
        }
        if let Some((round, committee)) = &self.applying
            && *round == base.round
        {
            return Some(committee.clone());
        }
        if let Some(result) = self.pending.get(&base.round) {
            return Some(result.committee.clone());
        }
        self.sync
            .as_ref()
            .filter(|s| s.target() == base)
            .and_then(StateSync::committee)
            .map(<[PeerId]>::to_vec)
    }

    fn start_round(
        &mut self,
        now: Timestamp,
        roster: Arc<Roster>,
        role: Role,
        local: Option<(u32, Arc<[f32]>)>,
        committee: Option<Vec<PeerId>>,
    ) {
        let round_id = roster.round();
        self.note_members(roster.contributors());
        let contributors = roster.contributors().len();
        let members = roster.members().len();
        let carry = match role {
            Role::Contributor => self.carry_for(round_id, roster.base()),
            Role::Observer => crate::reduce::Carry::Free,
        };
        let start = ReduceRound::start_bound(
            &self.config,
            roster,
            &self.key,
            now,
            local,
            committee,
            carry,
        );
        let Ok(round) = start else {
            return;
        };
        self.round = Some(round);
        self.next_round = round_id;
        if role == Role::Contributor {
            self.stage = Stage::InRound;
            // Tell would-be leaders we are busy, so they stop counting us as ready.
            self.announce(now);
        }
        self.event(Event::RoundStarted {
            round: round_id,
            role,
            contributors,
            members,
        });
        for envelope in self.take_early(round_id) {
            if let Some(round) = &mut self.round {
                round.handle_message(now, envelope.sender, envelope.body);
            }
        }
    }

    /// Fires every deadline at or before `now`; spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if now >= self.next_announce {
            self.forget_silent(now);
            self.announce(now);
            // The announcer of the state we wanted may have gone silent, or a refusal ran out.
            self.maybe_start_sync(now);
        }
        if let Some(round) = &mut self.round {
            round.handle_timeout(now);
        }
        if let Some(sync) = &mut self.sync {
            sync.handle_timeout(now);
        }
        self.track_committee(now);
        self.maybe_propose(now);
        self.pump(now);
    }

    fn forget_silent(&mut self, now: Timestamp) {
        let ttl = self.config.peer_ttl;
        self.known
            .retain(|_, k| now.saturating_since(k.seen) <= ttl);
        // A silent peer's attestations of states we still serve stay valid evidence (it may
        // have died after committing them): keep those, drop the rest.
        let (known, snapshots) = (&self.known, &self.snapshots);
        self.attested.retain(|peer, kept| {
            if !known.contains_key(peer) {
                kept.retain(|(s, _, _)| snapshots.get(&s.round).is_some_and(|h| h.summary() == *s));
            }
            !kept.is_empty()
        });
    }

    /// The next action, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest time at which [`Peer::handle_timeout`] has work to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [
            Some(self.next_announce),
            self.round.as_ref().and_then(ReduceRound::poll_timeout),
            self.sync.as_ref().and_then(StateSync::poll_timeout),
            self.propose_at(),
            self.committee_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Our attestation of `state` (signed once per state we hold).
    fn attestation(&mut self, state: StateSummary) -> Seal {
        match self.own_attestation {
            Some((s, seal)) if s == state => seal,
            _ => {
                let seal = self.key.seal_state(state.round, state.digest);
                self.own_attestation = Some((state, seal));
                self.lineage.hear(state, seal);
                seal
            }
        }
    }

    /// The attestations of `state` a donor forwards with its manifest: its own and every one
    /// heard from a peer announcing it, each verified before it is first forwarded (one that
    /// does not verify is dropped: its sender lied), at most [`ATTESTATIONS_MAX`].
    fn attestations_of(&mut self, state: StateSummary) -> Vec<Seal> {
        let mut seals = vec![self.attestation(state)];
        for kept in self.attested.values_mut() {
            kept.retain_mut(|(s, seal, verified)| {
                if *s == state && !*verified {
                    *verified = seal.seals_state(state.round, state.digest);
                    return *verified;
                }
                true
            });
            if let Some((_, seal, _)) = kept.iter().find(|(s, _, _)| *s == state) {
                seals.push(*seal);
            }
        }
        seals.truncate(ATTESTATIONS_MAX);
        seals
    }

    /// A peer without a committee counts the live peers it hears to vouch for a state
    /// ([`Vouchers`]); it first hears them all — every live peer announces once per announce
    /// interval — so that the first peer it hears cannot vouch for itself alone.
    fn hearing_peers(&self, now: Timestamp) -> bool {
        self.state_committee().is_empty() && now < self.discovery_until
    }

    /// Whose attestations make this peer fetch a state ([`Vouchers`]): the committee of the
    /// state it holds (and committees descending from it), the voters of a result it saw
    /// decided on that state, the live peers announcing a state — joining or not: a peer that
    /// chases a forged state announces `wants_to_join`, and leaving it out would leave the
    /// forger alone to vouch for itself — and, once it is stuck, any two live peers.
    fn vouchers(&self, now: Timestamp) -> Vouchers {
        let stuck = self.config.round_timeout * STUCK_ROUND_TIMEOUTS;
        let committee = self.state_committee();
        let (witnesses, witnessed_until) = match &self.witnessed {
            Some((base, _, until, voters)) if self.state == Some(*base) => {
                let others = voters.iter().copied().filter(|p| *p != self.me);
                (others.collect(), *until)
            }
            _ => (BTreeSet::new(), RoundId(0)),
        };
        Vouchers {
            committees: (!committee.is_empty())
                .then(|| {
                    let others = committee.iter().copied().filter(|p| *p != self.me);
                    (others.collect(), committee.len())
                })
                .into_iter()
                .collect(),
            witnesses,
            witnessed_until,
            backstop: now.saturating_since(self.progress_at) >= stuck,
            chain: (!committee.is_empty()).then(|| (self.me, committee.iter().copied().collect())),
            held_round: self.state.map_or(RoundId(0), |s| s.round),
            live: self
                .known
                .iter()
                .filter(|(p, k)| **p != self.me && k.announce.state.is_some())
                .map(|(p, _)| *p)
                .collect(),
            genesis_quorum: if self.state.is_some() && committee.is_empty() {
                self.config.genesis_quorum
            } else {
                0
            },
        }
    }

    fn announce(&mut self, now: Timestamp) {
        let ready = matches!(self.stage, Stage::Ready { .. }) && !self.leaving;
        let ready_for = ready.then_some(self.next_round);
        let announce = Announce {
            state: self.state,
            ready_for,
            wants_to_join: self.stage == Stage::Joining,
            bandwidth_bytes_per_s: self.profile.bandwidth_bytes_per_s,
            samples_per_s: self.profile.samples_per_s,
            samples_per_step: self.profile.samples_per_step,
            lock: self.lock.as_ref().map(lock::Lock::announced),
            seq: self.announce_seq,
            attestation: self.state.map(|s| self.attestation(s)),
        };
        // The announcement promises `next_round` (and shows the lock): durable first.
        self.persist_promise();
        self.announce_seq += 1;
        let envelope = Envelope::new(self.me, self.next_round, Body::Announce(announce));
        self.outputs.push_back(Output::Broadcast { envelope });
        self.next_announce = now + self.config.announce_interval;
    }

    /// What this peer has promised now: its next round, and its last vote on its state (the
    /// running round's, once cast, else the lock).
    fn promise(&self) -> Promise {
        let voting = self
            .round
            .as_ref()
            .and_then(|round| round.voted().map(|(vote, _)| (round.roster().base(), vote)));
        Promise {
            next_round: self.next_round,
            lock: voting.or_else(|| self.lock.as_ref().map(|l| (l.base(), l.announced()))),
        }
    }

    /// Hands the shell the promise to persist when it changed since the last one.
    fn persist_promise(&mut self) {
        let promise = self.promise();
        if self.persisted.as_ref() != Some(&promise) {
            self.persisted = Some(promise.clone());
            self.outputs.push_back(Output::Persist(promise));
        }
    }

    fn send(&mut self, to: PeerId, round: RoundId, body: Body) {
        let envelope = Envelope::new(self.me, round, body);
        self.outputs.push_back(Output::Send { to, envelope });
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Moves the sub-machines' outputs into ours and reacts to their conclusions.
    fn pump(&mut self, now: Timestamp) {
        if let Some(base) = self
            .round
            .as_ref()
            .filter(|r| r.needs_committee())
            .map(|r| r.roster().base())
            && let Some(committee) = self.committee_of(base)
            && let Some(round) = &mut self.round
        {
            round.learn_committee(committee);
        }
        while let Some(out) = self.round.as_mut().and_then(ReduceRound::poll_output) {
            let round = self.next_round;
            match out {
                RoundOutput::Send { to, body } => {
                    if matches!(body, Body::Vote(_)) {
                        // A vote is a lock: durable before it leaves.
                        self.persist_promise();
                    }
                    self.send(to, round, body);
                }
                RoundOutput::Rejected { peer, reason } => {
                    self.event(Event::Rejected {
                        peer,
                        round,
                        reason,
                    });
                }
                RoundOutput::Finished(outcome) => self.finish_round(now, outcome),
            }
        }
        while let Some(out) = self.sync.as_mut().and_then(StateSync::poll_output) {
            let round = self.sync.as_ref().map_or(RoundId(0), |s| s.target().round);
            match out {
                SyncOutput::Send { to, body } => self.send(to, round, body),
                SyncOutput::DonorDropped { peer, fault } => {
                    self.event(Event::DonorDropped { peer, fault });
                }
                SyncOutput::Done(snapshot) => self.finish_sync(now, snapshot),
                SyncOutput::Failed => {
                    if let Some(target) = self.sync.take().map(|s| s.target()) {
                        self.event(Event::SyncFailed { target });
                        self.refuse(now, target, SYNC_FAILED_REFUSAL_ROUNDS);
                        self.maybe_start_sync(now);
                    }
                }
            }
        }
    }

    fn finish_round(&mut self, now: Timestamp, outcome: RoundOutcome) {
        let Some(round) = self.round.take() else {
            return;
        };
        let id = round.round();
        let contributor = round.roster().role(self.me) == Some(Role::Contributor);
        self.next_round = id.next();
        // Members that missed votes of this round may still ask for their seals.
        let book = round.seal_book();
        if let RoundOutcome::Diverged { committed } = &outcome {
            let base = round.roster().base();
            let voters = book.voters_of(*committed);
            match &mut self.witnessed {
                Some((b, d, _, all)) if *b == base && *d == *committed => all.extend(voters),
                witnessed => {
                    *witnessed = Some((base, *committed, id, voters.into_iter().collect()));
                }
            }
        }
        self.last_seals = Some((id, book));
        // Whatever the outcome, the vote is remembered until this peer's state changes: it
        // binds later votes on the same state (`lock.rs`).
        if let Some((vote, result)) = round.voted() {
            self.lock = Some(lock::Lock::new(round.roster().base(), vote, result));
        }
        match outcome {
            RoundOutcome::Committed(result) => {
                self.event(Event::RoundCommitted {
                    round: id,
                    digest: result.digest,
                    contributors: contributors_of(&result),
                });
                self.apply_or_buffer(result);
            }
            RoundOutcome::Aborted { reason } => {
                self.event(Event::RoundAborted { round: id, reason });
                if contributor {
                    self.stage = Stage::Ready { since: now };
                    if !self.check_behind(now) {
                        self.settle_lock(now);
                    }
                } else if self.sync.is_none() && self.state == Some(round.roster().base()) {
                    // An observer that finished its sync during an aborted round is current.
                    self.apply_next_pending();
                }
            }
            RoundOutcome::Diverged { committed } => {
                self.event(Event::Diverged {
                    round: id,
                    committed,
                });
                self.become_joiner(now);
            }
        }
        self.announce(now);
    }

    /// Applies a committed result now if the shell is idle and holds its base state; keeps it
    /// while a sync or an earlier apply is in flight.
    fn apply_or_buffer(&mut self, result: RoundResult) {
        let busy = self.sync.is_some() || matches!(self.stage, Stage::Applying { .. });
        if busy {
            self.pending.insert(result.round, result);
        } else if self.state == Some(result.base) {
            self.begin_apply(result);
        }
    }

    /// After a state change: applies the next buffered result built on it, or asks for a
    /// gradient on the new state.
    fn apply_next_pending(&mut self) {
        let Some(state) = self.state else { return };
        self.pending.retain(|r, _| *r > state.round);
        let next = self
            .pending
            .iter()
            .find(|(_, r)| r.base == state)
            .map(|(r, _)| *r);
        if let Some(result) = next.and_then(|r| self.pending.remove(&r)) {
            self.begin_apply(result);
        } else if self.sync.is_none() {
            self.pending.clear();
            self.compute_next();
        }
    }

    fn begin_apply(&mut self, result: RoundResult) {
        self.applying = Some((result.round, result.committee.clone()));
        self.stage = Stage::Applying {
            round: result.round,
        };
        self.outputs.push_back(Output::ApplyRound(result));
    }

    fn finish_sync(&mut self, now: Timestamp, snapshot: StateSnapshot) {
        self.synced_from = self.sync.take().map(|s| s.served_by()).unwrap_or_default();
        let held = self
            .state
            .and_then(|s| self.snapshots.get(&s.round))
            .cloned();
        self.before_sync = Some((held, self.next_round));
        self.outputs.push_back(Output::LoadState(snapshot.clone()));
        self.install(now, snapshot);
        self.apply_next_pending();
        self.announce(now);
    }
}

/// How many contributors a result averages (in at least one span).
fn contributors_of(result: &RoundResult) -> usize {
    result
        .spans
        .iter()
        .flat_map(|s| &s.contributors)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests;
