//! Span-level pieces of a round: collecting contributions, the fixed-order weighted mean, and the
//! result digest.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

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
    /// The weighted mean.
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
    /// Contributors whose values it averages, in rank order.
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

/// The sample-weighted mean of the collected contributions, accumulated in `f64` in rank order:
/// the result depends only on which contributions are present, never on their arrival order.
pub(super) fn reduce_span(own: &OwnedSpan, len: usize) -> ReducedSpan {
    let mut acc = vec![0f64; len];
    let mut bitmap = vec![0u8; own.contributions.len().div_ceil(8)];
    let mut total_weight = 0u64;
    for (rank, (weight, data)) in own
        .contributions
        .iter()
        .enumerate()
        .filter_map(|(r, c)| c.as_ref().map(|c| (r, c)))
    {
        bitmap[rank / 8] |= 1 << (rank % 8);
        total_weight += u64::from(*weight);
        let w = f64::from(*weight);
        for (a, x) in acc.iter_mut().zip(data.iter()) {
            *a += w * f64::from(*x);
        }
    }
    let denominator = total_weight.max(1) as f64;
    #[allow(clippy::cast_possible_truncation)] // the mean of f32 values fits an f32
    let data: Arc<[f32]> = acc.iter().map(|a| (a / denominator) as f32).collect();
    ReducedSpan {
        contributors: bitmap,
        total_weight,
        data,
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
