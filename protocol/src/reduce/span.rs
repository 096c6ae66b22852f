//! Span-level pieces of a round: collecting contributions, the fixed-order reduction (the
//! weighted mean or a robust rule), and the result digest.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use crate::config::Aggregation;
use crate::ids::{Digest, PeerId};
use crate::roster::Roster;
use crate::wire::{Body, Reduced, f32_bytes};

use super::{RejectReason, RoundResult};

/// Contributions collected for a span this peer reduces, as owner or as backup.
#[derive(Debug)]
pub(super) struct OwnedSpan {
    /// `true` when this peer stands in for a silent owner.
    pub(super) as_backup: bool,
    /// Indexed by contributor rank: `(weight, values)`.
    contributions: Vec<Option<(u32, Arc<[f32]>)>>,
    /// The span has been reduced (or, for a backup, the owner's version arrived).
    pub(super) done: bool,
    /// Peers that sent failover contributions; a standing-down backup relays the owner's span.
    pub(super) requesters: BTreeSet<PeerId>,
}

impl OwnedSpan {
    pub(super) fn new(contributors: usize, as_backup: bool) -> Self {
        Self {
            as_backup,
            contributions: vec![None; contributors],
            done: false,
            requesters: BTreeSet::new(),
        }
    }

    /// Keeps the first contribution of each rank; contributions after the reduction are dropped.
    pub(super) fn insert(&mut self, rank: usize, weight: u32, data: Arc<[f32]>) {
        if self.done {
            return;
        }
        if let Some(slot @ None) = self.contributions.get_mut(rank) {
            *slot = Some((weight, data));
        }
    }

    pub(super) fn count_excluding(&self, rank: Option<usize>) -> usize {
        self.contributions
            .iter()
            .enumerate()
            .filter(|(r, c)| c.is_some() && Some(*r) != rank)
            .count()
    }
}

/// A reduced span as every member holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReducedSpan {
    /// Bitmap over contributor ranks of the contributions included.
    pub contributors: Vec<u8>,
    /// Sum of their weights.
    pub total_weight: u64,
    /// The reduced values: the weighted mean, or the configured robust rule's output.
    pub data: Arc<[f32]>,
}

impl ReducedSpan {
    pub(super) fn to_body(&self, roster: Digest, j: usize) -> Body {
        Body::Reduced(Reduced {
            roster,
            span: u32::try_from(j).unwrap_or(u32::MAX),
            contributors: self.contributors.clone(),
            total_weight: self.total_weight,
            floats: u32::try_from(self.data.len()).unwrap_or(u32::MAX),
            data: self.data.clone(),
        })
    }

    /// Checks a received span's bitmap: the right length, no bit beyond the roster, at least one
    /// contributor, and a positive weight.
    pub(super) fn from_wire(r: &Reduced, contributors: usize) -> Option<Self> {
        if r.contributors.len() != contributors.div_ceil(8) || r.total_weight == 0 {
            return None;
        }
        let any = r.contributors.iter().any(|b| *b != 0);
        let beyond = (contributors..r.contributors.len() * 8).any(|i| bit(&r.contributors, i));
        (any && !beyond).then(|| Self {
            contributors: r.contributors.clone(),
            total_weight: r.total_weight,
            data: r.data.clone(),
        })
    }
}

/// One span of a committed result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanResult {
    /// Where the span lies in the flat vector.
    pub range: Range<usize>,
    /// Contributors whose values it reduces (every input of the rule), in rank order.
    pub contributors: Vec<PeerId>,
    /// Sum of their weights.
    pub total_weight: u64,
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Rejects values of the wrong length or with a NaN or infinity.
pub(super) fn validate_values(data: &[f32], expected: usize) -> Result<(), RejectReason> {
    if data.len() != expected {
        return Err(RejectReason::WrongLength {
            expected,
            got: data.len(),
        });
    }
    match data.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(RejectReason::NonFinite { index }),
        None => Ok(()),
    }
}

/// Reduces the collected contributions with `rule`, in rank order: the result depends only on
/// which contributions are present, never on their arrival order. [`Aggregation::Mean`] keeps
/// the sample-weighted mean accumulated in `f64` ([`mean_span`]); any other rule is applied by
/// [`robust_span`]. Either way the bitmap and `total_weight` name every contribution the rule
/// was given (not only those a robust rule kept), so anyone can recompute the span from them.
pub(super) fn reduce_span(own: &OwnedSpan, len: usize, rule: Aggregation) -> ReducedSpan {
    match rule {
        Aggregation::Mean => mean_span(own, len),
        _ => robust_span(own, len, rule),
    }
}

/// The rule a span owner actually applies to `contributions` inputs: `rule` itself, except that
/// Multi-Krum falls back to the coordinate-wise median when its bounds (`n > 2f + 2`,
/// `m <= n - f`) do not hold for the contributions at hand (a span reduced at its deadline with
/// few contributions). The fallback depends only on `n`, so every recomputation agrees.
#[must_use]
pub fn span_rule(rule: Aggregation, contributions: usize) -> Aggregation {
    match rule {
        Aggregation::MultiKrum { f, m }
            if contributions <= 2 * f + 2 || m == 0 || m > contributions - f =>
        {
            Aggregation::Median
        }
        other => other,
    }
}

/// A robust rule over the contributions present, in rank order, weighted by their sample counts.
/// A rule that refuses its inputs (impossible after [`span_rule`] and the config's checks, as
/// contributions are finite, non-empty and of one length) falls back to the weighted mean, so
/// the result is still a deterministic function of the inputs.
fn robust_span(own: &OwnedSpan, len: usize, rule: Aggregation) -> ReducedSpan {
    let mut bitmap = vec![0u8; own.contributions.len().div_ceil(8)];
    let mut total_weight = 0u64;
    let mut values: Vec<&[f32]> = Vec::with_capacity(own.contributions.len());
    let mut weights: Vec<u32> = Vec::with_capacity(own.contributions.len());
    for (rank, (weight, data)) in own
        .contributions
        .iter()
        .enumerate()
        .filter_map(|(r, c)| c.as_ref().map(|c| (r, c)))
    {
        bitmap[rank / 8] |= 1 << (rank % 8);
        total_weight += u64::from(*weight);
        values.push(data);
        weights.push(*weight);
    }
    match span_rule(rule, values.len()).apply(&values, &weights) {
        Ok(data) if data.len() == len => ReducedSpan {
            contributors: bitmap,
            total_weight,
            data: data.into(),
        },
        _ => mean_span(own, len),
    }
}

/// Elements [`mean_span`] accumulates at a time: the `f64` block stays in L1 while every
/// contribution streams through it once.
const MEAN_BLOCK: usize = 1024;

/// The sample-weighted mean of the collected contributions, accumulated in `f64` in rank order.
///
/// Works block by block so that the `f64` accumulator stays in cache; each element still sums
/// `weight × value` over the contributions in rank order and divides once, so the bytes are
/// the same as a whole-span accumulation (and independent of arrival order, §5.1).
fn mean_span(own: &OwnedSpan, len: usize) -> ReducedSpan {
    let mut bitmap = vec![0u8; own.contributions.len().div_ceil(8)];
    let mut total_weight = 0u64;
    let mut present: Vec<(f64, &[f32])> = Vec::with_capacity(own.contributions.len());
    for (rank, (weight, data)) in own
        .contributions
        .iter()
        .enumerate()
        .filter_map(|(r, c)| c.as_ref().map(|c| (r, c)))
    {
        bitmap[rank / 8] |= 1 << (rank % 8);
        total_weight += u64::from(*weight);
        present.push((f64::from(*weight), &data[..len.min(data.len())]));
    }
    let denominator = total_weight.max(1) as f64;
    let mut out = Vec::with_capacity(len);
    let mut acc = [0f64; MEAN_BLOCK];
    for start in (0..len).step_by(MEAN_BLOCK) {
        let end = (start + MEAN_BLOCK).min(len);
        let acc = &mut acc[..end - start];
        acc.fill(0.0);
        for (w, data) in &present {
            let block = &data[start.min(data.len())..end.min(data.len())];
            for (a, x) in acc.iter_mut().zip(block) {
                *a += w * f64::from(*x);
            }
        }
        #[allow(clippy::cast_possible_truncation)] // the mean of f32 values fits an f32
        out.extend(acc.iter().map(|a| (a / denominator) as f32));
    }
    ReducedSpan {
        contributors: bitmap,
        total_weight,
        data: Arc::from(out),
    }
}

/// Concatenates the spans and hashes everything that defines the result.
pub(super) fn assemble(roster: &Roster, spans: &[&ReducedSpan]) -> RoundResult {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"gradmesh-result");
    hasher.update(&roster.digest().0);
    let mut data = Vec::with_capacity(roster.vector_len());
    let mut results = Vec::with_capacity(spans.len());
    for (span, range) in spans.iter().zip(roster.spans()) {
        hasher.update(&(span.contributors.len() as u64).to_le_bytes());
        hasher.update(&span.contributors);
        hasher.update(&span.total_weight.to_le_bytes());
        hasher.update(&f32_bytes(&span.data));
        data.extend_from_slice(&span.data);
        let contributors = roster
            .contributors()
            .iter()
            .enumerate()
            .filter(|(r, _)| bit(&span.contributors, *r))
            .map(|(_, p)| *p)
            .collect();
        results.push(SpanResult {
            range: range.clone(),
            contributors,
            total_weight: span.total_weight,
        });
    }
    RoundResult {
        round: roster.round(),
        base: roster.base(),
        digest: hasher.finalize().into(),
        data: data.into(),
        spans: results,
        committee: roster.contributors().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span_of(values: &[(usize, u32, [f32; 2])], contributors: usize) -> OwnedSpan {
        let mut own = OwnedSpan::new(contributors, false);
        for (rank, weight, v) in values {
            own.insert(*rank, *weight, Arc::from(&v[..]));
        }
        own
    }

    #[test]
    fn multi_krum_falls_back_to_median_below_its_bounds() {
        let krum = Aggregation::MultiKrum { f: 1, m: 2 };
        assert_eq!(span_rule(krum, 4), Aggregation::Median);
        assert_eq!(span_rule(krum, 5), krum);
        assert_eq!(
            span_rule(Aggregation::MultiKrum { f: 1, m: 5 }, 5),
            Aggregation::Median
        );
        assert_eq!(span_rule(Aggregation::Median, 1), Aggregation::Median);
    }

    #[test]
    fn robust_span_is_order_free_and_names_every_input() {
        let inputs = [
            (0, 2, [1.0, -1.0]),
            (1, 3, [2.0, -2.0]),
            (2, 1, [-50.0, 80.0]),
            (3, 2, [3.0, -3.0]),
        ];
        let mut reversed = inputs;
        reversed.reverse();
        let a = reduce_span(&span_of(&inputs, 5), 2, Aggregation::Median);
        let b = reduce_span(&span_of(&reversed, 5), 2, Aggregation::Median);
        assert_eq!(a, b);
        // Weighted median (weights 2, 3, 1, 2 of 8): the outlier moves nothing.
        assert_eq!(&a.data[..], &[2.0, -2.0]);
        assert_eq!(a.contributors, vec![0b0000_1111]);
        assert_eq!(a.total_weight, 8);
        // The mean keeps its own f64 path and is pulled by the outlier.
        let mean = reduce_span(&span_of(&inputs, 5), 2, Aggregation::Mean);
        assert_eq!(
            &mean.data[..],
            &[
                (2.0 + 6.0 - 50.0 + 6.0) / 8.0,
                (-2.0 - 6.0 + 80.0 - 6.0) / 8.0
            ]
        );
    }
}
