//! What a protocol-driven run observed: per-round rows for the CSV, totals, and the liveness
//! verdict (safety is the protocol's [`InvariantChecker`]).

use crate::runner::RoundRecord;
use crate::time::SimTime;
use gradmesh_protocol::driver::{InvariantChecker, Violation};
use gradmesh_protocol::peer::Event;
use gradmesh_protocol::wire::Role;
use gradmesh_protocol::{PeerId, RoundId};
use std::collections::{BTreeMap, BTreeSet};

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshCounts {
    /// Distinct rounds committed by at least one peer.
    pub rounds: u64,
    /// Peer commits (one per peer per committed round).
    pub commits: u64,
    /// Peer aborts.
    pub aborts: u64,
    /// Peers that found themselves behind the mesh (`Diverged`).
    pub diverged: u64,
    /// States loaded by joiners and returning peers.
    pub resyncs: u64,
    /// Peers killed (churn or schedule).
    pub kills: u64,
    /// Peers started after t = 0.
    pub joins: u64,
    /// Messages lost under the fault schedule's drop rate.
    pub lost: u64,
    /// Bytes handed to the network (as charged, including payload scaling).
    pub bytes_sent: u64,
}

/// Safety and liveness of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The first safety violation the protocol's checker saw.
    pub violation: Option<Violation>,
    /// A majority of the newest committed round's committee is dead: the protocol halts by
    /// design rather than risk two histories, so liveness is not required.
    pub halted_by_design: bool,
    /// A live contributor withholds its vote: earlier votes on its base leave two results that
    /// dead or unreachable peers could each have committed, and the protocol waits rather than
    /// guess (docs/protocol.md §5.2), so liveness is not required either.
    pub halted_undecided: bool,
    /// The mesh stopped committing after the faults ended, or most peers stopped contributing
    /// (liveness failure).
    pub stalled: Option<String>,
    /// Peers alive for the whole settle phase that contributed to no commit in its second half
    /// (reported, not a failure: see docs/simulator.md).
    pub starved: Vec<PeerId>,
    /// Two live peers at the end hold the same round's state with different bytes.
    pub survivors_differ: Option<String>,
}

impl Verdict {
    /// No violation and no liveness failure.
    #[must_use]
    pub const fn is_ok(&self) -> bool {
        self.violation.is_none() && self.stalled.is_none() && self.survivors_differ.is_none()
    }
}

#[derive(Debug, Clone, Copy)]
struct CommitInfo {
    first: SimTime,
    commits: u32,
    contributors: u32,
    bytes_sent: u64,
    active: u32,
}

/// The run's observations, fed by the mesh as outputs happen.
#[derive(Debug, Default)]
pub(super) struct MeshLog {
    born: BTreeMap<PeerId, SimTime>,
    contributing: BTreeSet<(PeerId, RoundId)>,
    last_contribution: BTreeMap<PeerId, SimTime>,
    commits: BTreeMap<RoundId, CommitInfo>,
    committees: BTreeMap<RoundId, Vec<PeerId>>,
    aborts: Vec<SimTime>,
    resyncs: Vec<SimTime>,
    bytes_sent: u64,
    kills: u64,
    joins: u64,
    lost: u64,
}

impl MeshLog {
    pub(super) fn record_birth(&mut self, id: PeerId, now: SimTime) {
        self.born.insert(id, now);
    }
    pub(super) fn born(&self, id: PeerId) -> SimTime {
        self.born.get(&id).copied().unwrap_or(SimTime::ZERO)
    }
    pub(super) const fn record_kill(&mut self) {
        self.kills += 1;
    }
    pub(super) const fn record_join(&mut self) {
        self.joins += 1;
    }
    pub(super) const fn record_lost(&mut self) {
        self.lost += 1;
    }
    pub(super) const fn record_sent(&mut self, bytes: u64) {
        self.bytes_sent += bytes;
    }
    pub(super) fn record_resync(&mut self, now: SimTime) {
        self.resyncs.push(now);
    }
    pub(super) fn record_committee(&mut self, round: RoundId, committee: &[PeerId]) {
        self.committees
            .entry(round)
            .or_insert_with(|| committee.to_vec());
    }

    pub(super) fn record_event(&mut self, now: SimTime, id: PeerId, e: &Event, active: usize) {
        match e {
            Event::RoundStarted { round, role, .. } if *role == Role::Contributor => {
                self.contributing.insert((id, *round));
            }
            Event::RoundCommitted {
                round,
                contributors,
                ..
            } => {
                if self.contributing.remove(&(id, *round)) {
                    self.last_contribution.insert(id, now);
                }
                let bytes_sent = self.bytes_sent;
                let info = self.commits.entry(*round).or_insert(CommitInfo {
                    first: now,
                    commits: 0,
                    contributors: *contributors as u32,
                    bytes_sent,
                    active: active as u32,
                });
                info.commits += 1;
            }
            Event::RoundAborted { .. } => self.aborts.push(now),
            _ => {}
        }
    }

    pub(super) fn rounds_committed(&self) -> usize {
        self.commits.len()
    }

    /// When the `n`-th committed round (1-based) first committed.
    pub(super) fn commit_time(&self, n: usize) -> Option<SimTime> {
        self.commits
            .values()
            .nth(n.checked_sub(1)?)
            .map(|c| c.first)
    }

    /// One row per committed round: the interval since the previous commit of the mesh.
    pub(super) fn records(&self) -> Vec<RoundRecord> {
        let (mut start, mut bytes_before) = (SimTime::ZERO, 0);
        let in_window = |ts: &[SimTime], a: SimTime, b: SimTime| {
            ts.iter().filter(|&&t| t > a && t <= b).count() as u32
        };
        let mut rows = Vec::with_capacity(self.commits.len());
        for (round, c) in &self.commits {
            rows.push(RoundRecord {
                round: u32::try_from(round.0).unwrap_or(u32::MAX),
                start_s: start.as_secs_f64(),
                end_s: c.first.as_secs_f64(),
                peers: c.contributors,
                bytes_per_peer: (c.bytes_sent - bytes_before) / u64::from(c.active.max(1)),
                commits: c.commits,
                aborts: in_window(&self.aborts, start, c.first),
                resyncs: in_window(&self.resyncs, start, c.first),
                active_peers: c.active,
                groups: 1,
            });
            start = c.first;
            bytes_before = c.bytes_sent;
        }
        rows
    }

    pub(super) fn counts(&self, checker: &InvariantChecker) -> MeshCounts {
        MeshCounts {
            rounds: self.commits.len() as u64,
            commits: checker.commits,
            aborts: checker.aborts,
            diverged: checker.diverged,
            resyncs: self.resyncs.len() as u64,
            kills: self.kills,
            joins: self.joins,
            lost: self.lost,
            bytes_sent: self.bytes_sent,
        }
    }

    /// Liveness after the faults, with `settle` = half the time from `faults_end` to `end`:
    /// unless the mesh halted by design, it committed a round within the last `settle`, and a
    /// strict majority of the peers alive for the last 2·settle contributed to one. Those of
    /// them that did not are listed as *starved* (the protocol driver's stricter rule requires
    /// none; see docs/simulator.md for why the simulator reports them instead).
    pub(super) fn verdict(
        &self,
        checker: &InvariantChecker,
        alive: &[(PeerId, SimTime)],
        undecided: bool,
        end: SimTime,
        faults_end: SimTime,
    ) -> Verdict {
        let mut verdict = Verdict {
            violation: checker.violation().cloned(),
            halted_by_design: false,
            halted_undecided: false,
            stalled: None,
            starved: Vec::new(),
            survivors_differ: None,
        };
        if let Some((_, committee)) = self.committees.last_key_value() {
            let live = committee
                .iter()
                .filter(|p| alive.iter().any(|(id, _)| id == *p))
                .count();
            if live <= committee.len() / 2 {
                verdict.halted_by_design = true;
                return verdict;
            }
        }
        if undecided {
            verdict.halted_undecided = true;
            return verdict;
        }
        let settle = end.micros_since(faults_end) / 2;
        if settle == 0 {
            return verdict;
        }
        let recent = |t: SimTime| end.micros_since(t) <= settle;
        let eligible: Vec<PeerId> = alive
            .iter()
            .filter(|(_, born)| end.micros_since(*born) >= 2 * settle)
            .map(|(id, _)| *id)
            .collect();
        verdict.starved = eligible
            .iter()
            .filter(|id| !self.last_contribution.get(id).is_some_and(|&t| recent(t)))
            .copied()
            .collect();
        let contributed = eligible.len() - verdict.starved.len();
        if !self.commits.values().any(|c| recent(c.first)) {
            verdict.stalled = Some(format!("no round committed in the last {settle} µs"));
        } else if !eligible.is_empty() && 2 * contributed <= eligible.len() {
            verdict.stalled = Some(format!(
                "only {contributed} of {} live peers contributed in the last {settle} µs",
                eligible.len()
            ));
        }
        verdict
    }
}
