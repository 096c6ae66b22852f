//! A peer's lineage: the states it held at which its committee had turned over, with the
//! attestations it heard of them, forwarded with every manifest it serves
//! ([`crate::wire::StateManifest::lineage`]).
//!
//! A peer whose committee was replaced while it was away (spot machines reclaimed one by one)
//! cannot check a state the new committee attests against its own committee. The lineage
//! bridges it: each link is a state that a majority-overlapping committee of the link before
//! it could attest, so the joiner walks from its committee, link by link, to the state served
//! ([`crate::sync::Vouchers::chains`]).
//!
//! Which states become links. Let `K` be the committee of the last link. A state whose
//! committee still holds more members of `K` than a dishonest minority of `K` can count is the
//! *candidate* (`K`'s members hold it, so they attest it); when a state's committee no longer
//! does, the candidate becomes a link and `K` its committee. A stable committee thus adds no
//! link however many rounds it commits, and [`LINEAGE_LINKS_MAX`] links span as many
//! turnovers of a majority. A link keeps the attestations of signers in its own committee or
//! in `K` (those a joiner walking the chain counts), checked once before they are first
//! forwarded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::ids::{Digest, PeerId, RoundId};
use crate::keys::Seal;
use crate::sync::beyond_a_dishonest_minority;
use crate::wire::{ATTESTATIONS_MAX, LINEAGE_LINKS_MAX, LineageLink, StateSummary};

/// Bytes of lineage one manifest carries at most (its encoded size, bounded from above by
/// [`Link::bytes`]): with [`crate::wire::STATE_CHUNKS_MAX`] chunk digests, a full
/// committee and [`ATTESTATIONS_MAX`] attestations the manifest still fits
/// [`crate::wire::HEADER_BYTES_MAX`].
pub(crate) const LINEAGE_BYTES_MAX: usize = 192 << 10;

#[derive(Debug, Clone)]
struct Link {
    state: StateSummary,
    content: Digest,
    committee: Vec<PeerId>,
    /// Whose attestations this link keeps: its committee and the previous link's.
    counted: BTreeSet<PeerId>,
    /// By signer, with whether the seal was verified yet.
    seals: BTreeMap<PeerId, (Seal, bool)>,
}

impl Link {
    fn keep(&mut self, seal: Seal) {
        let signer = seal.signer();
        if self.counted.contains(&signer) && self.seals.len() < ATTESTATIONS_MAX {
            self.seals.entry(signer).or_insert((seal, false));
        }
    }

    /// The link as sent: its seals verified (one that does not verify is dropped: its sender
    /// lied to us).
    fn verified_link(&mut self) -> LineageLink {
        let state = self.state;
        self.seals.retain(|_, (seal, verified)| {
            if !*verified {
                *verified = seal.seals_state(state.round, state.digest);
            }
            *verified
        });
        LineageLink {
            round: state.round,
            content: self.content,
            committee: self.committee.clone(),
            attestations: self.seals.values().map(|(s, _)| *s).collect(),
        }
    }

    /// An upper bound of the link's encoded size: the round and two lengths as varints (at
    /// most 9 + 5 + 5 bytes), the content digest, 32 bytes per member and 96 per seal.
    fn bytes(&self) -> usize {
        64 + 32 * self.committee.len() + 96 * self.seals.len()
    }
}

/// Whether committee `next` holds more members of `of` than a dishonest minority of `of` can
/// count.
fn overlaps(next: &[PeerId], of: &[PeerId]) -> bool {
    let of: BTreeSet<&PeerId> = of.iter().collect();
    let shared = next.iter().filter(|p| of.contains(p)).count();
    beyond_a_dishonest_minority(shared, of.len())
}

/// The links of one peer (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Lineage {
    links: VecDeque<Link>,
    candidate: Option<Link>,
}

impl Lineage {
    /// The peer now holds `state`: becomes the candidate or a link (see the module
    /// documentation). `heard` are the attestations already heard of it. A state without a
    /// committee (initial or re-founded) starts the lineage over: nothing chains through it.
    pub(crate) fn advance(
        &mut self,
        state: StateSummary,
        content: Digest,
        committee: &[PeerId],
        heard: impl IntoIterator<Item = Seal>,
    ) {
        if committee.is_empty() {
            *self = Self::default();
            return;
        }
        if self
            .candidate
            .as_ref()
            .or(self.links.back())
            .is_some_and(|l| l.state.round >= state.round)
        {
            return;
        }
        let turned_over = self
            .links
            .back()
            .is_none_or(|last| !overlaps(committee, &last.committee));
        if turned_over && let Some(candidate) = self.candidate.take() {
            self.push(candidate);
        }
        let mut link = Link {
            state,
            content,
            committee: committee.to_vec(),
            counted: committee.iter().copied().collect(),
            seals: BTreeMap::new(),
        };
        if let Some(last) = self.links.back() {
            link.counted.extend(last.committee.iter().copied());
        }
        for seal in heard {
            link.keep(seal);
        }
        match self.links.back() {
            Some(last) if overlaps(committee, &last.committee) => self.candidate = Some(link),
            // No link yet, or even the candidate's committee has turned over from the last
            // link's: this state starts the chain again.
            _ => self.push(link),
        }
    }

    fn push(&mut self, link: Link) {
        self.links.push_back(link);
        while self.links.len() > LINEAGE_LINKS_MAX {
            self.links.pop_front();
        }
    }

    /// `state` did not load (`Peer::handle_state_refused`): it is no link.
    pub(crate) fn forget(&mut self, state: StateSummary) {
        self.links.retain(|l| l.state != state);
        if self.candidate.as_ref().is_some_and(|l| l.state == state) {
            self.candidate = None;
        }
    }

    /// `seal` attests `state`: kept if `state` is a link or the candidate and the signer counts.
    pub(crate) fn hear(&mut self, state: StateSummary, seal: Seal) {
        for link in self.links.iter_mut().chain(&mut self.candidate) {
            if link.state == state {
                link.keep(seal);
            }
        }
    }

    /// The links a manifest of the state after round `round` carries: those before it, newest
    /// first within [`LINEAGE_BYTES_MAX`], sent oldest first.
    pub(crate) fn before(&mut self, round: RoundId) -> Vec<LineageLink> {
        let mut bytes = 0;
        let mut links: Vec<LineageLink> = Vec::new();
        for link in self
            .candidate
            .iter_mut()
            .chain(self.links.iter_mut().rev())
            .filter(|l| l.state.round < round)
        {
            bytes += link.bytes();
            if bytes > LINEAGE_BYTES_MAX || links.len() == LINEAGE_LINKS_MAX {
                break;
            }
            links.push(link.verified_link());
        }
        links.reverse();
        links
    }

    /// Every link and the candidate, oldest first, for a checkpoint (seals unverified as
    /// heard: they are verified before they are forwarded).
    pub(crate) fn export(&self) -> Vec<LineageLink> {
        self.links
            .iter()
            .chain(&self.candidate)
            .map(|l| LineageLink {
                round: l.state.round,
                content: l.content,
                committee: l.committee.clone(),
                attestations: l.seals.values().map(|(s, _)| *s).collect(),
            })
            .collect()
    }

    /// The lineage of a checkpoint, re-built link by link (bounded as when heard).
    pub(crate) fn import(links: &[LineageLink]) -> Self {
        let mut lineage = Self::default();
        for link in links.iter().take(LINEAGE_LINKS_MAX + 1) {
            let state = crate::sync::link_summary(link);
            lineage.advance(
                state,
                link.content,
                &link.committee,
                link.attestations.iter().copied(),
            );
        }
        lineage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PeerKey;
    use crate::sync::state_digest;

    fn ids(indices: &[u64]) -> Vec<PeerId> {
        indices
            .iter()
            .map(|i| PeerKey::from_index(*i).id())
            .collect()
    }

    fn state(round: u64, committee: &[PeerId]) -> (StateSummary, Digest) {
        let content = Digest::of(&round.to_le_bytes());
        let summary = StateSummary {
            round: RoundId(round),
            digest: state_digest(content, committee),
        };
        (summary, content)
    }

    fn seals(state: StateSummary, by: &[u64]) -> Vec<Seal> {
        by.iter()
            .map(|i| PeerKey::from_index(*i).seal_state(state.round, state.digest))
            .collect()
    }

    #[test]
    fn a_link_is_kept_only_when_a_majority_of_the_last_committee_turned_over() {
        let mut lineage = Lineage::default();
        // Rounds 1-3 under {0,1,2}, 4 under {0,1,3}, 5 under {0,3,4}, 6 under {3,4,5}.
        let committees: [&[u64]; 6] = [
            &[0, 1, 2],
            &[0, 1, 2],
            &[0, 1, 2],
            &[0, 1, 3],
            &[0, 3, 4],
            &[3, 4, 5],
        ];
        for (i, members) in committees.iter().enumerate() {
            let committee = ids(members);
            let (summary, content) = state(i as u64 + 1, &committee);
            lineage.advance(summary, content, &committee, seals(summary, members));
        }
        let rounds: Vec<u64> = lineage.export().iter().map(|l| l.round.0).collect();
        // Round 1 starts the chain; round 4 ({0,1,3}) still overlaps {0,1,2}, round 5 ({0,3,4})
        // does not, so 4 became a link; 6 ({3,4,5}) does not overlap {0,1,3}: 5 became one and
        // 6 is the candidate.
        assert_eq!(rounds, vec![1, 4, 5, 6]);
        // A manifest of round 6 carries the links before it.
        let before: Vec<u64> = lineage
            .before(RoundId(6))
            .iter()
            .map(|l| l.round.0)
            .collect();
        assert_eq!(before, vec![1, 4, 5]);
    }

    #[test]
    fn seals_of_signers_outside_the_counted_committees_and_forged_seals_are_not_forwarded() {
        let mut lineage = Lineage::default();
        let committee = ids(&[0, 1, 2]);
        let (s1, c1) = state(1, &committee);
        lineage.advance(s1, c1, &committee, seals(s1, &[0]));
        lineage.hear(s1, seals(s1, &[1])[0]);
        // A stranger's seal is not kept.
        lineage.hear(s1, seals(s1, &[9])[0]);
        // A seal of member 2 over another state does not verify: dropped when forwarded.
        let (other, _) = state(7, &committee);
        lineage.hear(s1, seals(other, &[2])[0]);
        let next = ids(&[3, 4, 5]);
        let (s2, c2) = state(2, &next);
        lineage.advance(s2, c2, &next, Vec::new());
        let links = lineage.before(RoundId(3));
        let signers: Vec<PeerId> = links[0].attestations.iter().map(Seal::signer).collect();
        assert_eq!(signers.len(), 2);
        assert!(signers.contains(&committee[0]) && signers.contains(&committee[1]));
    }

    #[test]
    fn a_checkpointed_lineage_is_rebuilt_as_it_was() {
        let mut lineage = Lineage::default();
        for (round, members) in [(1, [0, 1, 2]), (2, [3, 4, 5]), (3, [6, 7, 8])] {
            let committee = ids(&members);
            let (summary, content) = state(round, &committee);
            lineage.advance(summary, content, &committee, seals(summary, &members));
        }
        let exported = lineage.export();
        assert_eq!(exported.len(), 3);
        assert_eq!(Lineage::import(&exported).export(), exported);
    }
}
