//! State sync: how a joiner (or a peer that diverged) gets the mesh's committed state.
//!
//! A committed state is a byte string (the shell serializes parameters and optimizer state) cut
//! into fixed-size chunks. Its digest is the blake3 of its manifest — the total size, the chunk
//! size and every chunk's blake3 — so a joiner checks a manifest from any donor against the
//! digest the mesh committed, and then each chunk against the manifest, as it arrives. Chunks are
//! fetched from several donors at once; a donor that sends a bad manifest or chunk, says it no
//! longer has the state, or does not answer in time is dropped and its chunks are fetched
//! elsewhere. The chunk size is a mesh-wide parameter: it is part of the digest, and so is the
//! state's committee (the contributors of the round that produced it), which a joiner needs to
//! judge the quorums of the rounds it will take part in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use thiserror::Error;

use crate::config::PeerConfig;
use crate::ids::{Digest, PeerId, RoundId};
use crate::keys::Seal;
use crate::time::Timestamp;
use crate::wire::{
    Body, LineageLink, STATE_CHUNKS_MAX, StateChunk, StateManifest, StateRequest, StateSummary,
};

/// A committed state held by a peer, ready to be served to joiners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSnapshot {
    summary: StateSummary,
    /// [`content_digest`] of the manifest.
    content: Digest,
    bytes: Arc<[u8]>,
    manifest: StateManifest,
}

/// Why a state cannot be snapshotted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The state needs more chunks than a manifest may list.
    #[error("state of {bytes} bytes needs more than {STATE_CHUNKS_MAX} chunks of {chunk_bytes}")]
    TooLarge {
        /// State size.
        bytes: usize,
        /// Chunk size.
        chunk_bytes: u32,
    },
}

impl StateSnapshot {
    /// Chunks and hashes `bytes`, the state after applying `round`, whose contributors were
    /// `committee` (empty for the initial state).
    ///
    /// # Errors
    /// [`SnapshotError::TooLarge`] if the state needs more than [`STATE_CHUNKS_MAX`] chunks.
    pub fn new(
        round: crate::ids::RoundId,
        committee: Vec<PeerId>,
        bytes: Arc<[u8]>,
        chunk_bytes: u32,
    ) -> Result<Self, SnapshotError> {
        let chunk = chunk_bytes.max(1) as usize;
        if bytes.len().div_ceil(chunk) > STATE_CHUNKS_MAX {
            return Err(SnapshotError::TooLarge {
                bytes: bytes.len(),
                chunk_bytes,
            });
        }
        let chunks: Vec<Digest> = bytes.chunks(chunk).map(Digest::of).collect();
        let content = content_digest(bytes.len() as u64, chunk_bytes, &chunks);
        let manifest = StateManifest {
            total_bytes: bytes.len() as u64,
            chunk_bytes,
            chunks,
            committee,
            attestations: Vec::new(),
            lineage: Vec::new(),
        };
        let summary = StateSummary {
            round,
            digest: state_digest(content, &manifest.committee),
        };
        Ok(Self {
            summary,
            content,
            bytes,
            manifest,
        })
    }

    /// The same bytes re-founded (docs/protocol.md §5.6): the same round count in the next epoch,
    /// without a committee, like an initial state. Every peer holding this state derives the
    /// same re-founded state, digest included, without exchanging a byte.
    #[must_use]
    pub fn refounded(&self) -> Self {
        let manifest = StateManifest {
            committee: Vec::new(),
            attestations: Vec::new(),
            lineage: Vec::new(),
            ..self.manifest.clone()
        };
        Self {
            summary: StateSummary {
                round: self.summary.round.next_epoch(),
                digest: state_digest(self.content, &manifest.committee),
            },
            content: self.content,
            bytes: Arc::clone(&self.bytes),
            manifest,
        }
    }

    /// The digest protocol version 4 gave this state (blake3 over the manifest's fields in one
    /// pass), so that a checkpoint a node of that version wrote still resumes.
    #[must_use]
    pub fn version4_digest(&self) -> Digest {
        let m = &self.manifest;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"gradmesh-state");
        hasher.update(&m.total_bytes.to_le_bytes());
        hasher.update(&m.chunk_bytes.to_le_bytes());
        for d in &m.chunks {
            hasher.update(&d.0);
        }
        hasher.update(&(m.committee.len() as u64).to_le_bytes());
        for p in &m.committee {
            hasher.update(&p.0);
        }
        hasher.finalize().into()
    }

    /// What the state's digest is made of besides its committee ([`content_digest`]).
    #[must_use]
    pub const fn content(&self) -> Digest {
        self.content
    }

    /// Round and digest.
    #[must_use]
    pub const fn summary(&self) -> StateSummary {
        self.summary
    }

    /// The state bytes.
    #[must_use]
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// The contributors of the round that produced this state.
    #[must_use]
    pub fn committee(&self) -> &[PeerId] {
        &self.manifest.committee
    }

    /// Answers a joiner's request.
    #[must_use]
    pub fn serve(&self, request: StateRequest) -> Body {
        match request {
            StateRequest::Manifest => Body::StateManifest(self.manifest.clone()),
            StateRequest::Chunk(index) => {
                let chunk = self.manifest.chunk_bytes as usize;
                let start = (index as usize).saturating_mul(chunk);
                match self.bytes.get(start..(start + chunk).min(self.bytes.len())) {
                    Some(data) if start < self.bytes.len() => Body::StateChunk(StateChunk {
                        index,
                        bytes: u32::try_from(data.len()).unwrap_or(u32::MAX),
                        data: Arc::from(data),
                    }),
                    _ => Body::StateUnavailable,
                }
            }
        }
    }
}

/// The digest of a state: blake3 over its manifest ([`state_digest`] of its content and
/// committee).
#[must_use]
pub fn manifest_digest(manifest: &StateManifest) -> Digest {
    let content = content_digest(manifest.total_bytes, manifest.chunk_bytes, &manifest.chunks);
    state_digest(content, &manifest.committee)
}

/// blake3 of a state's size, chunk size and chunk digests: the part of its digest a lineage
/// link carries instead of every chunk digest.
#[must_use]
pub fn content_digest(total_bytes: u64, chunk_bytes: u32, chunks: &[Digest]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"gradmesh-state-content");
    hasher.update(&total_bytes.to_le_bytes());
    hasher.update(&chunk_bytes.to_le_bytes());
    hasher.update(&(chunks.len() as u64).to_le_bytes());
    for d in chunks {
        hasher.update(&d.0);
    }
    hasher.finalize().into()
}

/// A state's digest from its content digest and its committee.
#[must_use]
pub fn state_digest(content: Digest, committee: &[PeerId]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"gradmesh-state");
    hasher.update(&content.0);
    hasher.update(&(committee.len() as u64).to_le_bytes());
    for p in committee {
        hasher.update(&p.0);
    }
    hasher.finalize().into()
}

/// The summary of a lineage link's state (its digest computed from what the link carries).
#[must_use]
pub fn link_summary(link: &LineageLink) -> StateSummary {
    StateSummary {
        round: link.round,
        digest: state_digest(link.content, &link.committee),
    }
}

/// Why a donor was dropped.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DonorFault {
    /// Its manifest does not hash to the committed digest, or is inconsistent.
    #[error("manifest does not match the committed digest")]
    BadManifest,
    /// A chunk does not match the manifest.
    #[error("chunk {0} does not match the manifest")]
    BadChunk(u32),
    /// It no longer holds the state.
    #[error("donor no longer holds the state")]
    Unavailable,
    /// It did not answer in time.
    #[error("donor did not answer in time")]
    Timeout,
    /// It sent something that was not asked of it.
    #[error("unsolicited response")]
    Unsolicited,
    /// It served (part of) a state that matches its digest but that the shell could not load:
    /// bytes no committed state holds (`Peer::handle_state_refused`).
    #[error("served a state that does not load")]
    Unloadable,
    /// Its manifest carries an attestation that does not verify: donors verify what they
    /// forward, so it lied.
    #[error("forwarded an attestation that does not verify")]
    BadAttestation,
    /// Too few of the peers this joiner trusts attested the state ([`Vouchers`]). Not proof of
    /// a lie (an honest donor may not have heard enough attestations yet); the state is not
    /// fetched from this donor.
    #[error("too few trusted peers attested the state")]
    Unvouched,
}

/// Whose attestations make a joiner fetch a state (docs/protocol.md §3.5, "Attested states").
/// A state is fetched only if more members of one of `committees` attested it than a
/// dishonest minority of it can count (⌊(|C| − 1)/2⌋ + 1 of them, so at least one honest
/// member holds it, and honest members hold only committed states) — the committee of the
/// state the joiner holds, or of the target itself if that committee holds a strict majority
/// of the joiner's (`chain`: it can descend from the joiner's state, and while the honest
/// majority of the joiner's committee is alive, `Peer::sync_targets` does not pick a state
/// that majority does not announce); or if one of `witnesses` attested it, the voters of a
/// result the joiner saw decided on its own state without holding it, for a state no later
/// than that decision (such a voter vouches for the apply: the price of not fetching the
/// result itself); or, for a joiner without a committee
/// (no state yet, the initial state, or committees too few of whose members attest), a strict
/// majority of `live`, the peers it hears announcing a state: then forging a state takes more
/// identities than the joiner hears honest peers. A founder still on the initial state also takes `genesis_quorum` live
/// attesters, what committing the first round took: with few founders, one may have
/// committed rounds the others missed, and the others hearing it stay on the initial state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vouchers {
    /// Committees the joiner trusts, each without the joiner and with its full size (the
    /// joiner included: thresholds are of the full committee).
    pub committees: Vec<(BTreeSet<PeerId>, usize)>,
    /// Voters of a result the joiner saw decided on the state it holds, without the joiner.
    pub witnesses: BTreeSet<PeerId>,
    /// The round that first decided the witnessed result: a witness vouches only for a state
    /// no later (a voter cannot vouch for a state far ahead on the strength of that vote).
    pub witnessed_until: RoundId,
    /// The joiner's state has not changed for a few round timeouts while it kept failing to
    /// fetch a newer one: two live attesters are then enough. A backstop for liveness when
    /// too few holders of the mesh's state are left to satisfy the rules above (a partition
    /// let two of seven commit a round, say); one forger alone still vouches for nothing.
    pub backstop: bool,
    /// The joiner and the full committee of the state it holds: a target whose committee holds
    /// a strict majority of it descends from it, and that committee vouches as its own; and
    /// where a lineage ([`Vouchers::chains`]) starts.
    pub chain: Option<(PeerId, BTreeSet<PeerId>)>,
    /// The round of the state the joiner holds: lineage links up to it say nothing new.
    pub held_round: RoundId,
    /// Live peers announcing a state (joining or not), without the joiner.
    pub live: BTreeSet<PeerId>,
    /// For a joiner on the initial state, the founders' genesis quorum; 0 otherwise.
    pub genesis_quorum: usize,
}

impl Vouchers {
    /// Whether `attestations` of `target` vouch for it: `Err` if one does not verify.
    ///
    /// # Errors
    /// [`DonorFault::BadAttestation`] if an attestation does not verify.
    pub fn check(
        &self,
        target: StateSummary,
        committee: &[PeerId],
        attestations: &[crate::keys::Seal],
    ) -> Result<bool, DonorFault> {
        // The target's own committee counts when it descends from ours: it holds a strict
        // majority of our committee, as any committee of a round on our state does.
        let successor: Option<(BTreeSet<PeerId>, usize)> =
            self.chain.as_ref().and_then(|(me, ours)| {
                let theirs: BTreeSet<PeerId> = committee.iter().copied().collect();
                let descends =
                    !ours.is_empty() && theirs.intersection(ours).count() > ours.len() / 2;
                descends.then(|| {
                    let len = theirs.len();
                    (theirs.into_iter().filter(|p| p != me).collect(), len)
                })
            });
        let mut signers = BTreeSet::new();
        for seal in attestations {
            let signer = seal.signer();
            let counts = self.live.contains(&signer)
                || self.witnesses.contains(&signer)
                || successor.as_ref().is_some_and(|(c, _)| c.contains(&signer))
                || self.committees.iter().any(|(c, _)| c.contains(&signer));
            if !counts || signers.contains(&signer) {
                continue;
            }
            if !seal.seals_state(target.round, target.digest) {
                return Err(DonorFault::BadAttestation);
            }
            signers.insert(signer);
        }
        let by_committee =
            self.committees.iter().chain(&successor).any(|(c, len)| {
                beyond_a_dishonest_minority(c.intersection(&signers).count(), *len)
            });
        let by_live = self.live.intersection(&signers).count();
        Ok(by_committee
            || (target.round <= self.witnessed_until && !self.witnesses.is_disjoint(&signers))
            || (self.counts_live() && !self.live.is_empty() && by_live > self.live.len() / 2)
            || (self.genesis_quorum > 0 && by_live >= self.genesis_quorum)
            || (self.backstop && by_live >= 2))
    }

    /// Whether a strict majority of the live peers vouches: for a joiner without a committee
    /// (it has nobody else to trust), and for a member only once it is stuck (`backstop`): a
    /// member checks a state against its committee, directly or along a lineage
    /// ([`Vouchers::chains`]), so a crowd of fresh identities does not move it.
    fn counts_live(&self) -> bool {
        self.chain.is_none() || self.backstop
    }

    /// Whether `lineage` chains the committee of the joiner's state to `target` (attested by
    /// `attestations`): walking the links oldest first, a link more members of the trusted
    /// committee attested than a dishonest minority of it can count is a committed state
    /// (at least one honest member holds it), so its committee — bound by its digest — is
    /// trusted next; the target must be vouched for the same way by the last committee
    /// trusted. So a peer whose committee has since been replaced, member by member, follows
    /// the mesh without counting live peers, and a dishonest minority of every committee on
    /// the way cannot make it fetch anything else.
    ///
    /// # Errors
    /// [`DonorFault::BadAttestation`] if a counted attestation does not verify.
    pub fn chains(
        &self,
        target: StateSummary,
        attestations: &[Seal],
        lineage: &[LineageLink],
    ) -> Result<bool, DonorFault> {
        let Some((me, ours)) = &self.chain else {
            return Ok(false);
        };
        let mut trusted = ours.clone();
        let mut at = self.held_round;
        let mut budget = LINEAGE_SEALS_CHECKED_MAX;
        for link in lineage {
            if link.round <= at || link.round >= target.round || link.committee.is_empty() {
                continue;
            }
            let state = link_summary(link);
            if vouched_by(&trusted, *me, state, &link.attestations, &mut budget)? {
                trusted = link.committee.iter().copied().collect();
                at = link.round;
            }
        }
        vouched_by(&trusted, *me, target, attestations, &mut budget)
    }
}

/// Most attestations one lineage walk verifies ([`Vouchers::chains`]): a donor padding its
/// links with seals that verify cannot make a joiner spend more than ~0.1 s on them.
pub const LINEAGE_SEALS_CHECKED_MAX: usize = 2048;

/// Whether `count` members of a committee of `len` are more than a dishonest minority of it
/// can be (⌊(len − 1)/2⌋), so that at least one of them is honest; never for an empty one.
#[must_use]
pub fn beyond_a_dishonest_minority(count: usize, len: usize) -> bool {
    len > 0 && count > (len - 1) / 2
}

/// Whether more members of `committee` (the joiner `me` not counted, the committee's full size
/// counted) attested `state` in `seals` than a dishonest minority of it can count.
fn vouched_by(
    committee: &BTreeSet<PeerId>,
    me: PeerId,
    state: StateSummary,
    seals: &[Seal],
    budget: &mut usize,
) -> Result<bool, DonorFault> {
    let mut signers = BTreeSet::new();
    for seal in seals {
        let signer = seal.signer();
        if signer == me || !committee.contains(&signer) || signers.contains(&signer) {
            continue;
        }
        let Some(left) = budget.checked_sub(1) else {
            return Ok(false);
        };
        *budget = left;
        if !seal.seals_state(state.round, state.digest) {
            return Err(DonorFault::BadAttestation);
        }
        signers.insert(signer);
        if beyond_a_dishonest_minority(signers.len(), committee.len()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What a sync asks of its peer machine.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutput {
    /// Send a request to a donor (the envelope's round is the target state's round).
    Send {
        /// Donor.
        to: PeerId,
        /// The request.
        body: Body,
    },
    /// A donor misbehaved and is no longer used.
    DonorDropped {
        /// Donor.
        peer: PeerId,
        /// Why.
        fault: DonorFault,
    },
    /// The state arrived and verified.
    Done(StateSnapshot),
    /// Every donor was dropped.
    Failed,
}

/// The joiner side of a state transfer.
#[derive(Debug)]
pub struct StateSync {
    target: StateSummary,
    vouchers: Vouchers,
    donors: Vec<PeerId>,
    dropped: BTreeSet<PeerId>,
    /// Donors whose manifest or chunks were accepted.
    served: BTreeSet<PeerId>,
    manifest: Option<StateManifest>,
    chunks: Vec<Option<Arc<[u8]>>>,
    /// Outstanding requests: `(donor, what) -> deadline`.
    inflight: BTreeMap<(PeerId, Want), Timestamp>,
    queue: VecDeque<u32>,
    request_timeout: core::time::Duration,
    per_donor: usize,
    finished: bool,
    outputs: VecDeque<SyncOutput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Want {
    Manifest,
    Chunk(u32),
}

impl StateSync {
    /// Starts fetching `target` from `donors` (in the order tried for the manifest), once a
    /// donor's manifest shows that `vouchers` attested it.
    #[must_use]
    pub fn start(
        config: &PeerConfig,
        target: StateSummary,
        vouchers: Vouchers,
        donors: Vec<PeerId>,
        now: Timestamp,
    ) -> Self {
        let mut sync = Self {
            target,
            vouchers,
            donors,
            dropped: BTreeSet::new(),
            served: BTreeSet::new(),
            manifest: None,
            chunks: Vec::new(),
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            request_timeout: config.sync_request_timeout,
            per_donor: config.sync_inflight_per_donor,
            finished: false,
            outputs: VecDeque::new(),
        };
        sync.request_manifest(now);
        sync
    }

    /// The state being fetched.
    #[must_use]
    pub const fn target(&self) -> StateSummary {
        self.target
    }

    /// Whether the sync succeeded or failed.
    #[must_use]
    pub const fn is_finished(&self) -> bool {
        self.finished
    }

    fn live_donors(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.donors
            .iter()
            .copied()
            .filter(|d| !self.dropped.contains(d))
    }

    fn request(&mut self, now: Timestamp, to: PeerId, want: Want) {
        let request = match want {
            Want::Manifest => StateRequest::Manifest,
            Want::Chunk(i) => StateRequest::Chunk(i),
        };
        self.inflight.insert((to, want), now + self.request_timeout);
        self.outputs.push_back(SyncOutput::Send {
            to,
            body: Body::StateRequest(request),
        });
    }

    fn request_manifest(&mut self, now: Timestamp) {
        let next = self.live_donors().next();
        match next {
            Some(donor) => self.request(now, donor, Want::Manifest),
            None => self.fail(),
        }
    }

    fn fail(&mut self) {
        if !self.finished {
            self.finished = true;
            self.outputs.push_back(SyncOutput::Failed);
        }
    }

    fn drop_donor(&mut self, now: Timestamp, peer: PeerId, fault: DonorFault) {
        if !self.dropped.insert(peer) {
            return;
        }
        self.outputs
            .push_back(SyncOutput::DonorDropped { peer, fault });
        let lost: Vec<Want> = self
            .inflight
            .keys()
            .filter(|(p, _)| *p == peer)
            .map(|(_, w)| *w)
            .collect();
        for want in lost {
            self.inflight.remove(&(peer, want));
            match want {
                Want::Manifest => self.request_manifest(now),
                Want::Chunk(i) => self.queue.push_front(i),
            }
        }
        self.schedule(now);
    }

    /// Hands out queued chunks to donors with free request slots, round-robin.
    fn schedule(&mut self, now: Timestamp) {
        if self.finished || self.manifest.is_none() {
            return;
        }
        let donors: Vec<PeerId> = self.live_donors().collect();
        if donors.is_empty() {
            self.fail();
            return;
        }
        loop {
            let mut assigned = false;
            for &donor in &donors {
                let busy = self.inflight.keys().filter(|(p, _)| *p == donor).count();
                if busy >= self.per_donor {
                    continue;
                }
                let Some(i) = self.queue.pop_front() else {
                    return;
                };
                self.request(now, donor, Want::Chunk(i));
                assigned = true;
            }
            if !assigned {
                return;
            }
        }
    }

    /// Applies a donor's response.
    pub fn handle_message(&mut self, now: Timestamp, from: PeerId, body: Body) {
        if self.finished || self.dropped.contains(&from) {
            return;
        }
        match body {
            Body::StateManifest(m) => self.handle_manifest(now, from, m),
            Body::StateChunk(c) => self.handle_chunk(now, from, c),
            Body::StateUnavailable => self.drop_donor(now, from, DonorFault::Unavailable),
            _ => {}
        }
    }

    fn handle_manifest(&mut self, now: Timestamp, from: PeerId, m: StateManifest) {
        if self.inflight.remove(&(from, Want::Manifest)).is_none() {
            return self.drop_donor(now, from, DonorFault::Unsolicited);
        }
        let chunk = u64::from(m.chunk_bytes.max(1));
        let consistent =
            m.chunk_bytes > 0 && m.total_bytes.div_ceil(chunk) == m.chunks.len() as u64;
        if !consistent || manifest_digest(&m) != self.target.digest {
            self.drop_donor(now, from, DonorFault::BadManifest);
            if self.manifest.is_none() {
                self.request_manifest(now);
            }
            return;
        }
        if self.manifest.is_some() {
            return;
        }
        let vouched = self
            .vouchers
            .check(self.target, &m.committee, &m.attestations)
            .and_then(|by_rules| {
                if by_rules {
                    return Ok(true);
                }
                self.vouchers
                    .chains(self.target, &m.attestations, &m.lineage)
            });
        let refused = match vouched {
            Ok(true) => None,
            Ok(false) => Some(DonorFault::Unvouched),
            Err(fault) => Some(fault),
        };
        if let Some(fault) = refused {
            self.drop_donor(now, from, fault);
            self.request_manifest(now);
            return;
        }
        self.chunks = vec![None; m.chunks.len()];
        self.queue = (0..u32::try_from(m.chunks.len()).unwrap_or(0)).collect();
        self.manifest = Some(m);
        self.served.insert(from);
        self.schedule(now);
        self.try_complete();
    }

    fn handle_chunk(&mut self, now: Timestamp, from: PeerId, c: StateChunk) {
        if self
            .inflight
            .remove(&(from, Want::Chunk(c.index)))
            .is_none()
        {
            return self.drop_donor(now, from, DonorFault::Unsolicited);
        }
        let Some(m) = &self.manifest else { return };
        let i = c.index as usize;
        let chunk = m.chunk_bytes as usize;
        let expected_len = (m.total_bytes as usize)
            .saturating_sub(i * chunk)
            .min(chunk);
        let good = m.chunks.get(i).is_some_and(|d| *d == Digest::of(&c.data))
            && c.data.len() == expected_len;
        if !good {
            self.queue.push_front(c.index);
            return self.drop_donor(now, from, DonorFault::BadChunk(c.index));
        }
        self.chunks[i] = Some(c.data);
        self.served.insert(from);
        self.schedule(now);
        self.try_complete();
    }

    fn try_complete(&mut self) {
        if self.finished || self.chunks.iter().any(Option::is_none) {
            return;
        }
        let Some(m) = &self.manifest else { return };
        let mut bytes = Vec::with_capacity(usize::try_from(m.total_bytes).unwrap_or(0));
        for c in self.chunks.iter().flatten() {
            bytes.extend_from_slice(c);
        }
        let snapshot = StateSnapshot::new(
            self.target.round,
            m.committee.clone(),
            bytes.into(),
            m.chunk_bytes,
        );
        self.finished = true;
        match snapshot {
            Ok(s) if s.summary() == self.target => self.outputs.push_back(SyncOutput::Done(s)),
            _ => self.outputs.push_back(SyncOutput::Failed),
        }
    }

    /// The donors whose manifest or chunks were accepted, in id order.
    #[must_use]
    pub fn served_by(&self) -> Vec<PeerId> {
        self.served.iter().copied().collect()
    }

    /// The target state's committee, once a manifest verified against the target digest.
    #[must_use]
    pub fn committee(&self) -> Option<&[PeerId]> {
        self.manifest.as_ref().map(|m| m.committee.as_slice())
    }

    /// Drops donors whose requests are overdue at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let overdue: BTreeSet<PeerId> = self
            .inflight
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|((p, _), _)| *p)
            .collect();
        for peer in overdue {
            self.drop_donor(now, peer, DonorFault::Timeout);
        }
    }

    /// The next output, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<SyncOutput> {
        self.outputs.pop_front()
    }

    /// The earliest request deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.finished {
            None
        } else {
            self.inflight.values().min().copied()
        }
    }
}

#[cfg(test)]
mod tests;
