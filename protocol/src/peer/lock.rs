//! Votes across rounds on one base state: what a contributor may vote for (docs/protocol.md §5.2).
//!
//! Result digests name their roster, hence their round, so the quorum rule alone keeps two
//! results apart only within one round. Across rounds on the same base state `B` this module
//! applies Paxos's rule, with round ids as ballots and `B`'s committee as the acceptors:
//!
//! - every contributor remembers its last vote on `B` (a [`Lock`]: round, digest, whether it
//!   carried an earlier result, and the result's data if it holds it) until its state changes,
//!   and announces it (`Announce::lock`);
//! - an announcement with next round `≥ r'` is a promise: its sender never votes in a round
//!   below `r'` again, so its lock is final for every round below `r'`;
//! - before voting in round `r'`, a contributor collects such promises from a strict majority
//!   `Q` of the committee and takes the highest-round locks among them (round `r*`, digests
//!   `D`): if they all carried one earlier digest `v`, it votes `v`; otherwise (some lock at
//!   `r*` is a fresh vote, or `D` has two digests, so nothing was committed before `r*`) it
//!   votes for the one digest of `D` that could still have a strict committee majority at `r*`
//!   (its locks in `Q` plus every committee member outside `Q`), for its own fresh result when
//!   none could, and not at all when two could.
//!
//! If `v` was committed at round `b` (a strict majority `M` voted it), then every vote on `B`
//! in a later round is `v`: `Q` meets `M`, so the highest lock in `Q` is at `b` or later; locks
//! after `b` are all carried votes for `v` (induction), and at `b` itself `v` is the only
//! digest that can reach a majority count. So `B` has at most one successor.
//!
//! At genesis (empty committee) the founders play the committee, `genesis_quorum` is the
//! majority, and at most `2 × genesis_quorum − 1` founders are assumed: sound when
//! `genesis_quorum` is a strict majority of the founders, as the driver sets it.

use std::collections::BTreeMap;

use crate::ids::{Digest, PeerId, RoundId};
use crate::reduce::{Carry, RoundResult};
use crate::time::Timestamp;
use crate::wire::{StateSummary, VoteLock};

use super::{Event, Peer, Stage};

/// A contributor's last vote on its current state.
#[derive(Debug, Clone)]
pub(super) struct Lock {
    base: StateSummary,
    vote: VoteLock,
    /// The voted result's data, when this peer holds it.
    result: Option<RoundResult>,
}

impl Lock {
    pub(super) const fn new(
        base: StateSummary,
        vote: VoteLock,
        result: Option<RoundResult>,
    ) -> Self {
        Self { base, vote, result }
    }

    /// The state the vote was cast on.
    pub(super) const fn base(&self) -> StateSummary {
        self.base
    }

    /// What announcements say about it.
    pub(super) fn announced(&self) -> VoteLock {
        self.vote.clone()
    }
}

/// Promises gathered from the committee for one round (module doc).
#[derive(Debug)]
struct Promises {
    /// Per committee member (in committee order): heard from with a next round at or past the
    /// round (this peer included). At genesis, the founders heard from.
    heard: Vec<bool>,
    /// The committee's size (at genesis, the most founders there can be).
    size: usize,
    /// The locks of the highest round among them.
    top: Vec<VoteLock>,
}

impl Promises {
    fn heard(&self) -> usize {
        self.heard.iter().filter(|h| **h).count()
    }

    /// Committee members not heard from that could have voted for `lock`'s digest: those among
    /// its backers (at genesis, any founder not heard from).
    fn unheard_backers(&self, lock: &VoteLock) -> usize {
        if lock.backers.is_empty() {
            return self.size.saturating_sub(self.heard());
        }
        self.heard
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                !**h && lock
                    .backers
                    .get(i / 8)
                    .is_some_and(|b| b >> (i % 8) & 1 == 1)
            })
            .count()
    }
}

impl Peer {
    /// Recomputes what this contributor may vote for in its running round, and tells the round.
    pub(super) fn update_carry(&mut self) {
        let Some(round) = &self.round else { return };
        if !round.awaits_carry() {
            return;
        }
        let carry = self.carry_for(round.round(), round.roster().base());
        if let Some(round) = &mut self.round {
            round.set_carry(carry);
        }
    }

    pub(super) fn carry_for(&self, round: RoundId, base: StateSummary) -> Carry {
        let p = self.promises(round, base);
        if !self.is_majority(p.heard(), p.size) {
            return Carry::Unknown;
        }
        if p.top.is_empty() {
            return Carry::Free;
        }
        let mut counts: BTreeMap<Digest, (usize, &VoteLock)> = BTreeMap::new();
        for l in &p.top {
            counts.entry(l.digest).or_insert((0, l)).0 += 1;
        }
        let all_carried = p.top.iter().all(|l| l.carried);
        let digest = if counts.len() == 1 && all_carried {
            p.top[0].digest
        } else {
            // Nothing was committed before the top round; at most one digest of it can have
            // been, and only if its locks plus its unheard backers make a majority.
            let possible: Vec<Digest> = counts
                .iter()
                .filter(|(_, (n, l))| self.is_majority(n + p.unheard_backers(l), p.size))
                .map(|(d, _)| *d)
                .collect();
            match possible.as_slice() {
                [] => return Carry::Free,
                [d] => *d,
                _ => return Carry::Unknown,
            }
        };
        let result = self
            .lock
            .as_ref()
            .filter(|l| l.base == base && l.vote.digest == digest)
            .and_then(|l| l.result.clone())
            .map(Box::new);
        Carry::Value { digest, result }
    }

    /// Whether `n` votes are a strict majority of a committee of `size` (at genesis, reach
    /// `genesis_quorum`).
    fn is_majority(&self, n: usize, size: usize) -> bool {
        if self.state_committee().is_empty() {
            n >= self.config.genesis_quorum
        } else {
            n > size / 2
        }
    }

    /// The committee's promises for `round` on `base`: announcements of `base` with a next
    /// round at or past `round`, and this peer's own.
    fn promises(&self, round: RoundId, base: StateSummary) -> Promises {
        let committee = self.state_committee();
        let genesis = committee.is_empty();
        let members: Vec<PeerId> = if genesis {
            // Every peer holding the initial state is a founder (joiners never fetch it).
            self.known.keys().copied().chain([self.me]).collect()
        } else {
            committee.to_vec()
        };
        let mut heard = vec![false; members.len()];
        let mut locks = Vec::new();
        for (i, p) in members.iter().enumerate() {
            let lock = if *p == self.me {
                self.lock
                    .as_ref()
                    .filter(|l| l.base == base)
                    .map(|l| &l.vote)
            } else {
                let Some(k) = self.known.get(p) else { continue };
                if k.announce.state != Some(base) || k.round < round {
                    continue;
                }
                k.announce.lock.as_ref()
            };
            // A vote in this round or later hides the earlier one it replaced: as in Paxos,
            // such a peer is no promise for this round.
            if lock.is_some_and(|l| l.round >= round) {
                continue;
            }
            heard[i] = true;
            locks.extend(lock.cloned());
        }
        let size = if genesis {
            let heard = heard.iter().filter(|h| **h).count();
            (2 * self.config.genesis_quorum)
                .saturating_sub(1)
                .max(heard)
        } else {
            members.len()
        };
        let top_round = locks.iter().map(|l| l.round).max();
        locks.retain(|l| Some(l.round) == top_round);
        Promises {
            heard,
            size,
            top: locks,
        }
    }

    /// A `Ready` peer holding the data of its last vote commits it when a strict majority of
    /// the committee announces the same vote: that is the quorum rule, met by announcements
    /// instead of the round's own votes (the commit it missed, e.g. cut off by a partition).
    pub(super) fn settle_lock(&mut self, now: Timestamp) {
        let Some(lock) = &self.lock else { return };
        if !matches!(self.stage, Stage::Ready { .. }) || self.state != Some(lock.base) {
            return;
        }
        let Some(result) = lock.result.clone() else {
            return;
        };
        let vote = lock.vote.clone();
        let committee = self.state_committee();
        let members: Vec<PeerId> = if committee.is_empty() {
            self.known.keys().copied().collect()
        } else {
            committee.to_vec()
        };
        let same = members
            .iter()
            .filter(|p| {
                **p == self.me
                    || self.known.get(p).is_some_and(|k| {
                        k.announce.state == Some(lock.base)
                            && k.announce.lock.as_ref() == Some(&vote)
                    })
            })
            .count()
            + usize::from(committee.is_empty());
        if !self.is_majority(same, committee.len()) {
            return;
        }
        self.event(Event::RoundCommitted {
            round: vote.round,
            digest: vote.digest,
            contributors: super::contributors_of(&result),
        });
        self.apply_or_buffer(result);
        self.announce(now);
    }
}
