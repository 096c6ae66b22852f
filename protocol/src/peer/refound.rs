//! Re-founding after a mass failure (docs/protocol.md §5.6).
//!
//! A round on a state commits only with a strict majority of that state's committee, so when
//! most of the committee dies at once (spot machines reclaimed) the survivors can never commit
//! again. A peer configured with [`crate::config::PeerConfigBuilder::refound_after`] that has
//! heard from no such majority for that long *re-founds*: it holds the same bytes as a state of
//! the next epoch without a committee ([`StateSnapshot::refounded`]), like an initial state, and
//! the first round on it needs a strict majority of the peers that held the state when it was
//! re-founded (its *founders*). Every holder derives the same re-founded state, so survivors
//! agree without a vote; a survivor cut off from its committee too follows the first one it
//! hears re-founding ("adopts"), with or without the setting. Returning peers see a state of a
//! later epoch, which is newer than anything of theirs, and sync to it (§3.5).
//!
//! Safety is the operator's: a peer cannot tell dead committee members from unreachable ones,
//! so two sides of a partition that both re-found train apart. Setting `refound_after` says
//! the ones it cannot hear are gone.

use super::{Event, Peer, Stage};
use crate::sync::StateSnapshot;
use crate::time::Timestamp;

/// Round timeouts without a committee majority after which the peer reports it
/// ([`Event::CommitteeLost`]).
pub(super) const COMMITTEE_LOST_ROUND_TIMEOUTS: u32 = 2;

impl Peer {
    /// Members of the committee of the state held that this peer hears from, itself included,
    /// and the committee's size; `None` when that is a strict majority (or the state has no
    /// committee: an initial or re-founded state, whose founders decide by quorum).
    pub(super) fn committee_lost(&self) -> Option<(usize, usize)> {
        let committee = self.state_committee();
        if committee.is_empty() {
            return None;
        }
        let live = committee
            .iter()
            .filter(|p| **p == self.me || self.known.contains_key(p))
            .count();
        (live <= committee.len() / 2).then_some((live, committee.len()))
    }

    /// Tracks how long the committee has been lost, reports it once per episode and re-founds
    /// when `refound_after` has passed (called on every announcement and timeout).
    pub(super) fn track_committee(&mut self, now: Timestamp) {
        self.lost_checked = now;
        let Some((live, committee)) = self.committee_lost() else {
            self.lost_since = None;
            self.lost_reported = false;
            return;
        };
        let since = *self.lost_since.get_or_insert(now);
        let lost_for = now.saturating_since(since);
        if !self.lost_reported
            && lost_for >= self.config.round_timeout * COMMITTEE_LOST_ROUND_TIMEOUTS
        {
            self.lost_reported = true;
            self.event(Event::CommitteeLost { live, committee });
        }
        if self
            .config
            .refound_after
            .is_some_and(|after| lost_for >= after)
        {
            self.refound(now, false);
        }
    }

    /// When [`Peer::track_committee`] has work to do next: the report, then the re-founding.
    /// A deadline it already looked at is not returned again (a re-founding that had to wait
    /// for the round in flight is retried on the next announcement or timeout).
    pub(super) fn committee_deadline(&self) -> Option<Timestamp> {
        let since = self.lost_since?;
        let report = (!self.lost_reported)
            .then(|| since + self.config.round_timeout * COMMITTEE_LOST_ROUND_TIMEOUTS);
        let refound = self.config.refound_after.map(|after| since + after);
        report
            .into_iter()
            .chain(refound)
            .filter(|at| *at > self.lost_checked)
            .min()
    }

    /// A peer cut off from its committee that hears a peer announce the re-founded form of the
    /// state it holds re-founds too, without fetching a byte. Returns whether it did.
    pub(super) fn adopt_refounded(&mut self, now: Timestamp) -> bool {
        let Some(state) = self.state else {
            return false;
        };
        let next = state.round.next_epoch();
        let announced = self
            .known
            .values()
            .any(|k| k.announce.state.is_some_and(|s| s.round == next));
        if !announced || self.committee_lost().is_none() {
            return false;
        }
        let Some(expected) = self
            .snapshots
            .get(&state.round)
            .map(StateSnapshot::refounded)
        else {
            return false;
        };
        let target = expected.summary();
        let announced = self
            .known
            .values()
            .any(|k| k.announce.state == Some(target));
        announced && self.refound(now, true)
    }

    /// Re-founds the state held: the same bytes in the next epoch, without a committee, whose
    /// first round needs a strict majority of its founders (the live peers holding the state,
    /// in either form, and this peer). Only between rounds, not while leaving or syncing, and
    /// not while a live peer announces a newer state: a survivor that missed the last commit
    /// catches up first (`sync_targets` follows the live holders once the committee is gone),
    /// so survivors never re-found two different states. (A peer announcing a newer state it
    /// never serves delays the re-founding; it cannot make two.)
    fn refound(&mut self, now: Timestamp, adopted: bool) -> bool {
        let idle = matches!(self.stage, Stage::Computing | Stage::Ready { .. });
        if !idle || self.leaving || self.round.is_some() || self.sync.is_some() {
            return false;
        }
        let Some(from) = self.state else {
            return false;
        };
        let Some(snapshot) = self
            .snapshots
            .get(&from.round)
            .map(StateSnapshot::refounded)
        else {
            return false;
        };
        let to = snapshot.summary();
        let behind = self.known.values().any(|k| {
            k.announce
                .state
                .is_some_and(|s| !k.announce.wants_to_join && s.round > from.round && s != to)
        });
        if behind {
            return false;
        }
        let founders = 1 + self
            .known
            .values()
            .filter(|k| k.announce.state.is_some_and(|s| s == from || s == to))
            .count();
        let quorum = founders / 2 + 1;
        // The founding quorum of the state held: read wherever the committee is empty.
        self.config.genesis_quorum = quorum;
        self.install(now, snapshot);
        if let Some(gradient) = &mut self.gradient {
            // Same bytes: a gradient computed on the old form is one on the new.
            gradient.base = to;
        }
        if let Stage::Ready { .. } = self.stage {
            self.stage = Stage::Ready { since: now };
        }
        self.lost_since = None;
        self.lost_reported = false;
        self.event(Event::Refounded {
            from,
            to,
            founders,
            quorum,
            adopted,
        });
        self.announce(now);
        true
    }
}
