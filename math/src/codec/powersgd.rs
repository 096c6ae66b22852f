//! `powersgd:<rank>`: rank-r PowerSGD with error feedback, as a per-sender codec.
//!
//! The span of `n` floats is viewed row-major as a `rows × cols` matrix `A` with
//! `cols = ceil(sqrt(n))`, `rows = ceil(n / cols)`, the missing tail of the last row being zero
//! and never stored. With `A = input + residual` and `Q` persisted from the previous step
//! (seeded from ChaCha8 on the first step), one power iteration computes
//!
//! 1. `P = A Q`, then orthonormalises P's columns (modified Gram-Schmidt, two passes);
//! 2. `Q' = Aᵀ P`, sent with P; the receiver reconstructs `Â = P Q'ᵀ`;
//! 3. `residual = A - Â`, computed from the bytes with the receiver's own routine, and `Q = Q'`.
//!
//! Since P is orthonormal, `Â = P Pᵀ A` is an orthogonal projection of A, so
//! `‖A - Â‖ <= ‖A‖` (the [`ErrorBound::ErrorFeedback`](super::ErrorBound) contraction of 1), and
//! when A has rank at most r (and Q is generic) the projection is A itself: exact up to rounding.
//!
//! Wire format: P as `rank` columns of `rows` f32 LE, then Q' as `rank` columns of `cols` f32
//! LE, `rank` being capped at `min(rows, cols)`. All arithmetic is f32 in a fixed order, so every
//! receiver reconstructs bit-identical values.

use std::ops::Range;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::{CodecError, CodecKind, PowerSgdRank, accumulate_residual, check_decoded, check_input};

/// The matrix view of a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shape {
    len: usize,
    rows: usize,
    cols: usize,
    /// Effective rank: the configured rank capped at the matrix dimensions.
    rank: usize,
}

impl Shape {
    pub(super) fn new(len: usize, rank: usize) -> Self {
        if len == 0 {
            return Self {
                len,
                rows: 0,
                cols: 0,
                rank: 0,
            };
        }
        let mut cols = len.isqrt();
        if cols * cols < len {
            cols += 1;
        }
        let rows = len.div_ceil(cols);
        Self {
            len,
            rows,
            cols,
            rank: rank.min(rows).min(cols),
        }
    }

    pub(super) fn encoded_len(self) -> usize {
        self.rank
            .saturating_mul(self.rows + self.cols)
            .saturating_mul(4)
    }

    /// Span positions of one row; the last row may be short.
    fn row_range(self, row: usize) -> Range<usize> {
        let start = row * self.cols;
        start..(start + self.cols).min(self.len)
    }
}

/// PowerSGD encoder with error feedback for one span.
#[derive(Debug)]
pub(super) struct PowerSgdCodec {
    rank: PowerSgdRank,
    shape: Shape,
    /// Refills a column of Q that has collapsed to zero (after an all-zero step), which would
    /// otherwise stay zero forever.
    rng: ChaCha8Rng,
    residual: Vec<f32>,
    /// Persisted Q: `shape.rank` columns of `cols` floats, column after column.
    q: Vec<f32>,
    /// Q' of the current step, swapped into `q` at the end.
    q_next: Vec<f32>,
    /// P: `shape.rank` columns of `rows` floats.
    p: Vec<f32>,
    /// One reconstructed row.
    row: Vec<f32>,
}

impl PowerSgdCodec {
    pub(super) fn new(rank: PowerSgdRank, span_len: usize, seed: u64) -> Self {
        let shape = Shape::new(span_len, rank.get());
        let mut codec = Self {
            rank,
            shape,
            rng: ChaCha8Rng::seed_from_u64(seed),
            residual: vec![0.0; span_len],
            q: vec![0.0; shape.rank * shape.cols],
            q_next: vec![0.0; shape.rank * shape.cols],
            p: vec![0.0; shape.rank * shape.rows],
            row: vec![0.0; shape.cols],
        };
        codec.refill_dead_q_columns();
        codec
    }

    /// Fills every all-zero column of Q with uniform values in [-1, 1) from the seeded RNG.
    fn refill_dead_q_columns(&mut self) {
        let cols = self.shape.cols;
        for column in self.q.chunks_exact_mut(cols.max(1)) {
            if column.iter().all(|&x| x == 0.0) {
                for x in column.iter_mut() {
                    // 24 random bits map exactly onto f32's significand.
                    let unit = (self.rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
                    *x = 2.0 * unit - 1.0;
                }
            }
        }
    }

    /// `P = A Q`, one dot product per row and column of Q.
    fn compute_p(&mut self) {
        let Shape { rows, cols, .. } = self.shape;
        for row in 0..rows {
            let a_row = &self.residual[self.shape.row_range(row)];
            for (j, q_column) in self.q.chunks_exact(cols).enumerate() {
                self.p[j * rows + row] = dot(a_row, &q_column[..a_row.len()]);
            }
        }
    }

    /// `Q' = Aᵀ P`, accumulated row by row.
    fn compute_q_next(&mut self) {
        let Shape { rows, cols, .. } = self.shape;
        self.q_next.fill(0.0);
        for row in 0..rows {
            let a_row = &self.residual[self.shape.row_range(row)];
            for (j, q_column) in self.q_next.chunks_exact_mut(cols).enumerate() {
                axpy(&mut q_column[..a_row.len()], self.p[j * rows + row], a_row);
            }
        }
    }

    /// `residual -= P Q'ᵀ`, reconstructed from the encoded bytes exactly as a receiver does.
    fn subtract_decoded(&mut self, bytes: &[u8]) {
        // `bytes` is this encoder's own output, so it always has the exact length.
        let Some(factors) = Factors::split(self.shape, bytes) else {
            return;
        };
        for row in 0..self.shape.rows {
            let range = self.shape.row_range(row);
            let decoded = &mut self.row[..range.len()];
            factors.reconstruct_row(row, decoded);
            for (r, d) in self.residual[range].iter_mut().zip(decoded.iter()) {
                *r -= *d;
            }
        }
    }
}

impl super::Codec for PowerSgdCodec {
    fn kind(&self) -> CodecKind {
        CodecKind::PowerSgd { rank: self.rank }
    }

    fn span_len(&self) -> usize {
        self.shape.len
    }

    fn encode(&mut self, input: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError> {
        check_input(input, self.shape.len)?;
        accumulate_residual(&mut self.residual, input)?;
        self.refill_dead_q_columns();
        self.compute_p();
        orthonormalise_columns(&mut self.p, self.shape.rows);
        self.compute_q_next();
        out.clear();
        out.reserve(self.shape.encoded_len());
        for x in self.p.iter().chain(&self.q_next) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        self.subtract_decoded(out);
        std::mem::swap(&mut self.q, &mut self.q_next);
        Ok(())
    }

    fn reset(&mut self) {
        self.residual.fill(0.0);
    }
}

/// The factors P and Q' as they sit in an encoded buffer of the exact length.
struct Factors<'a> {
    shape: Shape,
    p: &'a [[u8; 4]],
    q: &'a [[u8; 4]],
}

impl<'a> Factors<'a> {
    /// `None` unless `bytes` has exactly the shape's encoded length (callers check it first;
    /// this keeps a wrong length from ever reaching the indexing below).
    fn split(shape: Shape, bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() != shape.encoded_len() {
            return None;
        }
        let (words, _) = bytes.as_chunks::<4>();
        let (p, q) = words.split_at_checked(shape.rank * shape.rows)?;
        Some(Self { shape, p, q })
    }

    /// Row `row` of `P Q'ᵀ` into `out` (the row's length). The single reconstruction routine for
    /// encoder and decoder, so both produce the same bits.
    fn reconstruct_row(&self, row: usize, out: &mut [f32]) {
        let Shape { rows, cols, .. } = self.shape;
        out.fill(0.0);
        for (p_column, q_column) in self.p.chunks_exact(rows).zip(self.q.chunks_exact(cols)) {
            let p = f32::from_le_bytes(p_column[row]);
            for (x, q) in out.iter_mut().zip(q_column) {
                *x += p * f32::from_le_bytes(*q);
            }
        }
    }
}

/// Decodes into `out`; the caller has checked the exact length. Non-finite factors, or finite
/// ones whose product overflows, surface as non-finite outputs and are rejected.
pub(super) fn decode(shape: Shape, bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
    let factors = Factors::split(shape, bytes).ok_or(CodecError::EncodedLenMismatch {
        expected: shape.encoded_len(),
        actual: bytes.len(),
        span_len: shape.len,
    })?;
    for row in 0..shape.rows {
        factors.reconstruct_row(row, &mut out[shape.row_range(row)]);
    }
    check_decoded(out)
}

/// Makes the columns (each `len` floats) orthonormal, in order; a column that is numerically
/// zero after projection stays zero, so `P Pᵀ` remains a projection.
fn orthonormalise_columns(columns: &mut [f32], len: usize) {
    if len == 0 {
        return;
    }
    for j in 0..columns.len() / len {
        let (done, rest) = columns.split_at_mut(j * len);
        let current = &mut rest[..len];
        // Two passes of modified Gram-Schmidt restore orthogonality lost to rounding.
        for _ in 0..2 {
            for previous in done.chunks_exact(len) {
                let overlap = dot(current, previous);
                axpy(current, -overlap, previous);
            }
        }
        // Pre-scaling by the max magnitude keeps the squared norm from overflowing.
        let max = current.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if !max.is_normal() {
            current.fill(0.0);
            continue;
        }
        current.iter_mut().for_each(|x| *x /= max);
        let inv_norm = 1.0 / dot(current, current).sqrt();
        current.iter_mut().for_each(|x| *x *= inv_norm);
    }
}

/// Dot product with eight fixed lanes: vectorises, and the summation order is fixed by this
/// code, not by the compiler, so results are reproducible.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_lanes, a_tail) = a.as_chunks::<8>();
    let (b_lanes, b_tail) = b.as_chunks::<8>();
    let mut lanes = [0.0f32; 8];
    for (x, y) in a_lanes.iter().zip(b_lanes) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}

/// `y += alpha * x`.
fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

#[cfg(test)]
mod tests {
    use super::super::Codec;
    use super::super::sample::{gaussian, rel_l2_error};
    use super::*;

    fn codec(rank: u32, n: usize, seed: u64) -> PowerSgdCodec {
        PowerSgdCodec::new(PowerSgdRank::new(rank).unwrap(), n, seed)
    }

    /// `U Vᵀ` for random `rows × rank` U and `cols × rank` V, flattened row-major.
    fn low_rank(rows: usize, cols: usize, rank: usize, seed: u64) -> Vec<f32> {
        let u = gaussian(seed, rows * rank);
        let v = gaussian(seed + 1, cols * rank);
        let mut m = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                m[r * cols + c] = (0..rank).map(|j| u[r * rank + j] * v[c * rank + j]).sum();
            }
        }
        m
    }

    #[test]
    fn shape_is_near_square() {
        assert_eq!(
            Shape::new(10, 4),
            Shape {
                len: 10,
                rows: 3,
                cols: 4,
                rank: 3
            }
        );
        assert_eq!(
            Shape::new(4096, 4),
            Shape {
                len: 4096,
                rows: 64,
                cols: 64,
                rank: 4
            }
        );
        assert_eq!(Shape::new(1, 4).encoded_len(), 8);
        assert_eq!(Shape::new(0, 4).encoded_len(), 0);
    }

    #[test]
    fn exact_for_low_rank_input() {
        for (data_rank, codec_rank) in [(1, 1), (2, 2), (2, 4), (4, 4)] {
            let input = low_rank(64, 64, data_rank, 7);
            let mut codec = codec(codec_rank, input.len(), 3);
            let mut bytes = Vec::new();
            codec.encode(&input, &mut bytes).unwrap();
            let mut out = vec![0.0; input.len()];
            codec.decode(&bytes, &mut out).unwrap();
            let err = rel_l2_error(&input, &out);
            assert!(
                err < 1e-5,
                "data rank {data_rank}, codec rank {codec_rank}: {err}"
            );
        }
    }

    #[test]
    fn projection_never_grows_and_feeds_back() {
        let input = gaussian(11, 5000);
        let mut codec = codec(4, input.len(), 5);
        let (mut bytes, mut out) = (Vec::new(), vec![0.0; input.len()]);
        codec.encode(&input, &mut bytes).unwrap();
        codec.decode(&bytes, &mut out).unwrap();
        let err = rel_l2_error(&input, &out);
        assert!(
            err <= 1.0 && err > 0.5,
            "random data is far from rank 4: {err}"
        );
        // The residual is exactly what was not sent.
        for ((x, d), r) in input.iter().zip(&out).zip(&codec.residual) {
            assert!((x - d - r).abs() <= 1e-6 * x.abs().max(1.0));
        }
    }

    #[test]
    fn zero_steps_do_not_kill_q_and_seed_fixes_bytes() {
        let n = 1024;
        let (mut a, mut b) = (codec(2, n, 9), codec(2, n, 9));
        let (mut bytes_a, mut bytes_b) = (Vec::new(), Vec::new());
        a.encode(&vec![0.0; n], &mut bytes_a).unwrap();
        let input = low_rank(32, 32, 1, 4);
        a.encode(&input, &mut bytes_a).unwrap();
        let mut out = vec![0.0; n];
        a.decode(&bytes_a, &mut out).unwrap();
        assert!(rel_l2_error(&input, &out) < 1e-5);
        b.encode(&vec![0.0; n], &mut bytes_b).unwrap();
        b.encode(&input, &mut bytes_b).unwrap();
        assert_eq!(bytes_a, bytes_b);
    }
}
