//! [`CompressedMean`]: the whole compressed all-reduce of a mesh, run in one process over the
//! peers' flat buffers. It composes the codecs exactly as the butterfly all-reduce does (see the
//! module docs of [`codec`](super)), so training with it shows what a codec costs in accuracy
//! without sockets, and a simulator can count the bytes every peer would send.

use std::ops::Range;

use super::{Codec, CodecError, CodecKind, Contribution, reduce_encoded, reencode_reduced};

/// Spans of a `len`-float vector for `owners` peers of equal bandwidth: contiguous, in rank
/// order, lengths differing by at most one (the first `len % owners` spans are one longer).
#[must_use]
pub fn even_spans(len: usize, owners: usize) -> Vec<Range<usize>> {
    if owners == 0 {
        return Vec::new();
    }
    let (base, extra) = (len / owners, len % owners);
    let mut start = 0;
    (0..owners)
        .map(|rank| {
            let end = start + base + usize::from(rank < extra);
            let span = start..end;
            start = end;
            span
        })
        .collect()
}

/// The mean of `peers` flat vectors as the mesh computes it with a codec.
///
/// Span `j` (of [`even_spans`]) is owned by peer `j`. Per step:
///
/// 1. every peer encodes its part of every span with its own encoder for that span (the owner
///    included), so error feedback is per sender and per span;
/// 2. the owner decodes the contributions in rank order and sums `x / peers` in fp32
///    ([`reduce_encoded`]);
/// 3. the owner re-encodes the mean with its gather encoder ([`reencode_reduced`]) and every other
///    peer decodes those bytes.
///
/// Afterwards every peer's buffer holds the same floats, bit for bit.
#[derive(Debug)]
pub struct CompressedMean {
    kind: CodecKind,
    vector_len: usize,
    spans: Vec<Range<usize>>,
    /// `senders[peer][span]`.
    senders: Vec<Vec<Box<dyn Codec>>>,
    /// `gathers[span]`, held by the span's owner.
    gathers: Vec<Box<dyn Codec>>,
    /// One wire buffer per sender for the span being reduced, reused across steps.
    wires: Vec<Vec<u8>>,
    gather_wire: Vec<u8>,
    reduced: Vec<f32>,
    scratch: Vec<f32>,
}

impl CompressedMean {
    /// Encoders for `peers` peers averaging vectors of `vector_len` floats. Encoder seeds (used by
    /// PowerSGD only) derive from `seed`, the peer and the span, so a run is reproducible.
    ///
    /// Fails with [`CodecError::InvalidPeerCount`] unless `1 <= peers <= vector_len` (every span
    /// must hold at least one float), or if a span exceeds the codec limit.
    pub fn new(
        kind: CodecKind,
        vector_len: usize,
        peers: usize,
        seed: u64,
    ) -> Result<Self, CodecError> {
        if peers == 0 || peers > vector_len {
            return Err(CodecError::InvalidPeerCount { peers, vector_len });
        }
        let spans = even_spans(vector_len, peers);
        let stream = |peer: usize, span: usize| {
            seed ^ (peer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (span as u64).rotate_left(32)
        };
        let senders = (0..peers)
            .map(|peer| {
                spans
                    .iter()
                    .enumerate()
                    .map(|(j, span)| kind.build(span.len(), stream(peer, j)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let gathers = spans
            .iter()
            .enumerate()
            .map(|(j, span)| kind.build(span.len(), stream(peers + j, j)))
            .collect::<Result<Vec<_>, _>>()?;
        let longest = spans.iter().map(ExactSizeIterator::len).max().unwrap_or(0);
        Ok(Self {
            kind,
            vector_len,
            spans,
            senders,
            gathers,
            wires: vec![Vec::new(); peers],
            gather_wire: Vec::new(),
            reduced: Vec::with_capacity(longest),
            scratch: Vec::with_capacity(longest),
        })
    }

    /// The codec.
    #[must_use]
    pub fn kind(&self) -> CodecKind {
        self.kind
    }

    /// The span ranges, span `j` owned by peer `j`.
    #[must_use]
    pub fn spans(&self) -> &[Range<usize>] {
        &self.spans
    }

    /// Bytes peer `peer` sends per step: its encoded part of every span it does not own
    /// (reduce-scatter) plus its encoded span to every other peer (all-gather). `None` for an
    /// unknown peer.
    #[must_use]
    pub fn bytes_sent_per_step(&self, peer: usize) -> Option<usize> {
        let own = self.spans.get(peer)?;
        let others = self.spans.len() - 1;
        let scatter: usize = self
            .spans
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != peer)
            .map(|(_, span)| self.kind.encoded_len(span.len()))
            .sum();
        Some(scatter + others * self.kind.encoded_len(own.len()))
    }

    /// Replaces every buffer by the compressed mean of all of them (`buffers[p]` is peer `p`'s).
    ///
    /// Fails on a buffer count other than the peer count ([`CodecError::BufferCountMismatch`]) or
    /// a buffer length other than the vector length ([`CodecError::SpanLenMismatch`]), and on any encode or decode error (a
    /// non-finite gradient, say); buffers are then unspecified and the step must be dropped.
    pub fn reduce(&mut self, buffers: &mut [&mut [f32]]) -> Result<(), CodecError> {
        if buffers.len() != self.senders.len() {
            return Err(CodecError::BufferCountMismatch {
                expected: self.senders.len(),
                actual: buffers.len(),
            });
        }
        if let Some(bad) = buffers.iter().find(|b| b.len() != self.vector_len) {
            return Err(CodecError::SpanLenMismatch {
                expected: self.vector_len,
                actual: bad.len(),
            });
        }
        for owner in 0..self.spans.len() {
            self.reduce_span(owner, buffers)?;
        }
        Ok(())
    }

    fn reduce_span(&mut self, owner: usize, buffers: &mut [&mut [f32]]) -> Result<(), CodecError> {
        let span = self.spans[owner].clone();
        for ((senders, wire), buffer) in self.senders.iter_mut().zip(&mut self.wires).zip(&*buffers)
        {
            senders[owner].encode(&buffer[span.clone()], wire)?;
        }
        #[allow(clippy::cast_precision_loss)] // Peer counts are far below 2^24.
        let weight = 1.0 / self.wires.len() as f32;
        let contributions: Vec<Contribution<'_>> = self
            .wires
            .iter()
            .map(|bytes| Contribution { bytes, weight })
            .collect();
        self.reduced.clear();
        self.reduced.resize(span.len(), 0.0);
        reduce_encoded(
            self.kind,
            &contributions,
            &mut self.reduced,
            &mut self.scratch,
        )?;
        reencode_reduced(
            self.gathers[owner].as_mut(),
            &mut self.reduced,
            &mut self.gather_wire,
        )?;
        for (peer, buffer) in buffers.iter_mut().enumerate() {
            if peer == owner {
                buffer[span.clone()].copy_from_slice(&self.reduced);
            } else {
                self.kind
                    .decode(&self.gather_wire, &mut buffer[span.clone()])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample::{gaussian, rel_l2_error};
    use super::*;

    #[test]
    fn even_spans_tile_the_vector() {
        assert_eq!(even_spans(10, 4), vec![0..3, 3..6, 6..8, 8..10]);
        assert_eq!(even_spans(4, 4), vec![0..1, 1..2, 2..3, 3..4]);
        assert!(even_spans(5, 0).is_empty());
        assert!(CompressedMean::new(CodecKind::None, 3, 4, 0).is_err());
        assert!(CompressedMean::new(CodecKind::None, 3, 0, 0).is_err());
    }

    fn inputs(step: u64, peers: usize, n: usize) -> Vec<Vec<f32>> {
        (0..peers)
            .map(|p| gaussian(1000 * step + p as u64, n))
            .collect()
    }

    fn exact_mean(inputs: &[Vec<f32>]) -> Vec<f32> {
        let n = inputs[0].len();
        let weight = 1.0 / inputs.len() as f32;
        (0..n)
            .map(|i| inputs.iter().fold(0.0, |sum, v| sum + weight * v[i]))
            .collect()
    }

    fn reduce(mean: &mut CompressedMean, mut buffers: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        let mut views: Vec<&mut [f32]> = buffers.iter_mut().map(Vec::as_mut_slice).collect();
        mean.reduce(&mut views).unwrap();
        buffers
    }

    #[test]
    fn uncompressed_mean_is_the_rank_ordered_fp32_mean() {
        let (peers, n) = (4, 1001);
        let mut mean = CompressedMean::new(CodecKind::None, n, peers, 1).unwrap();
        let input = inputs(0, peers, n);
        let out = reduce(&mut mean, input.clone());
        let expected = exact_mean(&input);
        for buffer in &out {
            assert_eq!(buffer, &expected);
        }
        let too_few = &mut [&mut vec![0.0; n][..]];
        assert!(mean.reduce(too_few).is_err());
    }

    /// Every peer ends with the same bits, and lossy codecs stay close to the exact mean.
    #[test]
    fn every_peer_holds_the_same_mean() {
        let (peers, n) = (3, 2000);
        for (name, tolerance) in [("fp16", 1e-3), ("bf16", 1e-2), ("int8:64", 2e-2)] {
            let kind: CodecKind = name.parse().unwrap();
            let mut mean = CompressedMean::new(kind, n, peers, 1).unwrap();
            let input = inputs(1, peers, n);
            let out = reduce(&mut mean, input.clone());
            assert!(out.iter().all(|b| b == &out[0]), "{name}");
            let error = rel_l2_error(&exact_mean(&input), &out[0]);
            assert!(error < tolerance, "{name}: {error}");
        }
    }

    /// Error feedback on both sides (senders and gather) loses nothing over time: the sum of the
    /// decoded means approaches the sum of the exact means, with a gap that does not grow.
    #[test]
    fn error_feedback_means_catch_up_with_the_exact_sum() {
        let (peers, n, steps) = (4, 1000, 200);
        for name in ["topk:0.05", "powersgd:2"] {
            let kind: CodecKind = name.parse().unwrap();
            let mut mean = CompressedMean::new(kind, n, peers, 9).unwrap();
            let drift = gaussian(77, n);
            let (mut exact_sum, mut decoded_sum) = (vec![0.0f32; n], vec![0.0f32; n]);
            for step in 0..steps {
                // A persistent direction plus fresh noise per peer and step, like gradients.
                let input: Vec<Vec<f32>> = inputs(step + 2, peers, n)
                    .into_iter()
                    .map(|v| v.iter().zip(&drift).map(|(x, d)| 0.3 * x + d).collect())
                    .collect();
                let out = reduce(&mut mean, input.clone());
                assert!(out.iter().all(|b| b == &out[0]), "{name}");
                for ((e, d), (x, y)) in exact_sum
                    .iter_mut()
                    .zip(&mut decoded_sum)
                    .zip(exact_mean(&input).iter().zip(&out[0]))
                {
                    *e += x;
                    *d += y;
                }
            }
            let gap = rel_l2_error(&exact_sum, &decoded_sum);
            println!("{name}: relative gap after {steps} steps {gap:.3}");
            assert!(gap < 0.25, "{name}: {gap}");
        }
    }

    #[test]
    fn bytes_sent_count_scatter_and_gather() {
        let mean = CompressedMean::new(CodecKind::None, 10, 4, 0).unwrap();
        // Peer 0 owns 3 floats: sends 3 + 2 + 2 floats of others' spans, its own span to 3 peers.
        assert_eq!(mean.bytes_sent_per_step(0), Some(4 * (7 + 3 * 3)));
        assert_eq!(mean.bytes_sent_per_step(4), None);
    }
}
