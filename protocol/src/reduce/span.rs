//! Span-level pieces of a round: collecting contributions, the fixed-order reduction (the
//! weighted mean or a robust rule), the span codec (docs/protocol.md §3.7), and the result digest.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use gradmesh_math::codec::CodecError;

use crate::config::{Aggregation, CodecKind};
use crate::floats::Floats;
use crate::ids::{Digest, PeerId};
use crate::roster::Roster;
use crate::wire::{Body, Reduced, f32_bytes};

use super::{RejectReason, RoundResult, bit};

/// Contributions collected for a span this peer reduces, as owner or as backup.
#[derive(Debug)]
pub(super) struct OwnedSpan {
    /// `true` when this peer stands in for a silent owner.
    pub(super) as_backup: bool,
    /// Indexed by contributor rank: `(weight, values)`.
    contributions: Vec<Option<(u32, Floats)>>,
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
    pub(super) fn insert(&mut self, rank: usize, weight: u32, data: Floats) {
        if self.done {
            return;
        }
        if let Some(slot @ None) = self.contributions.get_mut(rank) {
            *slot = Some((weight, data));
        }
    }

    /// Drops the contribution of `rank` (its values turned out not to be finite).
    pub(super) fn drop_rank(&mut self, rank: usize) {
        if let Some(slot) = self.contributions.get_mut(rank) {
            *slot = None;
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
    /// The reduced values: the weighted mean, or the configured robust rule's output; with a
    /// span codec, the decoding of `encoded`.
    pub data: Floats,
    /// The codec `encoded` is in ([`CodecKind::None`]: no encoding, `data` travels raw).
    pub codec: CodecKind,
    /// The owner's encoding of the span, relayed verbatim (never re-encoded); empty with
    /// [`CodecKind::None`].
    pub encoded: Arc<[u8]>,
}

impl ReducedSpan {
    pub(super) fn to_body(&self, roster: Digest, j: usize) -> Body {
        let raw = self.codec == CodecKind::None;
        Body::Reduced(Reduced {
            roster,
            span: u32::try_from(j).unwrap_or(u32::MAX),
            contributors: self.contributors.clone(),
            total_weight: self.total_weight,
            codec: self.codec,
            floats: u32::try_from(self.data.len()).unwrap_or(u32::MAX),
            data: if raw { self.data.clone() } else { no_floats() },
            encoded: self.encoded.clone(),
        })
    }

    /// Checks a received span's bitmap: the right length, no bit beyond the roster, at least one
    /// contributor, and a positive weight. `data` are its values, already decoded and checked
    /// ([`received_values`]).
    pub(super) fn from_wire(r: &Reduced, contributors: usize, data: Floats) -> Option<Self> {
        if r.contributors.len() != contributors.div_ceil(8) || r.total_weight == 0 {
            return None;
        }
        let any = r.contributors.iter().any(|b| *b != 0);
        let beyond = (contributors..r.contributors.len() * 8).any(|i| bit(&r.contributors, i));
        (any && !beyond).then(|| Self {
            contributors: r.contributors.clone(),
            total_weight: r.total_weight,
            data,
            codec: r.codec,
            encoded: r.encoded.clone(),
        })
    }

    /// The owner's last step with a span codec: encode the reduced values once and hold the
    /// decoding of those bytes, exactly what every receiver will decode. A no-op for
    /// [`CodecKind::None`].
    pub(super) fn encoded_once(self, codec: CodecKind) -> Result<Self, RejectReason> {
        if codec == CodecKind::None {
            return Ok(self);
        }
        let (data, encoded) = quantise(codec, &self.data)?;
        Ok(Self {
            data,
            codec,
            encoded,
            ..self
        })
    }
}

/// A span's values as they travel: `(raw floats, codec bytes)`, one of the two empty.
pub(super) type WireValues = (Floats, Arc<[u8]>);

fn no_floats() -> Floats {
    Floats::default()
}

fn no_bytes() -> Arc<[u8]> {
    Arc::from(Vec::new())
}

/// A local encode failure (a NaN or infinite gradient value, or one beyond fp16's range).
fn local_error(e: CodecError) -> RejectReason {
    match e {
        CodecError::NonFiniteInput { index, .. } => RejectReason::NonFinite { index },
        other => RejectReason::Codec(other.to_string()),
    }
}

/// `values` as `codec` puts them on the wire: `(raw floats, codec bytes)`, the one `codec` does
/// not use left empty. Stateless codecs only (the configuration refuses the others), so the
/// encoder is built per call and keeps nothing.
pub(super) fn encode_values(codec: CodecKind, values: &Floats) -> Result<WireValues, RejectReason> {
    if codec == CodecKind::None {
        return Ok((values.clone(), no_bytes()));
    }
    let mut encoder = codec.build(values.len(), 0).map_err(local_error)?;
    let mut bytes = Vec::with_capacity(codec.encoded_len(values.len()));
    encoder.encode(values, &mut bytes).map_err(local_error)?;
    Ok((no_floats(), Arc::from(bytes)))
}

/// What every receiver holds of `values` sent under `codec`: the values themselves for
/// [`CodecKind::None`], else the decoding of their encoding; with the encoded bytes.
pub(super) fn quantise(codec: CodecKind, values: &Floats) -> Result<WireValues, RejectReason> {
    let (data, encoded) = encode_values(codec, values)?;
    if codec == CodecKind::None {
        return Ok((data, encoded));
    }
    let mut decoded = zeroed_floats(values.len());
    codec
        .decode(&encoded, &mut decoded)
        .map_err(|e| RejectReason::Codec(e.to_string()))?;
    Ok((Floats::from(decoded), encoded))
}

/// When the finiteness of received raw values is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FiniteCheck {
    /// On receipt.
    Now,
    /// By the reduction that reads them anyway: [`mean_span`] checks each block of a
    /// contribution as it accumulates it, which saves a pass over every received byte.
    InMean,
}

/// The values of a received span of `expected` floats, sent as `(codec, floats, data, encoded)`:
/// the raw floats, or the decoding of the codec's bytes. Refuses another codec than the mesh's,
/// the wrong length, undecodable bytes, and any NaN or infinity (after decoding; for raw values
/// with [`FiniteCheck::InMean`], when the mean reads them). The length is checked before
/// anything is allocated.
pub(super) fn received_values(
    mesh: CodecKind,
    (codec, floats, data, encoded): (CodecKind, u32, &Floats, &[u8]),
    expected: usize,
    finite: FiniteCheck,
) -> Result<Floats, RejectReason> {
    if codec != mesh {
        return Err(RejectReason::WrongCodec);
    }
    if codec == CodecKind::None {
        match finite {
            FiniteCheck::Now => validate_values(data, expected)?,
            FiniteCheck::InMean => check_len(data, expected)?,
        }
        return Ok(data.clone());
    }
    if floats as usize != expected || encoded.len() != codec.encoded_len(expected) {
        return Err(RejectReason::WrongLength {
            expected,
            got: floats as usize,
        });
    }
    let mut decoded = zeroed_floats(expected);
    codec.decode(encoded, &mut decoded).map_err(|e| match e {
        CodecError::NonFiniteDecoded { index } => RejectReason::NonFinite { index },
        other => RejectReason::Codec(other.to_string()),
    })?;
    // The codec guarantees finite output on success; checked again on the path every span takes.
    validate_values(&decoded, expected)?;
    Ok(Floats::from(decoded))
}

/// `len` zeros, written by `resize` rather than allocated zeroed: jemalloc serves a large zeroed
/// allocation by dropping the recycled pages (`MADV_DONTNEED`), and every one of them then
/// faults in again.
fn zeroed_floats(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.resize(len, 0.0);
    v
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

fn check_len(data: &[f32], expected: usize) -> Result<(), RejectReason> {
    if data.len() == expected {
        Ok(())
    } else {
        Err(RejectReason::WrongLength {
            expected,
            got: data.len(),
        })
    }
}

/// Rejects values of the wrong length or with a NaN or infinity.
pub(super) fn validate_values(data: &[f32], expected: usize) -> Result<(), RejectReason> {
    check_len(data, expected)?;
    match first_non_finite(data) {
        Some(index) => Err(RejectReason::NonFinite { index }),
        None => Ok(()),
    }
}

/// The index of the first NaN or infinity in `data`. Blocks of 64 fold their exponent bits
/// without an early exit, so the check vectorises (an all-ones exponent is a NaN or an
/// infinity); only a bad block is searched for the index.
fn first_non_finite(data: &[f32]) -> Option<usize> {
    const EXPONENT: u32 = 0x7f80_0000;
    let mut offset = 0;
    for block in data.chunks(64) {
        let bad = block.iter().fold(0u32, |bad, v| {
            bad | u32::from(v.to_bits() & EXPONENT == EXPONENT)
        });
        if bad != 0 {
            return Some(offset + block.iter().position(|v| !v.is_finite()).unwrap_or(0));
        }
        offset += block.len();
    }
    None
}

/// A contribution the mean found a NaN or infinity in: its rank and the first bad index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NonFiniteAt {
    pub(super) rank: usize,
    pub(super) index: usize,
}

/// Reduces the collected contributions with `rule`, in rank order: the result depends only on
/// which contributions are present, never on their arrival order. [`Aggregation::Mean`] keeps
/// the sample-weighted mean accumulated in `f64` ([`mean_span`]); any other rule is applied by
/// [`robust_span`]. Either way the bitmap and `total_weight` name every contribution the rule
/// was given (not only those a robust rule kept), so anyone can recompute the span from them.
///
/// # Errors
/// The first contribution holding a NaN or infinity (only the mean meets one: robust rules get
/// values checked on receipt); the caller drops it and reduces again.
pub(super) fn reduce_span(
    own: &OwnedSpan,
    len: usize,
    rule: Aggregation,
) -> Result<ReducedSpan, NonFiniteAt> {
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

/// The contributions an owner holds for its span, in rank order, with the bitmap and total
/// weight that name them in the reduced span.
struct Present<'a> {
    bitmap: Vec<u8>,
    total_weight: u64,
    /// (weight, values) per present contribution, values cut to the span's length.
    contributions: Vec<(u32, &'a [f32])>,
    /// The rank of each present contribution.
    ranks: Vec<usize>,
}

impl<'a> Present<'a> {
    fn of(own: &'a OwnedSpan, len: usize) -> Self {
        let mut bitmap = vec![0u8; own.contributions.len().div_ceil(8)];
        let mut total_weight = 0u64;
        let mut contributions = Vec::with_capacity(own.contributions.len());
        let mut ranks = Vec::with_capacity(own.contributions.len());
        for (rank, (weight, data)) in own
            .contributions
            .iter()
            .enumerate()
            .filter_map(|(r, c)| c.as_ref().map(|c| (r, c)))
        {
            bitmap[rank / 8] |= 1 << (rank % 8);
            total_weight += u64::from(*weight);
            contributions.push((*weight, &data[..len.min(data.len())]));
            ranks.push(rank);
        }
        Self {
            bitmap,
            total_weight,
            contributions,
            ranks,
        }
    }
}

/// A robust rule over the contributions present, in rank order, weighted by their sample counts.
/// A rule that refuses its inputs (impossible after [`span_rule`] and the config's checks, as
/// contributions are finite, non-empty and of one length) falls back to the weighted mean, so
/// the result is still a deterministic function of the inputs.
fn robust_span(own: &OwnedSpan, len: usize, rule: Aggregation) -> Result<ReducedSpan, NonFiniteAt> {
    let Present {
        bitmap,
        total_weight,
        contributions,
        ..
    } = Present::of(own, len);
    let (weights, values): (Vec<u32>, Vec<&[f32]>) = contributions.into_iter().unzip();
    match span_rule(rule, values.len()).apply(&values, &weights) {
        Ok(data) if data.len() == len => Ok(ReducedSpan {
            contributors: bitmap,
            total_weight,
            data: data.into(),
            codec: CodecKind::None,
            encoded: no_bytes(),
        }),
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
/// the same as a whole-span accumulation (and independent of arrival order, §5.1). Each
/// contribution's block is checked for NaN and infinities just before it is accumulated, while
/// it is in cache ([`FiniteCheck::InMean`]); the first bad contribution ends the mean.
fn mean_span(own: &OwnedSpan, len: usize) -> Result<ReducedSpan, NonFiniteAt> {
    let Present {
        bitmap,
        total_weight,
        contributions,
        ranks,
    } = Present::of(own, len);
    let denominator = total_weight.max(1) as f64;
    let mut out = Vec::with_capacity(len);
    let mut acc = [0f64; MEAN_BLOCK];
    for start in (0..len).step_by(MEAN_BLOCK) {
        let end = (start + MEAN_BLOCK).min(len);
        let acc = &mut acc[..end - start];
        acc.fill(0.0);
        for ((weight, data), rank) in contributions.iter().zip(&ranks) {
            let w = f64::from(*weight);
            let block = &data[start.min(data.len())..end.min(data.len())];
            if let Some(at) = first_non_finite(block) {
                return Err(NonFiniteAt {
                    rank: *rank,
                    index: start + at,
                });
            }
            for (a, x) in acc.iter_mut().zip(block) {
                *a += w * f64::from(*x);
            }
        }
        #[allow(clippy::cast_possible_truncation)] // the mean of f32 values fits an f32
        out.extend(acc.iter().map(|a| (a / denominator) as f32));
    }
    Ok(ReducedSpan {
        contributors: bitmap,
        total_weight,
        data: Floats::from(out),
        codec: CodecKind::None,
        encoded: no_bytes(),
    })
}

/// Floats copied and hashed at a time by [`assemble`] (64 KiB: fits L2 with room to spare).
const ASSEMBLE_BLOCK: usize = 16 * 1024;

/// Concatenates the spans and hashes everything that defines the result.
pub(super) fn assemble(roster: &Roster, spans: &[&ReducedSpan]) -> RoundResult {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"gradmesh-result");
    hasher.update(&roster.digest().0);
    // The result is written once, into a vector that becomes the result's buffer as it is;
    // each span is copied and hashed block by block, so blake3 reads what the copy just wrote,
    // from cache.
    let mut data: Vec<f32> = Vec::with_capacity(roster.vector_len());
    let mut results = Vec::with_capacity(spans.len());
    for (span, range) in spans.iter().zip(roster.spans()) {
        hasher.update(&(span.contributors.len() as u64).to_le_bytes());
        hasher.update(&span.contributors);
        hasher.update(&span.total_weight.to_le_bytes());
        for block in span.data.chunks(ASSEMBLE_BLOCK) {
            let start = data.len();
            data.extend_from_slice(block);
            hasher.update(&f32_bytes(&data[start..]));
        }
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
        data: Floats::from(data),
        spans: results,
        committee: roster.contributors().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerConfig;
    use crate::reduce::{ReduceRound, RoundOutcome, RoundOutput};
    use crate::time::Timestamp;
    use crate::wire::{Contribution, SpanRequest};

    type Sent = Vec<(PeerId, PeerId, Body)>;

    /// `n` contributors of a `len`-float vector whose spans are sized by bandwidths 1..=n, so
    /// they are uneven and not multiples of an int8 block.
    fn rounds(codec: CodecKind, n: u64, len: u64) -> Vec<ReduceRound> {
        let roster = crate::reduce::tests::roster(n, len);
        let config = PeerConfig::builder().codec(codec).build().expect("valid");
        crate::reduce::tests::start_contributors(&config, &roster, |rank| {
            (0..len as usize)
                .map(|i| ((rank * 7919 + i * 104_729) % 2001) as f32 * 1e-3 - 1.0)
                .collect()
        })
    }

    /// Delivers every message `keep` lets through, at once, until nothing is left; returns what
    /// was delivered, the rejections and the outcomes.
    fn pump(
        rounds: &mut [ReduceRound],
        keep: impl Fn(&Body) -> bool,
    ) -> (Sent, Vec<(PeerId, RejectReason)>, Vec<RoundOutcome>) {
        let ids: Vec<PeerId> = rounds.iter().map(|r| r.me).collect();
        let (mut sent, mut rejected, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..10_000 {
            let mut queue = Vec::new();
            for (i, round) in rounds.iter_mut().enumerate() {
                while let Some(out) = round.poll_output() {
                    match out {
                        RoundOutput::Send { to, body } if keep(&body) => {
                            queue.push((ids[i], to, body));
                        }
                        RoundOutput::Send { .. } => {}
                        RoundOutput::Rejected { peer, reason } => rejected.push((peer, reason)),
                        RoundOutput::Finished(o) => outcomes.push(o),
                    }
                }
            }
            if queue.is_empty() {
                break;
            }
            for (from, to, body) in queue {
                let at = ids.iter().position(|p| *p == to).expect("member");
                rounds[at].handle_message(Timestamp::ZERO, from, body.clone());
                sent.push((from, to, body));
            }
        }
        (sent, rejected, outcomes)
    }

    fn committed(outcomes: &[RoundOutcome]) -> Vec<&RoundResult> {
        outcomes
            .iter()
            .filter_map(|o| match o {
                RoundOutcome::Committed(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Payload bytes of every Contribution and Reduced sent.
    fn span_payloads(sent: &Sent) -> (usize, usize) {
        let (mut contributions, mut reduced) = (0, 0);
        for (_, _, body) in sent {
            match body {
                Body::Contribution(_) => contributions += crate::wire::payload_bytes(body),
                Body::Reduced(_) => reduced += crate::wire::payload_bytes(body),
                _ => {}
            }
        }
        (contributions, reduced)
    }

    /// Issue 4 item 5: with a span codec every Contribution and Reduced payload is exactly the
    /// codec's `encoded_len` of its span (so the round's span bytes shrink by the codec's ratio),
    /// every peer commits the same digest, and the result is the quantised mean.
    #[test]
    fn codecs_shrink_span_payloads_by_their_ratio_and_keep_results_identical() {
        let (n, len) = (4, 4000);
        let mut raw = rounds(CodecKind::None, n, len);
        let (sent, rejected, outcomes) = pump(&mut raw, |_| true);
        assert!(rejected.is_empty(), "{rejected:?}");
        let (raw_contrib, raw_reduced) = span_payloads(&sent);
        let exact = committed(&outcomes)[0].data.clone();
        for name in ["fp16", "bf16", "int8:64", "int8:7"] {
            let codec: CodecKind = name.parse().expect("valid");
            let mut mesh = rounds(codec, n, len);
            let spans: Vec<usize> = mesh[0].roster().spans().iter().map(|r| r.len()).collect();
            let (sent, rejected, outcomes) = pump(&mut mesh, |_| true);
            assert!(rejected.is_empty(), "{name}: {rejected:?}");
            let results = committed(&outcomes);
            assert_eq!(results.len(), n as usize, "{name}: every peer commits");
            assert!(
                results.iter().all(|r| r.digest == results[0].digest),
                "{name}"
            );
            // Each peer sends its slice of every other span; each owner its span to n-1 peers.
            let others = n as usize - 1;
            let encoded: usize = spans.iter().map(|&s| codec.encoded_len(s)).sum();
            let raw_len: usize = spans.iter().map(|&s| 4 * s).sum();
            let (contrib, reduced) = span_payloads(&sent);
            assert_eq!(
                (raw_contrib, raw_reduced),
                (others * raw_len, others * raw_len)
            );
            assert_eq!(
                (contrib, reduced),
                (others * encoded, others * encoded),
                "{name}"
            );
            let ratio = raw_contrib as f64 / contrib as f64;
            let expected = codec.compression_ratio(len as usize);
            assert!(
                (ratio - expected).abs() / expected < 0.01,
                "{name}: {ratio} vs {expected}"
            );
            // Quantised, yet close to the exact mean (two quantisations of values in [-1, 1]).
            let err = results[0]
                .data
                .iter()
                .zip(exact.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err > 0.0 && err < 0.02, "{name}: max error {err}");
        }
    }

    /// A member asked for a span it received relays the owner's encoded bytes, not a re-encoding
    /// of its decoded values (int8 recomputes its block scales, so that need not be identical).
    #[test]
    fn relayed_spans_are_the_owners_bytes_verbatim() {
        let codec: CodecKind = "int8:64".parse().expect("valid");
        let mut mesh = rounds(codec, 3, 500);
        // Without votes no round finishes, so every member still answers span requests.
        let (sent, rejected, outcomes) = pump(&mut mesh, |b| !matches!(b, Body::Vote(_)));
        assert!(rejected.is_empty() && outcomes.is_empty());
        let from_owner = sent
            .iter()
            .find_map(|(_, _, b)| match b {
                Body::Reduced(r) if r.span == 0 => Some(r.encoded.clone()),
                _ => None,
            })
            .expect("owner broadcast span 0");
        let roster = mesh[0].roster().digest();
        let asker = mesh[1].me;
        mesh[2].handle_message(
            Timestamp::ZERO,
            asker,
            Body::SpanRequest(SpanRequest { roster, span: 0 }),
        );
        let relayed = std::iter::from_fn(|| mesh[2].poll_output())
            .find_map(|o| match o {
                RoundOutput::Send {
                    body: Body::Reduced(r),
                    ..
                } => Some(r),
                _ => None,
            })
            .expect("relayed");
        assert_eq!(relayed.codec, codec);
        assert!(relayed.data.is_empty());
        assert_eq!(&relayed.encoded[..], &from_owner[..]);
    }

    /// NaN or infinity after decoding, another codec than the mesh's, and undecodable bytes are
    /// refused with the sender named.
    #[test]
    fn bad_encoded_contributions_are_refused_and_named() {
        let codec = CodecKind::Fp16;
        let mut mesh = rounds(codec, 3, 300);
        let (sender, owner) = (mesh[0].me, 1);
        let roster = mesh[owner].roster().digest();
        let floats = mesh[owner].roster().span(1).expect("span").len();
        let body = |codec: CodecKind, data: Vec<f32>, encoded: Vec<u8>| {
            Body::Contribution(Contribution {
                roster,
                span: 1,
                weight: 3,
                codec,
                floats: u32::try_from(floats).expect("small"),
                data: Floats::from(data),
                encoded: Arc::from(encoded),
            })
        };
        // fp16 0x7e00 is a NaN, 0x7c00 is +inf; the first bad value is at index 2.
        let mut nan = vec![0u8; 2 * floats];
        nan[4..6].copy_from_slice(&0x7e00u16.to_le_bytes());
        let mut inf = vec![0u8; 2 * floats];
        inf[4..6].copy_from_slice(&0x7c00u16.to_le_bytes());
        let cases = [
            (
                body(codec, vec![], nan),
                RejectReason::NonFinite { index: 2 },
            ),
            (
                body(codec, vec![], inf),
                RejectReason::NonFinite { index: 2 },
            ),
            (
                body(CodecKind::None, vec![0.5; floats], vec![]),
                RejectReason::WrongCodec,
            ),
            (
                body(codec, vec![], vec![0; 2 * floats - 2]),
                RejectReason::WrongLength {
                    expected: floats,
                    got: floats,
                },
            ),
        ];
        let mut expected = Vec::new();
        for (message, reason) in cases {
            mesh[owner].handle_message(Timestamp::ZERO, sender, message);
            expected.push((sender, reason));
        }
        // The genuine contributions still complete the round.
        let (_, rejected, outcomes) = pump(&mut mesh, |_| true);
        assert_eq!(rejected, expected);
        assert_eq!(committed(&outcomes).len(), 3);
    }

    #[test]
    fn the_mean_finds_a_non_finite_contribution_and_reduces_without_it() {
        // Three contributions over three mean blocks; rank 1 has an infinity in the second.
        let len = 2 * MEAN_BLOCK + 7;
        let values = |k: usize| {
            (0..len)
                .map(|i| (i * (k + 1)) as f32 * 0.25)
                .collect::<Vec<_>>()
        };
        let mut bad = values(1);
        bad[MEAN_BLOCK + 3] = f32::INFINITY;
        let mut own = OwnedSpan::new(3, false);
        own.insert(0, 2, Floats::from(values(0)));
        own.insert(1, 5, Floats::from(bad));
        own.insert(2, 1, Floats::from(values(2)));
        let found = reduce_span(&own, len, Aggregation::Mean).unwrap_err();
        assert_eq!(
            found,
            NonFiniteAt {
                rank: 1,
                index: MEAN_BLOCK + 3
            }
        );
        own.drop_rank(found.rank);
        let span = reduce_span(&own, len, Aggregation::Mean).unwrap();
        assert_eq!(span.contributors, vec![0b0000_0101]);
        assert_eq!(span.total_weight, 3);
        let mut without = OwnedSpan::new(3, false);
        without.insert(0, 2, Floats::from(values(0)));
        without.insert(2, 1, Floats::from(values(2)));
        assert_eq!(span, reduce_span(&without, len, Aggregation::Mean).unwrap());
        // Receipt checks only the length under `InMean`, everything under `Now`.
        let nan = Floats::from(vec![1.0, f32::NAN]);
        let parts = (CodecKind::None, 2, &nan, &[][..]);
        assert!(received_values(CodecKind::None, parts, 2, FiniteCheck::InMean).is_ok());
        assert_eq!(
            received_values(CodecKind::None, parts, 2, FiniteCheck::Now),
            Err(RejectReason::NonFinite { index: 1 })
        );
        assert!(matches!(
            received_values(CodecKind::None, parts, 3, FiniteCheck::InMean),
            Err(RejectReason::WrongLength { .. })
        ));
    }

    fn span_of(values: &[(usize, u32, [f32; 2])], contributors: usize) -> OwnedSpan {
        let mut own = OwnedSpan::new(contributors, false);
        for (rank, weight, v) in values {
            own.insert(*rank, *weight, Floats::from(v.to_vec()));
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
        let a = reduce_span(&span_of(&inputs, 5), 2, Aggregation::Median).unwrap();
        let b = reduce_span(&span_of(&reversed, 5), 2, Aggregation::Median).unwrap();
        assert_eq!(a, b);
        // Weighted median (weights 2, 3, 1, 2 of 8): the outlier moves nothing.
        assert_eq!(&a.data[..], &[2.0, -2.0]);
        assert_eq!(a.contributors, vec![0b0000_1111]);
        assert_eq!(a.total_weight, 8);
        // The mean keeps its own f64 path and is pulled by the outlier.
        let mean = reduce_span(&span_of(&inputs, 5), 2, Aggregation::Mean).unwrap();
        assert_eq!(
            &mean.data[..],
            &[
                (2.0 + 6.0 - 50.0 + 6.0) / 8.0,
                (-2.0 - 6.0 + 80.0 - 6.0) / 8.0
            ]
        );
    }
}
