//! Roster agreement: which peer proposes the roster of a round, when, and whom it names.
//!
//! Candidates are the peers this peer believes alive and not joining, ordered by [`leader_key`].
//! The first candidate proposes once the collect window has passed since it became ready, or at
//! once when every candidate has announced ready on its state; candidate `k` waits `k` extra
//! leader-failover periods, so a silent leader is replaced without any vote. The roster names as
//! contributors the candidates ready on the leader's state, and every joiner as observer.
//!
//! A roster whose contributors do not include a strict majority of the base state's committee
//! could never commit (see [`crate::reduce`]), so no leader proposes one and no peer accepts
//! one: the leader keeps waiting for committee members to become ready. When a majority of a
//! committee is gone at once the mesh stops committing rather than risk two histories. A peer accepts
//! the first valid roster naming it for a round it has not started. Two peers that accept
//! different rosters for the same round compute different result digests, so at most one of the
//! rosters can gather a majority of votes: roster agreement needs no extra round trip for safety.

use crate::ids::{PeerId, RoundId};
use crate::roster::leader_key;
use crate::time::Timestamp;
use crate::wire::{Body, Member, Proposal, ROSTER_MEMBERS_MAX, Role};

use super::{Event, Peer, Stage};

/// Most observers (peers asking to join) a leader names in one roster. Observers cost the round
/// (each gets every reduced span); joiners sync state from donors without a roster, so a few
/// slots, rotated from round to round, are enough.
pub(super) const OBSERVERS_PER_ROUND_MAX: usize = 8;

/// The leader order last computed: for `round` over the candidate set `members` (sorted by
/// id), best first. Every use checks both, so it is never stale; it saves hashing every
/// candidate's [`leader_key`] on each timer and message.
#[derive(Debug, Clone, Default)]
pub(super) struct LeaderOrder {
    round: RoundId,
    members: Vec<PeerId>,
    order: Vec<PeerId>,
}

impl LeaderOrder {
    /// `members` (sorted by id) ordered for leading `round`, best first.
    fn of(round: RoundId, members: Vec<PeerId>) -> Self {
        let mut order = members.clone();
        order.sort_by_cached_key(|p| leader_key(round, *p));
        Self {
            round,
            members,
            order,
        }
    }

    fn is_for(&self, round: RoundId, members: &[PeerId]) -> bool {
        self.round == round && self.members == members
    }
}

impl Peer {
    /// The peers that may lead the next round (known, not joining, and this peer), by id.
    fn candidate_set(&self) -> Vec<PeerId> {
        let mut set: Vec<PeerId> = self
            .known
            .iter()
            .filter(|(_, k)| !k.announce.wants_to_join)
            .map(|(p, _)| *p)
            .collect();
        let at = set.binary_search(&self.me).unwrap_or_else(|i| i);
        if set.get(at) != Some(&self.me) {
            set.insert(at, self.me);
        }
        set
    }

    /// Candidates for leading the next round, best first.
    fn leader_candidates(&self) -> Vec<PeerId> {
        let members = self.candidate_set();
        if self.leader_order.is_for(self.next_round, &members) {
            return self.leader_order.order.clone();
        }
        LeaderOrder::of(self.next_round, members).order
    }

    /// Recomputes the cached leader order if the round or the candidates changed.
    fn refresh_leader_order(&mut self) {
        let members = self.candidate_set();
        if !self.leader_order.is_for(self.next_round, &members) {
            self.leader_order = LeaderOrder::of(self.next_round, members);
        }
    }

    /// When this peer will propose if no roster reaches it first.
    pub(super) fn propose_at(&self) -> Option<Timestamp> {
        let Stage::Ready { since } = self.stage else {
            return None;
        };
        if self.leaving {
            return None;
        }
        if self.round.is_some() || self.propose_blocked || self.proposed == Some(self.next_round) {
            return None;
        }
        let rank = self
            .leader_candidates()
            .iter()
            .position(|p| *p == self.me)?;
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        let start = since.max(self.discovery_until);
        Some(start + self.config.collect_window + self.config.leader_failover * rank)
    }

    pub(super) fn maybe_propose(&mut self, now: Timestamp) {
        self.refresh_leader_order();
        let Some(at) = self.propose_at() else { return };
        let candidates = self.leader_candidates();
        let round = self.next_round;
        let first = candidates.first() == Some(&self.me);
        let all_ready = candidates.iter().filter(|p| **p != self.me).all(|p| {
            self.known.get(p).is_some_and(|k| {
                k.announce.ready_for == Some(round) && k.announce.state == self.state
            })
        });
        if now >= at || (first && all_ready && now >= self.discovery_until) {
            self.propose(now);
        }
    }

    /// Whether the contributors in `members` include a strict majority of our base committee.
    pub(super) fn holds_committee_majority(&self, members: &[Member]) -> bool {
        let Some(committee) = self.state.and_then(|s| self.snapshots.get(&s.round)) else {
            return false;
        };
        let committee = committee.committee();
        let present = committee
            .iter()
            .filter(|p| {
                members
                    .binary_search_by(|m| m.peer.cmp(p))
                    .is_ok_and(|i| members[i].role == Role::Contributor)
            })
            .count();
        if committee.is_empty() {
            let contributors = members
                .iter()
                .filter(|m| m.role == Role::Contributor)
                .count();
            contributors >= self.config.genesis_quorum
        } else {
            present > committee.len() / 2
        }
    }

    fn propose(&mut self, now: Timestamp) {
        let (Some(base), Some(gradient)) = (self.state, &self.gradient) else {
            return;
        };
        let round = self.next_round;
        let me = Member {
            peer: self.me,
            role: Role::Contributor,
            bandwidth_bytes_per_s: self.profile.bandwidth_bytes_per_s,
        };
        let mut members = vec![me];
        for (peer, k) in &self.known {
            let a = &k.announce;
            let role = if a.wants_to_join {
                Role::Observer
            } else if a.state == Some(base) && a.ready_for == Some(round) {
                Role::Contributor
            } else {
                continue;
            };
            members.push(Member {
                peer: *peer,
                role,
                bandwidth_bytes_per_s: a.bandwidth_bytes_per_s,
            });
        }
        // Contributors first; then at most `OBSERVERS_PER_ROUND_MAX` observers, a different
        // subset each round (ascending `leader_key`), so that a flood of fresh keys asking to
        // join cannot fill rosters and slow every round; then the wire bound; then rank order.
        // A joiner does not need a roster to sync, only to see results while it syncs.
        members.sort_by_key(|m| (m.role, leader_key(round, m.peer)));
        let contributors = members
            .iter()
            .filter(|m| m.role == Role::Contributor)
            .count();
        members.truncate(ROSTER_MEMBERS_MAX.min(contributors + OBSERVERS_PER_ROUND_MAX));
        members.sort_by_key(|m| m.peer);
        let contributors = contributors.min(members.len());
        let observers = members.len() - contributors;
        if !self.holds_committee_majority(&members) {
            // Wait for the next announcement: it may bring a committee member.
            self.propose_blocked = true;
            return;
        }
        let proposal = Proposal {
            base,
            vector_len: gradient.data.len() as u64,
            members,
        };
        for m in &proposal.members {
            if m.peer != self.me {
                self.send(m.peer, round, Body::Proposal(proposal.clone()));
            }
        }
        self.proposed = Some(round);
        self.event(Event::Proposed {
            round,
            contributors,
            observers,
        });
        let me = self.me;
        self.handle_proposal(now, me, round, &proposal);
    }
}
