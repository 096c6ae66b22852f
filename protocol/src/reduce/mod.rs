//! One all-reduce round: butterfly reduce-scatter + all-gather with a digest vote.
//!
//! Every contributor owns one span of the flat vector (sized by its bandwidth, see
//! [`crate::roster::split_by_bandwidth`]). A round goes through these steps, each bounded by a
//! deadline measured from the moment the roster was accepted:
//!
//! 1. **Reduce-scatter.** Each contributor sends its slice of span `j` to span `j`'s owner. The
//!    owner reduces when it holds every contribution, or at the *gather* deadline with those it
//!    has. The reduction is a sample-weighted mean accumulated in `f64` in rank order, or the
//!    configured robust rule ([`PeerConfig::aggregation`]) applied in rank order, so the result
//!    depends only on which contributions were included, never on arrival order.
//! 2. **All-gather.** The owner sends the reduced span, with a bitmap of the contributors it
//!    includes, to every member. Only the owner computes a span; everyone else receives its bytes,
//!    so every holder of a span holds identical bytes.
//! 3. **Failover.** A member still missing span `j` at the *failover* deadline asks every member
//!    for it (`SpanRequest`: whoever holds the owner's version relays it) and sends its retained
//!    slice of span `j` to the span's backup owner (the next contributor in rank order). The
//!    backup relays the owner's reduced span if it has it, or else reduces the contributions it
//!    receives, when it has all but the owner's or at the *backup* deadline. A member keeps the
//!    first version of a span it receives; a backup version only exists when nobody the backup
//!    asked held the owner's, and if members still end up with different versions their digests
//!    differ and at most one of them can gather a quorum.
//! 4. **Vote.** A contributor votes once: for its own result's digest once every span is in
//!    hand, or for an earlier round's digest on the same base at once, or not at all — as the
//!    peer machine decides from earlier votes on that base (`Carry`, `peer/lock.rs`,
//!    docs/protocol.md §5.2). A digest is decided when it has the votes of a strict majority of
//!    this roster's contributors *and* of a strict majority of the *committee* — the
//!    contributors of the round that produced the base state. Votes are sealed (ed25519 over
//!    the roster's digest and the result, [`crate::keys`]). A member holding the decided
//!    digest's data commits and tells everyone with a `Commit` naming the voters it counted; a
//!    receiver missing some of those votes asks the sender for their seals (`SealRequest`, at
//!    most [`SEAL_REQUESTS_PER_DIGEST`] senders per digest), adds those that verify to the votes
//!    it heard itself and decides by the same rule, so a notice commits nothing that the votes
//!    do not. Seals travel only to peers that miss votes, so a round's commit traffic stays
//!    one small notice per contributor and member. An observer decides by the same rule once
//!    it knows the committee (the peer machine hands it over as soon as it holds the base
//!    state's verified manifest); until then it commits nothing. Within a round, any two
//!    committee majorities share a peer, a peer accepts one roster per round and votes once, so
//!    two different results can never both commit. A member that voted or holds a result, but
//!    not the decided one, finishes [`RoundOutcome::Diverged`] and must resync; one that has
//!    neither waits for its spans until the *round* deadline (they may trail the small votes on
//!    a slow downlink). At the deadline an undecided round finishes
//!    [`RoundOutcome::Aborted`] and the peer keeps its pre-round state.

mod span;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use thiserror::Error;

use crate::config::{Aggregation, CodecKind, PeerConfig};
use crate::floats::Floats;
use crate::ids::{Digest, PeerId, RoundId};
use crate::keys::{PeerKey, Seal};
use crate::roster::Roster;
use crate::time::Timestamp;
use crate::wire::{
    Body, Certificate, CommitNotice, Contribution, Reduced, Role, SealRequest, SpanRequest, Vote,
    VoteLock,
};

use span::{FiniteCheck, OwnedSpan, encode_values, quantise, received_values, reduce_span};
pub use span::{ReducedSpan, SpanResult, span_rule};

/// Why a message from a peer was refused. The peer is named next to it in
/// [`RoundOutput::Rejected`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The sender is not a member (or not a contributor, for contributions and votes).
    #[error("sender is not a contributor of this round")]
    NotContributor,
    /// The sender sent a span it neither owns nor backs up, or to a peer that does not own it.
    #[error("span {span} is not owned by the sender or the receiver")]
    NotOwner {
        /// The span.
        span: u32,
    },
    /// The span index does not exist in this roster.
    #[error("span {span} does not exist")]
    NoSuchSpan {
        /// The span.
        span: u32,
    },
    /// The values have the wrong length for the span.
    #[error("span has {expected} floats, got {got}")]
    WrongLength {
        /// Expected.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("value {index} is not finite")]
    NonFinite {
        /// Index of the first offending value within the span.
        index: usize,
    },
    /// A contribution with weight zero.
    #[error("contribution has zero weight")]
    ZeroWeight,
    /// A reduced span's contributor bitmap or weight is malformed.
    #[error("reduced span's contributor bitmap or weight is malformed")]
    BadContributors,
    /// The sender voted twice with different digests.
    #[error("sender voted for two different results")]
    Equivocation,
    /// A vote's seal names another signer than its sender, or fetched seals do not verify or
    /// were not asked for.
    #[error("a vote's seal does not verify or names another signer")]
    BadSeal,
    /// The span is encoded with another codec than the mesh's [`PeerConfig::codec`].
    #[error("span is encoded with another codec than the mesh's")]
    WrongCodec,
    /// The span's codec bytes do not decode, or (named with this peer itself) its own values
    /// cannot be encoded, say a value beyond fp16's range.
    #[error("span codec: {0}")]
    Codec(String),
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundOutcome {
    /// A majority of contributors agreed on this result; apply it.
    Committed(RoundResult),
    /// No result was committed that this peer knows of; it keeps its pre-round state.
    Aborted {
        /// Why.
        reason: AbortReason,
    },
    /// A majority committed a result this peer does not hold: its state is now behind.
    Diverged {
        /// The committed digest.
        committed: Digest,
    },
}

/// Why a round aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortReason {
    /// Some span never arrived, even from its backup owner.
    MissingSpans,
    /// All spans arrived but no digest reached a quorum of votes.
    NoQuorum,
    /// So many contributors moved past this round that no quorum is possible any more.
    Deserted,
    /// A better-ranked leader's roster for the same round arrived before this peer voted.
    Superseded,
    /// This contributor never learned what it may vote for: earlier votes on the same base
    /// leave two results that could each have been committed, or too few committee members
    /// were heard from (docs/protocol.md §5.2). It withheld its vote.
    Withheld,
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MissingSpans => "a span never arrived, even from its backup owner",
            Self::NoQuorum => "no result reached a quorum of votes",
            Self::Deserted => "too many contributors moved on for a quorum",
            Self::Superseded => "a better-ranked leader's roster replaced it",
            Self::Withheld => "this node withheld its vote (an earlier vote locks it)",
        })
    }
}

/// The committed result of a round: bit-identical on every peer that commits it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundResult {
    /// The round.
    pub round: RoundId,
    /// The state this result applies to.
    pub base: crate::wire::StateSummary,
    /// blake3 over the roster and every span's contributors, weight and bytes.
    pub digest: Digest,
    /// The averaged flat vector.
    pub data: Floats,
    /// Which contributions each span averages.
    pub spans: Vec<SpanResult>,
    /// The roster's contributors: the committee of the state this result produces.
    pub committee: Vec<PeerId>,
}

/// What the round asks of the shell (through the peer machine).
#[derive(Debug, Clone, PartialEq)]
pub enum RoundOutput {
    /// Send `body` to `to`, in this round.
    Send {
        /// Recipient.
        to: PeerId,
        /// Message.
        body: Body,
    },
    /// A message from `peer` was refused.
    Rejected {
        /// The sender.
        peer: PeerId,
        /// Why.
        reason: RejectReason,
    },
    /// The round is over. Emitted exactly once, and nothing follows it.
    Finished(RoundOutcome),
}

/// What a contributor may vote for in this round, decided by the peer from what the base
/// committee announces (`peer/lock.rs`, docs/protocol.md §5.2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Carry {
    /// Not known yet (too few committee members heard from, or two earlier results could each
    /// have been committed): do not vote.
    Unknown,
    /// No earlier result on this base can have been committed: vote for this round's own result.
    Free,
    /// An earlier result on this base may have been committed: vote for it and nothing else.
    /// `result` is its data, when this peer holds it.
    Value {
        /// Its digest.
        digest: Digest,
        /// Its data, if this peer holds it.
        result: Option<Box<RoundResult>>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Deadlines {
    gather: Timestamp,
    failover: Timestamp,
    backup: Timestamp,
    round: Timestamp,
}

/// The state machine of one all-reduce round, for one member.
#[derive(Debug)]
pub struct ReduceRound {
    roster: Arc<Roster>,
    key: Arc<PeerKey>,
    me: PeerId,
    my_rank: Option<usize>,
    /// Contributors of the round that produced the base state; `None` for an observer, which
    /// may not know it yet and commits only on commit notices.
    committee: Option<Vec<PeerId>>,
    genesis_quorum: usize,
    aggregation: Aggregation,
    codec: CodecKind,
    deadlines: Deadlines,
    local: Option<(u32, Arc<[f32]>)>,
    owned: BTreeMap<usize, OwnedSpan>,
    reduced: Vec<Option<ReducedSpan>>,
    fired: [bool; 3],
    result: Option<RoundResult>,
    /// Spans this peer asked every member for at the failover deadline.
    requested: BTreeSet<usize>,
    /// Each contributor's vote and its seal.
    book: SealBook,
    /// The peers asked for seals of each digest (at most [`SEAL_REQUESTS_PER_DIGEST`]).
    seal_requests: BTreeMap<Digest, Vec<PeerId>>,
    /// What this contributor may vote for; observers ignore it.
    carry: Carry,
    /// This contributor's vote: the digest, and whether it carried an earlier result.
    my_vote: Option<(Digest, bool)>,
    /// Contributors known to have moved past this round without us.
    deserted: BTreeSet<PeerId>,
    finished: bool,
    outputs: VecDeque<RoundOutput>,
}

impl ReduceRound {
    /// Starts a round at `now`. `local` is `(weight, gradient)` for a contributor and `None` for
    /// an observer; `committee` is the base state's committee (empty for the initial state),
    /// `None` for an observer.
    ///
    /// # Errors
    /// [`StartError`] if the local role and gradient do not fit the roster.
    pub fn start(
        config: &PeerConfig,
        roster: Arc<Roster>,
        key: &Arc<PeerKey>,
        now: Timestamp,
        local: Option<(u32, Arc<[f32]>)>,
        committee: Option<Vec<PeerId>>,
    ) -> Result<Self, StartError> {
        Self::start_bound(config, roster, key, now, local, committee, Carry::Free)
    }

    /// [`ReduceRound::start`] for a contributor whose vote `carry` bounds (the peer machine
    /// computes it from earlier votes on the same base; a lone round is [`Carry::Free`]).
    pub(crate) fn start_bound(
        config: &PeerConfig,
        roster: Arc<Roster>,
        key: &Arc<PeerKey>,
        now: Timestamp,
        local: Option<(u32, Arc<[f32]>)>,
        committee: Option<Vec<PeerId>>,
        carry: Carry,
    ) -> Result<Self, StartError> {
        let me = key.id();
        let my_rank = roster.contributor_rank(me);
        match (roster.role(me), &local) {
            (None, _) => return Err(StartError::NotMember),
            (Some(Role::Contributor), None) => return Err(StartError::MissingGradient),
            (Some(Role::Observer), Some(_)) => return Err(StartError::ObserverWithGradient),
            (Some(Role::Contributor), Some((w, g))) => {
                if g.len() != roster.vector_len() || *w == 0 {
                    return Err(StartError::GradientShape {
                        len: g.len(),
                        weight: *w,
                    });
                }
            }
            (Some(Role::Observer), None) => {}
        }
        let deadlines = Deadlines {
            gather: now + config.gather_timeout,
            failover: now + config.failover_timeout,
            backup: now + config.backup_timeout,
            round: now + config.round_timeout,
        };
        let spans = roster.spans().len();
        let book = SealBook::new(Arc::clone(&roster));
        let mut round = Self {
            roster,
            key: Arc::clone(key),
            me,
            my_rank,
            committee,
            genesis_quorum: config.genesis_quorum,
            aggregation: config.aggregation,
            codec: config.codec,
            deadlines,
            local,
            owned: BTreeMap::new(),
            reduced: vec![None; spans],
            fired: [false; 3],
            result: None,
            requested: BTreeSet::new(),
            book,
            seal_requests: BTreeMap::new(),
            carry,
            my_vote: None,
            deserted: BTreeSet::new(),
            finished: false,
            outputs: VecDeque::new(),
        };
        round.scatter();
        round.try_vote();
        // A lone contributor holds every part, the result and the deciding vote by now: it
        // commits at once instead of at its next timer (a one-node mesh ran one round per
        // announce interval).
        round.try_finish();
        Ok(round)
    }

    /// The round.
    #[must_use]
    pub fn round(&self) -> RoundId {
        self.roster.round()
    }

    /// The roster.
    #[must_use]
    pub fn roster(&self) -> &Arc<Roster> {
        &self.roster
    }

    /// Whether the round has finished.
    #[must_use]
    pub const fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether this peer has voted or holds the full result; it may not switch rosters after.
    #[must_use]
    pub const fn has_voted(&self) -> bool {
        self.result.is_some() || self.my_vote.is_some()
    }

    /// This contributor's vote, and the voted result's data if it holds it.
    pub(crate) fn voted(&self) -> Option<(VoteLock, Option<RoundResult>)> {
        let (digest, carried) = self.my_vote?;
        let committee = self.committee.as_deref().unwrap_or_default();
        let mut backers = vec![0u8; committee.len().div_ceil(8)];
        for (i, p) in committee.iter().enumerate() {
            if self.roster.contributor_rank(*p).is_some() {
                backers[i / 8] |= 1 << (i % 8);
            }
        }
        let vote = VoteLock {
            round: self.round(),
            digest,
            carried,
            backers,
        };
        Some((vote, self.held(digest).cloned()))
    }

    /// Whether this is a contributor that has not voted yet (it needs [`Carry`] to vote).
    pub(crate) fn awaits_carry(&self) -> bool {
        !self.finished && self.my_rank.is_some() && self.my_vote.is_none()
    }

    /// Tells a contributor what it may vote for (see [`Carry`]); it votes as soon as it may.
    /// Ignored once it has voted.
    pub(crate) fn set_carry(&mut self, carry: Carry) {
        if self.finished || self.my_vote.is_some() || self.my_rank.is_none() {
            return;
        }
        self.carry = carry;
        self.try_vote();
        self.try_finish();
    }

    /// The data of result `digest`, if this peer holds it: its own assembled result or the
    /// earlier result it carries.
    fn held(&self, digest: Digest) -> Option<&RoundResult> {
        let carried = match &self.carry {
            Carry::Value { result, .. } => result.as_deref(),
            _ => None,
        };
        [self.result.as_ref(), carried]
            .into_iter()
            .flatten()
            .find(|r| r.digest == digest)
    }

    /// Casts a contributor's vote once it may: its own result when free, the carried digest
    /// when bound to one. (Observers' votes do not count; they send theirs when their result
    /// is assembled.)
    fn try_vote(&mut self) {
        if self.my_vote.is_some() || self.my_rank.is_none() {
            return;
        }
        let vote = match &self.carry {
            Carry::Unknown => None,
            Carry::Free => self.result.as_ref().map(|r| (r.digest, false)),
            Carry::Value { digest, .. } => Some((*digest, true)),
        };
        let Some((digest, carried)) = vote else {
            return;
        };
        self.my_vote = Some((digest, carried));
        let vote = self.sealed_vote(digest);
        self.book.insert_verified(self.me, digest, vote.seal);
        self.broadcast(&Body::Vote(vote));
    }

    /// This peer's vote for `digest`, sealed over this roster.
    fn sealed_vote(&self, digest: Digest) -> Vote {
        Vote {
            result: digest,
            seal: self.key.seal_vote(self.roster.digest(), digest),
        }
    }

    /// The round's sealed votes, for the peer to keep answering seal requests after the round.
    pub(crate) fn seal_book(&self) -> SealBook {
        self.book.clone()
    }

    /// Whether this (observer) round still waits to learn the base state's committee.
    pub(crate) const fn needs_committee(&self) -> bool {
        self.committee.is_none() && !self.finished
    }

    /// The base state's committee, learned mid-round by an observer: from now on it decides by
    /// the votes it holds, like a contributor.
    pub(crate) fn learn_committee(&mut self, committee: Vec<PeerId>) {
        if self.needs_committee() {
            self.committee = Some(committee);
            self.try_finish();
        }
    }

    /// The hard deadline of this round.
    #[must_use]
    pub const fn deadline(&self) -> Timestamp {
        self.deadlines.round
    }

    /// Sends each slice to its owner, keeping the local span. With a span codec the local span
    /// goes through the same encode→decode as every other contribution; a slice that cannot be
    /// encoded (a NaN, or a value beyond fp16's range) is left out and reported against this peer.
    fn scatter(&mut self) {
        let (Some(rank), Some((weight, grad))) = (self.my_rank, self.local.clone()) else {
            return;
        };
        let contributors = self.roster.contributors().len();
        for (j, range) in self.roster.spans().to_vec().into_iter().enumerate() {
            if j == rank {
                let mut own = OwnedSpan::new(contributors, false);
                match quantise(self.codec, &Floats::slice(&grad, range)) {
                    Ok((data, _)) => own.insert(rank, weight, data),
                    Err(reason) => self.reject(self.me, reason),
                }
                self.owned.insert(j, own);
            } else {
                let to = self.roster.contributors()[j];
                match contribution(
                    self.roster.digest(),
                    j,
                    weight,
                    self.codec,
                    &Floats::slice(&grad, range),
                ) {
                    Ok(body) => self.send(to, body),
                    Err(reason) => self.reject(self.me, reason),
                }
            }
        }
        self.try_reduce(rank, Timestamp::ZERO);
    }

    fn send(&mut self, to: PeerId, body: Body) {
        self.outputs.push_back(RoundOutput::Send { to, body });
    }

    fn reject(&mut self, peer: PeerId, reason: RejectReason) {
        self.outputs
            .push_back(RoundOutput::Rejected { peer, reason });
    }

    fn broadcast(&mut self, body: &Body) {
        let me = self.me;
        let members: Vec<PeerId> = self
            .roster
            .members()
            .iter()
            .map(|m| m.peer)
            .filter(|&p| p != me)
            .collect();
        for to in members {
            self.send(to, body.clone());
        }
    }

    /// Applies one message from `from` received at `now`.
    pub fn handle_message(&mut self, now: Timestamp, from: PeerId, body: Body) {
        if self.finished {
            return;
        }
        // Parts of another roster for this round (leaders disagreed) are not ours to judge.
        let roster = self.roster.digest();
        let foreign = match &body {
            Body::Contribution(c) => c.roster != roster,
            Body::Reduced(r) => r.roster != roster,
            Body::SpanRequest(s) => s.roster != roster,
            _ => false,
        };
        if foreign {
            return;
        }
        let verdict = match body {
            Body::Contribution(c) => self.handle_contribution(now, from, c),
            Body::Reduced(r) => self.handle_reduced(from, r),
            Body::SpanRequest(s) => self.handle_span_request(from, s.span),
            Body::Vote(v) => self.handle_vote(from, v),
            Body::Commit(c) => self.handle_commit(from, &c),
            Body::SealRequest(r) => {
                if let Some(certificate) = self.book.answer(from, &r) {
                    self.send(from, Body::Seals(certificate));
                }
                Ok(())
            }
            Body::Seals(c) => self.handle_seals(from, &c),
            _ => Ok(()),
        };
        if let Err(reason) = verdict {
            self.reject(from, reason);
        }
        self.try_finish();
    }

    fn handle_contribution(
        &mut self,
        now: Timestamp,
        from: PeerId,
        c: Contribution,
    ) -> Result<(), RejectReason> {
        let rank = self
            .roster
            .contributor_rank(from)
            .ok_or(RejectReason::NotContributor)?;
        let j = span_index(&self.roster, c.span)?;
        let range = self
            .roster
            .span(j)
            .ok_or(RejectReason::NoSuchSpan { span: c.span })?;
        // The weighted mean checks raw values as it reads them; robust rules need them finite.
        let finite = if self.aggregation == Aggregation::Mean {
            FiniteCheck::InMean
        } else {
            FiniteCheck::Now
        };
        let values = received_values(
            self.codec,
            (c.codec, c.floats, &c.data, &c.encoded),
            range.len(),
            finite,
        )?;
        if c.weight == 0 {
            return Err(RejectReason::ZeroWeight);
        }
        if self.my_rank == Some(j) {
            if let Some(own) = self.owned.get_mut(&j) {
                own.insert(rank, c.weight, values);
            }
            self.try_reduce(j, now);
            return Ok(());
        }
        if self.roster.backup_owner(j) != Some(self.me) {
            return Err(RejectReason::NotOwner { span: c.span });
        }
        // A failover contribution: relay the owner's span if we have it, else back it up.
        if let Some(span) = self.reduced[j].clone() {
            self.send(from, span.to_body(self.roster.digest(), j));
            return Ok(());
        }
        self.activate_backup(j);
        if let Some(own) = self.owned.get_mut(&j) {
            own.insert(rank, c.weight, values);
            own.requesters.insert(from);
        }
        self.try_reduce(j, now);
        Ok(())
    }

    fn activate_backup(&mut self, j: usize) {
        if self.owned.contains_key(&j) {
            return;
        }
        let mut own = OwnedSpan::new(self.roster.contributors().len(), true);
        if let (Some(rank), Some((weight, grad)), Some(range)) =
            (self.my_rank, &self.local, self.roster.span(j))
            && let Ok((data, _)) = quantise(self.codec, &Floats::slice(grad, range))
        {
            own.insert(rank, *weight, data);
        }
        self.owned.insert(j, own);
    }

    /// Reduces owned span `j` if it is complete or its deadline has passed.
    fn try_reduce(&mut self, j: usize, now: Timestamp) {
        let Some(own) = self.owned.get(&j) else {
            return;
        };
        if own.done {
            return;
        }
        let deadline = if own.as_backup {
            self.deadlines.backup
        } else {
            self.deadlines.gather
        };
        // A backup cannot expect the silent owner's contribution.
        let owner_rank = j;
        let expected = self.roster.contributors().len() - usize::from(own.as_backup);
        let have = own.count_excluding(own.as_backup.then_some(owner_rank));
        if have < expected && now < deadline {
            return;
        }
        let Some(range) = self.roster.span(j) else {
            return;
        };
        // A contribution with a NaN or infinity is found by the mean itself: it is refused,
        // named, and the span reduced again without it.
        let mut refused = Vec::new();
        let reduced = loop {
            let Some(own) = self.owned.get_mut(&j) else {
                return;
            };
            match reduce_span(own, range.len(), self.aggregation) {
                Ok(span) => {
                    own.done = true;
                    break span;
                }
                Err(bad) => {
                    own.drop_rank(bad.rank);
                    refused.push(bad);
                }
            }
        };
        for bad in refused {
            if let Some(&peer) = self.roster.contributors().get(bad.rank) {
                self.reject(peer, RejectReason::NonFinite { index: bad.index });
            }
        }
        let reduced = reduced.encoded_once(self.codec);
        // Only a robust rule's output could fail to encode (beyond fp16's range): the span then
        // stays missing and the round aborts, as every recomputation would fail alike.
        let reduced = match reduced {
            Ok(reduced) => reduced,
            Err(reason) => return self.reject(self.me, reason),
        };
        let body = reduced.to_body(self.roster.digest(), j);
        self.broadcast(&body);
        self.accept_reduced(j, reduced);
    }

    fn handle_reduced(&mut self, from: PeerId, r: Reduced) -> Result<(), RejectReason> {
        let j = span_index(&self.roster, r.span)?;
        let owner = self.roster.contributors()[j];
        let relayed = self.requested.contains(&j) && self.roster.role(from).is_some();
        if from != owner && self.roster.backup_owner(j) != Some(from) && !relayed {
            return Err(RejectReason::NotOwner { span: r.span });
        }
        let range = self
            .roster
            .span(j)
            .ok_or(RejectReason::NoSuchSpan { span: r.span })?;
        let values = received_values(
            self.codec,
            (r.codec, r.floats, &r.data, &r.encoded),
            range.len(),
            FiniteCheck::Now,
        )?;
        let span = ReducedSpan::from_wire(&r, self.roster.contributors().len(), values)
            .ok_or(RejectReason::BadContributors)?;
        self.accept_reduced(j, span);
        Ok(())
    }

    fn handle_span_request(&mut self, from: PeerId, span: u32) -> Result<(), RejectReason> {
        if self.roster.role(from).is_none() {
            return Err(RejectReason::NotContributor);
        }
        let j = span_index(&self.roster, span)?;
        if let Some(reduced) = &self.reduced[j] {
            let body = reduced.to_body(self.roster.digest(), j);
            self.send(from, body);
        }
        Ok(())
    }

    /// Stores the first reduced version of span `j`; later versions are ignored, so a member's
    /// result never changes once it has voted.
    fn accept_reduced(&mut self, j: usize, span: ReducedSpan) {
        if self.reduced[j].is_some() {
            return;
        }
        // A backup that receives the owner's span stands down and relays it.
        if let Some(own) = self.owned.get_mut(&j)
            && own.as_backup
            && !own.done
        {
            own.done = true;
            let requesters: Vec<PeerId> = own.requesters.iter().copied().collect();
            for to in requesters {
                self.send(to, span.to_body(self.roster.digest(), j));
            }
        }
        self.reduced[j] = Some(span);
        if self.reduced.iter().all(Option::is_some) && self.result.is_none() {
            let result = self.assemble();
            let digest = result.digest;
            self.result = Some(result);
            if self.my_rank.is_none() {
                self.broadcast(&Body::Vote(self.sealed_vote(digest)));
            }
            self.try_vote();
        }
    }

    fn assemble(&self) -> RoundResult {
        let spans: Vec<&ReducedSpan> = self.reduced.iter().flatten().collect();
        span::assemble(&self.roster, &spans)
    }

    /// A vote heard from its voter. Its seal must name the sender; it is verified only when it
    /// is forwarded (`SealBook::answer`), and by a receiver that lacks the vote.
    fn handle_vote(&mut self, from: PeerId, vote: Vote) -> Result<(), RejectReason> {
        match self.roster.role(from) {
            None => return Err(RejectReason::NotContributor),
            Some(Role::Observer) => return Ok(()),
            Some(Role::Contributor) => {}
        }
        if vote.seal.signer() != from {
            return Err(RejectReason::BadSeal);
        }
        match self.book.votes.get(&from) {
            Some((d, _)) if *d != vote.result => Err(RejectReason::Equivocation),
            Some(_) => Ok(()),
            None => {
                self.book.votes.insert(from, (vote.result, vote.seal));
                Ok(())
            }
        }
    }

    /// A commit notice commits nothing by itself: if it names voters this peer has not heard,
    /// ask the sender for their seals (a few senders per digest at most).
    fn handle_commit(&mut self, from: PeerId, notice: &CommitNotice) -> Result<(), RejectReason> {
        if self.roster.role(from) != Some(Role::Contributor) {
            return Err(RejectReason::NotContributor);
        }
        let missing: Vec<usize> = self
            .roster
            .contributors()
            .iter()
            .enumerate()
            .filter(|(rank, p)| bit(&notice.voters, *rank) && !self.book.votes.contains_key(p))
            .map(|(rank, _)| rank)
            .collect();
        // Honest contributors vote at most one digest each: notices for more distinct digests
        // than there are contributors are lies, and tracking them would grow without bound.
        let digests_max = self.roster.contributors().len();
        if missing.is_empty()
            || (!self.seal_requests.contains_key(&notice.result)
                && self.seal_requests.len() >= digests_max)
        {
            return Ok(());
        }
        let asked = self.seal_requests.entry(notice.result).or_default();
        if asked.len() >= SEAL_REQUESTS_PER_DIGEST || asked.contains(&from) {
            return Ok(());
        }
        asked.push(from);
        let voters = bitmap(missing, self.roster.contributors().len());
        let request = SealRequest {
            result: notice.result,
            voters,
        };
        self.send(from, Body::SealRequest(request));
        Ok(())
    }

    /// Seals this peer asked `from` for: each counts as if heard from its voter once it
    /// verifies. Seals of non-contributors, of voters already heard (voting the same, or
    /// otherwise: then a valid seal only proves the voter equivocated), add nothing.
    fn handle_seals(
        &mut self,
        from: PeerId,
        certificate: &Certificate,
    ) -> Result<(), RejectReason> {
        let asked = self
            .seal_requests
            .get(&certificate.result)
            .is_some_and(|peers| peers.contains(&from));
        if !asked {
            return Err(RejectReason::BadSeal);
        }
        let (roster, result) = (self.roster.digest(), certificate.result);
        let mut forged = false;
        for seal in &certificate.seals {
            let voter = seal.signer();
            if self.roster.role(voter) != Some(Role::Contributor) {
                forged = true;
                continue;
            }
            match self.book.votes.get(&voter) {
                Some(_) => {}
                None if seal.seals_vote(roster, result) => {
                    self.book.insert_verified(voter, result, *seal);
                }
                None => forged = true,
            }
        }
        if forged {
            return Err(RejectReason::BadSeal);
        }
        Ok(())
    }

    /// Finishes the round if the votes (heard, or fetched after commit notices) decide it. A decided digest is
    /// committed by every member holding its data; a contributor that voted or holds a result
    /// of its own but not the decided one finishes `Diverged`. One that has neither yet (its
    /// last spans may be behind the small votes on a slow downlink) waits until the round
    /// deadline.
    fn try_finish(&mut self) {
        if self.finished {
            return;
        }
        let Some(d) = self.decided() else {
            return;
        };
        let outcome = match self.held(d) {
            Some(result) => RoundOutcome::Committed(result.clone()),
            None if self.my_vote.is_some() || self.result.is_some() => {
                RoundOutcome::Diverged { committed: d }
            }
            None => return,
        };
        // A decided digest is a fact worth telling, with the voters counted (a peer missing
        // some of their votes fetches the seals).
        if self.my_rank.is_some() {
            let notice = CommitNotice {
                result: d,
                voters: self.book.voters(d),
            };
            self.broadcast(&Body::Commit(notice));
        }
        self.finish(outcome);
    }

    /// The digest that holds the quorum rule by votes (a roster quorum and a strict majority of
    /// the base committee), if any.
    fn decided(&self) -> Option<Digest> {
        let quorum = self.roster.quorum();
        let mut tally: BTreeMap<Digest, usize> = BTreeMap::new();
        for (d, _) in self.book.votes.values() {
            *tally.entry(*d).or_default() += 1;
        }
        tally
            .iter()
            .find(|(d, n)| **n >= quorum && self.has_committee_majority(**d))
            .map(|(d, _)| *d)
    }

    /// Whether a strict majority of the base committee voted for `digest`. An observer (no known
    /// committee) never decides by votes; an empty committee (the initial state) is satisfied.
    fn has_committee_majority(&self, digest: Digest) -> bool {
        match &self.committee {
            None => false,
            Some(c) => {
                let votes = c
                    .iter()
                    .filter(|p| self.book.votes.get(p).is_some_and(|(d, _)| *d == digest))
                    .count();
                if c.is_empty() {
                    let votes = self
                        .book
                        .votes
                        .values()
                        .filter(|(d, _)| *d == digest)
                        .count();
                    votes >= self.genesis_quorum
                } else {
                    votes > c.len() / 2
                }
            }
        }
    }

    fn finish(&mut self, outcome: RoundOutcome) {
        self.finished = true;
        self.outputs.push_back(RoundOutput::Finished(outcome));
    }

    /// `peer` announced a state or readiness past this round: it will not take part any more.
    /// The round aborts at once when the remaining contributors can no longer form a quorum,
    /// instead of waiting for its deadline.
    pub fn handle_desertion(&mut self, peer: PeerId) {
        if self.finished
            || self.roster.role(peer) != Some(Role::Contributor)
            || self.book.votes.contains_key(&peer)
        {
            return;
        }
        self.deserted.insert(peer);
        let remaining = self.roster.contributors().len() - self.deserted.len();
        let committee_left = self.committee.as_ref().is_none_or(|c| {
            let left = c.iter().filter(|p| !self.deserted.contains(p)).count();
            c.is_empty() || left > c.len() / 2
        });
        if remaining < self.roster.quorum() || !committee_left {
            self.finish(RoundOutcome::Aborted {
                reason: AbortReason::Deserted,
            });
        }
    }

    /// Fires every deadline at or before `now`; spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.finished {
            return;
        }
        if now >= self.deadlines.gather && !self.fired[0] {
            self.fired[0] = true;
            if let Some(rank) = self.my_rank {
                self.try_reduce(rank, now);
            }
        }
        if now >= self.deadlines.failover && !self.fired[1] {
            self.fired[1] = true;
            self.fail_over(now);
        }
        if now >= self.deadlines.backup && !self.fired[2] {
            self.fired[2] = true;
            let backups: Vec<usize> = self
                .owned
                .iter()
                .filter(|(_, o)| o.as_backup)
                .map(|(j, _)| *j)
                .collect();
            for j in backups {
                self.try_reduce(j, now);
            }
        }
        self.try_finish();
        if !self.finished && now >= self.deadlines.round {
            let committed = self.decided();
            let withheld =
                self.my_rank.is_some() && self.my_vote.is_none() && self.carry == Carry::Unknown;
            let outcome = match committed {
                Some(committed) => RoundOutcome::Diverged { committed },
                None if withheld => RoundOutcome::Aborted {
                    reason: AbortReason::Withheld,
                },
                None if self.result.is_none() => RoundOutcome::Aborted {
                    reason: AbortReason::MissingSpans,
                },
                None => RoundOutcome::Aborted {
                    reason: AbortReason::NoQuorum,
                },
            };
            self.finish(outcome);
        }
    }

    /// For every missing span: asks every member for the owner's version (someone may hold it)
    /// and sends our slice to the span's backup owner, which reduces only if nobody does.
    fn fail_over(&mut self, now: Timestamp) {
        let missing: Vec<usize> = (0..self.reduced.len())
            .filter(|&j| self.reduced[j].is_none())
            .collect();
        for j in missing {
            self.requested.insert(j);
            let span = u32::try_from(j).unwrap_or(u32::MAX);
            let roster = self.roster.digest();
            self.broadcast(&Body::SpanRequest(SpanRequest { roster, span }));
            let Some(backup) = self.roster.backup_owner(j) else {
                continue;
            };
            if backup == self.me {
                self.activate_backup(j);
                self.try_reduce(j, now);
                continue;
            }
            let (Some((weight, grad)), Some(range)) = (&self.local, self.roster.span(j)) else {
                continue;
            };
            let body = contribution(
                self.roster.digest(),
                j,
                *weight,
                self.codec,
                &Floats::slice(grad, range),
            );
            if let Ok(body) = body {
                self.send(backup, body);
            }
        }
    }

    /// The next output, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<RoundOutput> {
        self.outputs.pop_front()
    }

    /// The earliest pending deadline, or `None` once finished.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.finished {
            return None;
        }
        let d = self.deadlines;
        [d.gather, d.failover, d.backup]
            .into_iter()
            .zip(self.fired)
            .filter(|(_, fired)| !fired)
            .map(|(t, _)| t)
            .chain([d.round])
            .min()
    }
}

/// Why a round could not start with the given local inputs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// This peer is not in the roster.
    #[error("this peer is not a member of the roster")]
    NotMember,
    /// A contributor must bring a gradient.
    #[error("a contributor needs a local gradient")]
    MissingGradient,
    /// An observer brings none.
    #[error("an observer contributes no gradient")]
    ObserverWithGradient,
    /// The gradient does not match the roster's vector length, or has zero weight.
    #[error("gradient of {len} floats with weight {weight} does not fit the roster")]
    GradientShape {
        /// Local gradient length.
        len: usize,
        /// Local weight.
        weight: u32,
    },
}

fn contribution(
    roster: Digest,
    j: usize,
    weight: u32,
    codec: CodecKind,
    values: &Floats,
) -> Result<Body, RejectReason> {
    let (data, encoded) = encode_values(codec, values)?;
    Ok(Body::Contribution(Contribution {
        roster,
        span: u32::try_from(j).unwrap_or(u32::MAX),
        weight,
        codec,
        floats: u32::try_from(values.len()).unwrap_or(u32::MAX),
        data,
        encoded,
    }))
}

fn span_index(roster: &Roster, span: u32) -> Result<usize, RejectReason> {
    let j = span as usize;
    if j < roster.spans().len() {
        Ok(j)
    } else {
        Err(RejectReason::NoSuchSpan { span })
    }
}

/// Peers a member asks for the seals of one digest's votes, at most: the first notices' senders.
pub const SEAL_REQUESTS_PER_DIGEST: usize = 2;

/// The sealed votes of one round. A seal that came from its voter directly is kept unverified
/// (the transport authenticated the sender) until it is forwarded; one fetched from another peer
/// is verified before it counts. So an honest peer never forwards a seal that does not verify,
/// and a peer that sends one is lying. Kept by the peer past the round's end, so members that
/// missed votes can fetch seals.
#[derive(Debug, Clone)]
pub struct SealBook {
    roster: Arc<Roster>,
    votes: BTreeMap<PeerId, (Digest, Seal)>,
    /// Voters whose seal has been verified.
    verified: BTreeSet<PeerId>,
    /// Requests answered: one answer per requester and digest.
    answered: BTreeSet<(PeerId, Digest)>,
}

impl SealBook {
    fn new(roster: Arc<Roster>) -> Self {
        Self {
            roster,
            votes: BTreeMap::new(),
            verified: BTreeSet::new(),
            answered: BTreeSet::new(),
        }
    }

    /// Records a vote whose seal was verified.
    fn insert_verified(&mut self, voter: PeerId, result: Digest, seal: Seal) {
        self.votes.insert(voter, (result, seal));
        self.verified.insert(voter);
    }

    /// The contributors whose votes for `result` this book holds, in rank order.
    pub(crate) fn voters_of(&self, result: Digest) -> Vec<PeerId> {
        self.votes
            .iter()
            .filter(|(_, (d, _))| *d == result)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Bitmap over contributor ranks of the votes for `result` held.
    fn voters(&self, result: Digest) -> Vec<u8> {
        let ranks = self
            .roster
            .contributors()
            .iter()
            .enumerate()
            .filter(|(_, p)| self.votes.get(p).is_some_and(|(d, _)| *d == result))
            .map(|(rank, _)| rank);
        bitmap(ranks, self.roster.contributors().len())
    }

    /// The seals `request` asks for that this book holds and that verify (checked here once each,
    /// the first time one is forwarded), once per requester and digest; only members of the
    /// round are answered, and only about digests someone voted for here (so `answered` holds
    /// at most members × contributors entries, whatever requesters send).
    pub(crate) fn answer(&mut self, from: PeerId, request: &SealRequest) -> Option<Certificate> {
        let voted = self.votes.values().any(|(d, _)| *d == request.result);
        if !voted
            || self.roster.role(from).is_none()
            || !self.answered.insert((from, request.result))
        {
            return None;
        }
        let roster = self.roster.digest();
        let mut seals = Vec::new();
        for (rank, voter) in self.roster.contributors().iter().enumerate() {
            let Some((digest, seal)) = self.votes.get(voter) else {
                continue;
            };
            if !bit(&request.voters, rank) || *digest != request.result {
                continue;
            }
            if self.verified.contains(voter) || seal.seals_vote(roster, request.result) {
                self.verified.insert(*voter);
                seals.push(*seal);
            }
        }
        (!seals.is_empty()).then_some(Certificate {
            result: request.result,
            seals,
        })
    }
}

/// A bitmap of `len` bits with `ranks` set (bit `i` of byte `i / 8`).
fn bitmap(ranks: impl IntoIterator<Item = usize>, len: usize) -> Vec<u8> {
    let mut bits = vec![0u8; len.div_ceil(8)];
    for rank in ranks {
        if let Some(byte) = bits.get_mut(rank / 8) {
            *byte |= 1 << (rank % 8);
        }
    }
    bits
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

#[cfg(test)]
mod tests;
