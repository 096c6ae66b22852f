//! Invariants checked on every output of an in-memory run.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Aggregation, CodecKind};
use crate::ids::{Digest, PeerId, RoundId};
use crate::peer::Event;
use crate::reduce::{RoundResult, span_rule};
use crate::sync::StateSnapshot;
use crate::time::Timestamp;
use crate::wire::{StateSummary, WireError};

use super::Node;

/// A gradient and the samples behind it.
type WeightedGradient = (u32, Arc<[f32]>);

/// A broken invariant, with what is needed to understand it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Violation {
    /// Two peers committed different results for one round.
    DifferentResults {
        /// Round.
        round: RoundId,
        /// The two digests.
        digests: (Digest, Digest),
    },
    /// A committed value is not the weighted mean (or the configured robust rule) of the
    /// contributions its span names.
    WrongMean {
        /// Round.
        round: RoundId,
        /// Index in the flat vector.
        index: usize,
        /// Committed value.
        got: f32,
        /// Independently computed mean (or the rule's value).
        expected: f64,
    },
    /// A committed span names a contribution that no peer computed.
    UnknownContribution {
        /// Round.
        round: RoundId,
        /// The named contributor.
        peer: PeerId,
    },
    /// Two different rounds committed results on the same base state: two histories.
    Fork {
        /// The shared base.
        base: StateSummary,
        /// The two rounds.
        rounds: (RoundId, RoundId),
    },
    /// Two peers hold different states after the same round.
    DifferentStates {
        /// Round.
        round: RoundId,
    },
    /// A joiner loaded a state that no peer committed.
    UncommittedStateLoaded {
        /// Node.
        node: usize,
        /// Round.
        round: RoundId,
    },
    /// A round ended later than its timeout allows.
    RoundOverran {
        /// Node.
        node: usize,
        /// Round.
        round: RoundId,
        /// How long it took.
        took: Duration,
    },
    /// Our own frame failed to encode or decode.
    Wire(WireError),
    /// After the faults ended, the mesh did not converge.
    NotConverged(String),
    /// The run exceeded its event budget: some machine keeps waking itself up.
    Runaway {
        /// Simulated time when the budget ran out.
        at: Timestamp,
    },
}

/// Watches a run and remembers the first violation.
#[derive(Debug, Default)]
pub struct InvariantChecker {
    round_timeout: Duration,
    /// The peers' aggregation rule; `None` is the weighted mean.
    aggregation: Option<Aggregation>,
    /// The peers' span codec; `None` (the default) is raw f32.
    codec: Option<CodecKind>,
    gradients: BTreeMap<(PeerId, StateSummary), WeightedGradient>,
    results: BTreeMap<RoundId, Digest>,
    committees: BTreeMap<RoundId, Vec<PeerId>>,
    /// The committed round built on each state: a second one would fork the history.
    children: BTreeMap<StateSummary, RoundId>,
    /// Set when the run ended with a majority of the newest committee dead: the protocol then
    /// halts by design (it will not risk two histories), so liveness is not required.
    pub halted_by_design: bool,
    /// Set when the run ended with some live contributor withholding its vote in its last
    /// round: earlier votes on its base leave two results that could each have been committed
    /// by peers now dead or unreachable, and the protocol waits rather than guess
    /// (docs/protocol.md §5.2). Liveness is not required then either.
    pub halted_undecided: bool,
    /// Nodes whose last round ended withholding their vote.
    withheld: BTreeSet<usize>,
    states: BTreeMap<RoundId, Digest>,
    starts: BTreeMap<(usize, RoundId), Timestamp>,
    killed: BTreeSet<usize>,
    loads: Vec<(usize, RoundId, Timestamp)>,
    /// Rounds each node started as contributor, and when each node last contributed to a commit.
    contributing: BTreeSet<(usize, RoundId)>,
    last_contribution: BTreeMap<usize, Timestamp>,
    born: BTreeMap<usize, Timestamp>,
    /// Nodes whose liveness is not required (attackers that lie about their state).
    exempt: BTreeSet<usize>,
    /// Counts of committed rounds seen per peer (`RoundCommitted` events).
    pub commits: u64,
    /// Aborted rounds (per peer).
    pub aborts: u64,
    /// Diverged rounds (per peer).
    pub diverged: u64,
    /// Rejected messages.
    pub rejected: u64,
    /// Donors dropped during state sync.
    pub donors_dropped: u64,
    violation: Option<Violation>,
}

impl InvariantChecker {
    /// A checker for peers whose rounds must end within `round_timeout`.
    #[must_use]
    pub fn new(round_timeout: Duration) -> Self {
        Self {
            round_timeout,
            ..Self::default()
        }
    }

    /// Recomputes committed spans with `rule` (the peers' [`crate::config::PeerConfig::aggregation`])
    /// instead of the weighted mean.
    #[must_use]
    pub fn with_aggregation(mut self, rule: Aggregation) -> Self {
        self.aggregation = (rule != Aggregation::Mean).then_some(rule);
        self
    }

    /// Recomputes committed spans as peers using span codec `codec` (the peers'
    /// [`crate::config::PeerConfig::codec`]) compute them: every contribution's span slice and
    /// then the reduced span are encoded and decoded once.
    #[must_use]
    pub fn with_codec(mut self, codec: CodecKind) -> Self {
        self.codec = (codec != CodecKind::None).then_some(codec);
        self
    }

    /// Whether node `node`'s last round ended withholding its vote (see
    /// [`Self::halted_undecided`]); shells with their own liveness rule (the simulator) use it.
    #[must_use]
    pub fn is_withholding(&self, node: usize) -> bool {
        self.withheld.contains(&node)
    }

    fn fail(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    /// The first violation seen, if any.
    #[must_use]
    pub const fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Distinct rounds committed by at least one peer.
    #[must_use]
    pub fn rounds_committed(&self) -> usize {
        self.results.len()
    }

    /// Committed state digests by round.
    #[must_use]
    pub const fn states(&self) -> &BTreeMap<RoundId, Digest> {
        &self.states
    }

    /// State loads by joiners: `(node, state round, time)`.
    #[must_use]
    pub fn loads(&self) -> &[(usize, RoundId, Timestamp)] {
        &self.loads
    }

    /// The gradient `peer` sent on state `base` (as sent: an attacker's is already scaled).
    #[must_use]
    pub fn gradient(&self, peer: PeerId, base: StateSummary) -> Option<&(u32, Arc<[f32]>)> {
        self.gradients.get(&(peer, base))
    }

    /// Our own frame failed to encode or decode: always a violation.
    pub fn record_decode_failure(&mut self, e: WireError) {
        self.fail(Violation::Wire(e));
    }

    /// Node `node` started a peer machine at `now`.
    pub fn record_birth(&mut self, node: usize, now: Timestamp) {
        self.born.insert(node, now);
    }

    /// Node `node` lies about its state: the mesh owes it no progress.
    pub fn exempt_from_liveness(&mut self, node: usize) {
        self.exempt.insert(node);
    }

    /// Node `node` was killed.
    pub fn record_kill(&mut self, node: usize) {
        self.killed.insert(node);
    }

    /// `peer` computed `data` (weight `weight`) on state `base`.
    pub fn record_gradient(
        &mut self,
        peer: PeerId,
        base: StateSummary,
        weight: u32,
        data: Arc<[f32]>,
    ) {
        self.gradients.insert((peer, base), (weight, data));
    }

    /// A protocol event from node `node`: tracks round durations against the timeout.
    pub fn record_event(&mut self, node: usize, event: &Event, now: Timestamp) {
        let ended = match event {
            Event::RoundStarted { round, role, .. } => {
                self.starts.insert((node, *round), now);
                if *role == crate::wire::Role::Contributor {
                    self.contributing.insert((node, *round));
                }
                None
            }
            Event::RoundCommitted { round, .. } => {
                self.commits += 1;
                self.withheld.remove(&node);
                if self.contributing.remove(&(node, *round)) {
                    self.last_contribution.insert(node, now);
                }
                Some(*round)
            }
            Event::RoundAborted { round, reason } => {
                self.aborts += 1;
                if *reason == crate::reduce::AbortReason::Withheld {
                    self.withheld.insert(node);
                } else {
                    self.withheld.remove(&node);
                }
                Some(*round)
            }
            Event::Diverged { round, .. } => {
                self.diverged += 1;
                Some(*round)
            }
            Event::Rejected { .. } => {
                self.rejected += 1;
                None
            }
            Event::DonorDropped { .. } => {
                self.donors_dropped += 1;
                None
            }
            Event::Refounded { from, to, .. } => {
                // The same bytes: a gradient computed on the old form is one on the re-founded
                // form, and the peers use it as such (`peer/refound.rs`).
                let carried: Vec<_> = self
                    .gradients
                    .iter()
                    .filter(|((_, base), _)| base == from)
                    .map(|((peer, _), g)| ((*peer, *to), g.clone()))
                    .collect();
                self.gradients.extend(carried);
                None
            }
            _ => None,
        };
        if let Some(round) = ended
            && let Some(start) = self.starts.remove(&(node, round))
        {
            let took = now.saturating_since(start);
            if took > self.round_timeout {
                self.fail(Violation::RoundOverran { node, round, took });
            }
        }
    }

    /// Checks agreement with earlier commits of the round and recomputes every span's mean.
    pub fn record_commit(&mut self, _node: usize, result: &RoundResult) {
        match self.results.get(&result.round) {
            Some(d) if *d != result.digest => {
                let digests = (*d, result.digest);
                return self.fail(Violation::DifferentResults {
                    round: result.round,
                    digests,
                });
            }
            Some(_) => return,
            None => {
                self.results.insert(result.round, result.digest);
                self.committees
                    .insert(result.round, result.committee.clone());
            }
        }
        match self.children.get(&result.base) {
            Some(r) if *r != result.round => {
                let rounds = (*r, result.round);
                return self.fail(Violation::Fork {
                    base: result.base,
                    rounds,
                });
            }
            Some(_) => {}
            None => {
                self.children.insert(result.base, result.round);
            }
        }
        for span in &result.spans {
            let mut inputs = Vec::with_capacity(span.contributors.len());
            for peer in &span.contributors {
                match self.gradients.get(&(*peer, result.base)) {
                    Some(g) => inputs.push(g.clone()),
                    None => {
                        let v = Violation::UnknownContribution {
                            round: result.round,
                            peer: *peer,
                        };
                        return self.fail(v);
                    }
                }
            }
            let recomputed = match self.codec {
                None => match self.aggregation {
                    None => weighted_mean(&inputs, span.range.clone()),
                    Some(rule) => robust_values(rule, &inputs, span.range.clone()),
                },
                Some(codec) => self.quantised_span(codec, &inputs, span.range.clone()),
            };
            for (i, expected) in span.range.clone().zip(recomputed) {
                let got = result.data[i];
                // Written so that a NaN (a rule that refused its inputs) fails too.
                let close = (f64::from(got) - expected).abs() <= 1e-6 * (1.0 + expected.abs());
                if !close {
                    let round = result.round;
                    return self.fail(Violation::WrongMean {
                        round,
                        index: i,
                        got,
                        expected,
                    });
                }
            }
        }
    }

    /// Node `node` now holds `state`; two different digests for one round are a violation.
    pub fn record_state(&mut self, _node: usize, state: Option<StateSummary>, _now: Timestamp) {
        let Some(s) = state else { return };
        match self.states.get(&s.round) {
            Some(d) if *d != s.digest => self.fail(Violation::DifferentStates { round: s.round }),
            Some(_) => {}
            None => {
                self.states.insert(s.round, s.digest);
            }
        }
    }

    /// Node `node` loaded `snapshot` from a sync; it must be a committed state.
    pub fn record_load(&mut self, node: usize, snapshot: &StateSnapshot, now: Timestamp) {
        let s = snapshot.summary();
        let known = s.round == RoundId(0) || self.states.get(&s.round) == Some(&s.digest);
        if !known {
            self.fail(Violation::UncommittedStateLoaded {
                node,
                round: s.round,
            });
        }
        self.loads.push((node, s.round, now));
    }

    /// End-of-run liveness: after the faults end, every live peer keeps contributing. A peer
    /// alive for the last `settle` must have contributed to a committed round within it.
    pub(super) fn finish(
        &mut self,
        nodes: &[Node],
        now: Timestamp,
        settle: Duration,
    ) -> Result<(), Violation> {
        if let Some(v) = &self.violation {
            return Err(v.clone());
        }
        if let Some((_, committee)) = self.committees.last_key_value() {
            let alive = committee
                .iter()
                .filter(|p| nodes.iter().any(|n| n.id == **p && n.is_alive()))
                .count();
            if alive <= committee.len() / 2 {
                self.halted_by_design = true;
                return Ok(());
            }
        }
        if nodes
            .iter()
            .any(|n| n.is_alive() && self.withheld.contains(&n.index))
        {
            self.halted_undecided = true;
            return Ok(());
        }
        for n in nodes
            .iter()
            .filter(|n| n.is_alive() && !self.exempt.contains(&n.index))
        {
            let born = self.born.get(&n.index).copied().unwrap_or(Timestamp::ZERO);
            if now.saturating_since(born) < settle * 2 {
                continue;
            }
            let last = self.last_contribution.get(&n.index).copied();
            if last.is_none_or(|t| now.saturating_since(t) > settle) {
                let msg = format!(
                    "peer {} (state {:?}) has not contributed to a commit since {last:?} (now {now})",
                    n.id,
                    n.state()
                );
                return Err(Violation::NotConverged(msg));
            }
        }
        Ok(())
    }
}

impl InvariantChecker {
    /// The span as peers with span codec `codec` compute it, apart from the protocol's code: each
    /// input's slice is encoded and decoded (the owner reduces decoded values), the rule is
    /// applied, and its `f32` result is encoded and decoded once more (what every holder keeps).
    fn quantised_span(
        &self,
        codec: CodecKind,
        inputs: &[WeightedGradient],
        range: Range<usize>,
    ) -> Vec<f64> {
        let len = range.len();
        let slices: Vec<WeightedGradient> = inputs
            .iter()
            .map(|(w, g)| (*w, Arc::from(round_trip(codec, &g[range.clone()]))))
            .collect();
        let reduced = match self.aggregation {
            None => weighted_mean(&slices, 0..len),
            Some(rule) => robust_values(rule, &slices, 0..len),
        };
        #[allow(clippy::cast_possible_truncation)] // the span holds f32 values
        let reduced: Vec<f32> = reduced.iter().map(|v| *v as f32).collect();
        round_trip(codec, &reduced)
            .into_iter()
            .map(f64::from)
            .collect()
    }
}

/// `values` encoded and decoded with `codec`; NaNs (which fail every comparison) if that fails.
fn round_trip(codec: CodecKind, values: &[f32]) -> Vec<f32> {
    let mut bytes = Vec::new();
    let mut out = vec![0f32; values.len()];
    let ok = codec
        .build(values.len(), 0)
        .and_then(|mut encoder| encoder.encode(values, &mut bytes))
        .and_then(|()| codec.decode(&bytes, &mut out));
    if ok.is_err() {
        out.fill(f32::NAN);
    }
    out
}

/// The sample-weighted mean of `inputs` over `range`, in `f64`, computed apart from the protocol.
fn weighted_mean(inputs: &[WeightedGradient], range: Range<usize>) -> Vec<f64> {
    let den: f64 = inputs.iter().map(|(w, _)| f64::from(*w)).sum();
    range
        .map(|i| {
            let num: f64 = inputs
                .iter()
                .map(|(w, g)| f64::from(*w) * f64::from(g[i]))
                .sum();
            num / den
        })
        .collect()
}

/// `rule` applied to the `range` slice of every input, as a span owner applies it (with the same
/// Multi-Krum fallback, [`span_rule`]). NaN marks a rule that refused its inputs, so the
/// comparison fails.
fn robust_values(rule: Aggregation, inputs: &[WeightedGradient], range: Range<usize>) -> Vec<f64> {
    let slices: Vec<&[f32]> = inputs.iter().map(|(_, g)| &g[range.clone()]).collect();
    let weights: Vec<u32> = inputs.iter().map(|(w, _)| *w).collect();
    match span_rule(rule, slices.len()).apply(&slices, &weights) {
        Ok(values) => values.into_iter().map(f64::from).collect(),
        Err(_) => vec![f64::NAN; slices.first().map_or(0, |s| s.len())],
    }
}
