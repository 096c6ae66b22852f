//! Rosters: who takes part in a round, in which role, and which span of the flat vector each
//! contributor owns.
//!
//! A roster is built only from a validated [`Proposal`], so everything a round machine reads from
//! it (ranks, spans, quorum) is internally consistent: members are sorted by peer id without
//! duplicates, there is at least one contributor, and every span fits the wire bound.

use std::ops::Range;

use serde::Serialize;
use thiserror::Error;

use crate::ids::{Digest, PeerId, RoundId};
use crate::wire::{Member, Proposal, ROSTER_MEMBERS_MAX, Role, SPAN_FLOATS_MAX, StateSummary};

/// Why a proposal cannot become a roster.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RosterError {
    /// Members are not strictly sorted by peer id (unsorted or duplicated).
    #[error("members are not strictly sorted by peer id")]
    Unsorted,
    /// No member contributes.
    #[error("the roster has no contributor")]
    NoContributor,
    /// More members than the wire allows.
    #[error("{0} members exceed the bound")]
    TooManyMembers(usize),
    /// A span would exceed the wire bound, or the vector is empty.
    #[error(
        "vector of {vector_len} floats cannot be split into spans of at most {SPAN_FLOATS_MAX}"
    )]
    BadVectorLength {
        /// Proposed length.
        vector_len: u64,
    },
}

/// A validated roster for one round.
#[derive(Debug, Clone)]
pub struct Roster {
    round: RoundId,
    base: StateSummary,
    members: Vec<Member>,
    /// Peer ids of contributors, in rank order (sorted by id). Span `j` is owned by `contributors[j]`.
    contributors: Vec<PeerId>,
    spans: Vec<Range<usize>>,
    vector_len: usize,
    digest: Digest,
}

impl Roster {
    /// Validates `proposal` for `round`.
    ///
    /// # Errors
    /// A [`RosterError`] naming the violated rule.
    pub fn from_proposal(round: RoundId, proposal: &Proposal) -> Result<Self, RosterError> {
        let members = &proposal.members;
        if members.len() > ROSTER_MEMBERS_MAX {
            return Err(RosterError::TooManyMembers(members.len()));
        }
        if members.windows(2).any(|w| w[0].peer >= w[1].peer) {
            return Err(RosterError::Unsorted);
        }
        let contributors: Vec<&Member> = members
            .iter()
            .filter(|m| m.role == Role::Contributor)
            .collect();
        if contributors.is_empty() {
            return Err(RosterError::NoContributor);
        }
        let bad_len = RosterError::BadVectorLength {
            vector_len: proposal.vector_len,
        };
        let vector_len = usize::try_from(proposal.vector_len).map_err(|_| bad_len.clone())?;
        let bandwidths: Vec<u64> = contributors
            .iter()
            .map(|m| m.bandwidth_bytes_per_s)
            .collect();
        let spans = split_by_bandwidth(vector_len, &bandwidths);
        let span_max = SPAN_FLOATS_MAX as usize;
        if vector_len == 0 || spans.iter().any(|s| s.len() > span_max) {
            return Err(bad_len);
        }
        Ok(Self {
            round,
            base: proposal.base,
            members: members.clone(),
            contributors: contributors.iter().map(|m| m.peer).collect(),
            spans,
            vector_len,
            digest: digest_of(round, proposal),
        })
    }

    /// The round.
    #[must_use]
    pub const fn round(&self) -> RoundId {
        self.round
    }

    /// The state every contributor holds.
    #[must_use]
    pub const fn base(&self) -> StateSummary {
        self.base
    }

    /// All members, in rank order.
    #[must_use]
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Contributors in rank order; span `j` belongs to `contributors()[j]`.
    #[must_use]
    pub fn contributors(&self) -> &[PeerId] {
        &self.contributors
    }

    /// Length of the averaged vector.
    #[must_use]
    pub const fn vector_len(&self) -> usize {
        self.vector_len
    }

    /// Span `j`'s range in the flat vector.
    #[must_use]
    pub fn span(&self, j: usize) -> Option<Range<usize>> {
        self.spans.get(j).cloned()
    }

    /// All span ranges, in span order.
    #[must_use]
    pub fn spans(&self) -> &[Range<usize>] {
        &self.spans
    }

    /// The contributor rank of `peer`, which is also the index of the span it owns.
    #[must_use]
    pub fn contributor_rank(&self, peer: PeerId) -> Option<usize> {
        self.contributors.binary_search(&peer).ok()
    }

    /// `peer`'s role, if it is a member.
    #[must_use]
    pub fn role(&self, peer: PeerId) -> Option<Role> {
        let i = self.members.binary_search_by(|m| m.peer.cmp(&peer)).ok()?;
        Some(self.members[i].role)
    }

    /// The contributor that re-reduces span `j` when its owner is silent: the next contributor in
    /// rank order. With a single contributor the owner is its own backup.
    #[must_use]
    pub fn backup_owner(&self, j: usize) -> Option<PeerId> {
        let n = self.contributors.len();
        (j < n).then(|| self.contributors[(j + 1) % n])
    }

    /// Votes from contributors needed to commit: a strict majority, so two quorums always share
    /// a contributor and two different results can never both commit.
    #[must_use]
    pub fn quorum(&self) -> usize {
        self.contributors.len() / 2 + 1
    }

    /// blake3 of the round and the proposal: the identity of this roster.
    #[must_use]
    pub const fn digest(&self) -> Digest {
        self.digest
    }
}

#[derive(Serialize)]
struct RosterDigestInput<'a> {
    round: RoundId,
    proposal: &'a Proposal,
}

fn digest_of(round: RoundId, proposal: &Proposal) -> Digest {
    let bytes = bincode::serde::encode_to_vec(
        RosterDigestInput { round, proposal },
        bincode::config::standard(),
    )
    .unwrap_or_default();
    Digest::of(&bytes)
}

/// Splits `len` floats into one contiguous span per contributor, sized in proportion to its
/// bandwidth (a zero bandwidth counts as 1). Largest-remainder rounding with ties broken by rank,
/// so every peer computes the same spans. A faster peer owns more, so every owner finishes its
/// reduce-scatter and all-gather in about the same time.
#[must_use]
pub fn split_by_bandwidth(len: usize, bandwidths: &[u64]) -> Vec<Range<usize>> {
    let weights: Vec<u128> = bandwidths.iter().map(|&b| u128::from(b.max(1))).collect();
    let total: u128 = weights.iter().sum();
    let len_wide = len as u128;
    let mut sizes: Vec<usize> = weights
        .iter()
        .map(|w| usize::try_from(len_wide * w / total).unwrap_or(len))
        .collect();
    let mut remainders: Vec<(u128, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| (len_wide * w % total, i))
        .collect();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let assigned: usize = sizes.iter().sum();
    for &(_, i) in remainders.iter().take(len.saturating_sub(assigned)) {
        sizes[i] += 1;
    }
    let mut start = 0;
    sizes
        .into_iter()
        .map(|s| {
            let r = start..start + s;
            start += s;
            r
        })
        .collect()
}

/// The order in which peers try to lead `round`: ascending blake3(round, peer). Any peer can
/// recompute it from public data, and it rotates the leader from round to round.
#[must_use]
pub fn leader_key(round: RoundId, peer: PeerId) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"gradmesh-leader");
    hasher.update(&round.0.to_le_bytes());
    hasher.update(&peer.0);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(i: u64, role: Role, bw: u64) -> Member {
        Member {
            peer: PeerId::from_index(i),
            role,
            bandwidth_bytes_per_s: bw,
        }
    }

    fn proposal(mut members: Vec<Member>, len: u64) -> Proposal {
        members.sort_by_key(|m| m.peer);
        Proposal {
            base: StateSummary {
                round: RoundId(0),
                digest: Digest::default(),
            },
            vector_len: len,
            members,
        }
    }

    #[test]
    fn spans_follow_bandwidth() {
        let spans = split_by_bandwidth(100, &[1, 3]);
        assert_eq!(spans, vec![0..25, 25..100]);
        let spans = split_by_bandwidth(10, &[1, 1, 1]);
        assert_eq!(spans, vec![0..4, 4..7, 7..10]);
    }

    proptest! {
        #[test]
        fn spans_tile_the_vector(len in 0usize..100_000, bws in prop::collection::vec(0u64..u64::MAX, 1..64)) {
            let spans = split_by_bandwidth(len, &bws);
            prop_assert_eq!(spans.len(), bws.len());
            prop_assert_eq!(spans[0].start, 0);
            prop_assert_eq!(spans[spans.len() - 1].end, len);
            for w in spans.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
        }
    }

    #[test]
    fn refuses_unsorted_duplicate_and_empty() {
        let a = member(1, Role::Contributor, 1);
        let dup = Proposal {
            members: vec![a, a],
            ..proposal(vec![], 4)
        };
        assert_eq!(
            Roster::from_proposal(RoundId(1), &dup).unwrap_err(),
            RosterError::Unsorted
        );
        let observers = proposal(vec![member(1, Role::Observer, 1)], 4);
        assert_eq!(
            Roster::from_proposal(RoundId(1), &observers).unwrap_err(),
            RosterError::NoContributor
        );
        let empty = proposal(vec![a], 0);
        assert!(matches!(
            Roster::from_proposal(RoundId(1), &empty),
            Err(RosterError::BadVectorLength { .. })
        ));
    }

    #[test]
    fn ranks_backups_and_quorum() {
        let p = proposal(
            vec![
                member(1, Role::Contributor, 1),
                member(2, Role::Observer, 1),
                member(3, Role::Contributor, 1),
            ],
            10,
        );
        let roster = Roster::from_proposal(RoundId(5), &p).expect("valid");
        assert_eq!(roster.contributors().len(), 2);
        assert_eq!(roster.quorum(), 2);
        let first = roster.contributors()[0];
        assert_eq!(roster.contributor_rank(first), Some(0));
        assert_eq!(roster.backup_owner(0), Some(roster.contributors()[1]));
        assert_eq!(roster.backup_owner(1), Some(first));
        assert_eq!(roster.role(PeerId::from_index(2)), Some(Role::Observer));
        assert_eq!(roster.role(PeerId::from_index(9)), None);
    }
}
