//! Gradient compression codecs over `&[f32]`, usable without LibTorch.
//!
//! The node's all-reduce uses them to shrink gradient spans on the wire; the simulator uses
//! [`CodecKind::encoded_len`] to count bytes. Nothing here knows tensors, sockets or clocks, and
//! the only randomness (PowerSGD's initial Q) comes from a caller-supplied `u64` seed through
//! ChaCha8.
//!
//! # Shape of the API
//!
//! * [`CodecKind`] names a codec and its validated parameter (`none`, `fp16`, `bf16`,
//!   `int8[:block]`, `topk:<fraction>`, `powersgd:<rank>`). It gives the exact encoded size, the
//!   [`ErrorBound`], and the stateless, deterministic [`CodecKind::decode`].
//! * [`CodecKind::build`] makes a [`Codec`]: the encoder for one span of a fixed length, owning
//!   the error-feedback state of the stateful codecs. One instance per span a peer sends.
//! * Wire formats have no header: every peer of a run agrees on the kind (run configuration) and
//!   on the span length (span assignment), so the decoder knows the exact byte length before it
//!   reads anything and never sizes an allocation from the wire.
//!
//! ```
//! use gradmesh_math::codec::{CodecKind, Contribution, reduce_encoded, reencode_reduced};
//!
//! let kind: CodecKind = "int8:64".parse()?;
//! let span_len = 1000;
//! // Two senders, each with its own encoder for this span.
//! let mut wires = [Vec::new(), Vec::new()];
//! for (rank, wire) in wires.iter_mut().enumerate() {
//!     let gradient = vec![rank as f32 + 0.5; span_len];
//!     kind.build(span_len, rank as u64)?.encode(&gradient, wire)?;
//! }
//! // The span owner averages in rank order, then re-encodes once for the all-gather.
//! let contributions = [
//!     Contribution { bytes: &wires[0], weight: 0.5 },
//!     Contribution { bytes: &wires[1], weight: 0.5 },
//! ];
//! let (mut reduced, mut scratch, mut gather_wire) = (vec![0.0; span_len], Vec::new(), Vec::new());
//! reduce_encoded(kind, &contributions, &mut reduced, &mut scratch)?;
//! reencode_reduced(kind.build(span_len, 0)?.as_mut(), &mut reduced, &mut gather_wire)?;
//! // Every receiver decodes the owner's bytes to the owner's floats, bit for bit.
//! let mut received = vec![0.0; span_len];
//! kind.decode(&gather_wire, &mut received)?;
//! assert_eq!(received, reduced);
//! assert!((received[0] - 1.0).abs() < 0.01);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Non-finite values
//!
//! Encoding rejects NaN and ±Inf with [`CodecError::NonFiniteInput`] (and fp16 rejects finite
//! values beyond ±65504 with [`CodecError::OutOfRange`]) instead of clamping: a non-finite
//! gradient is a training fault the caller must see, and forwarding it would poison the reduced
//! span on every peer. Decoding rejects any input whose decoded value would be non-finite, so a
//! successful decode always yields finite floats.
//!
//! # Composition with the butterfly all-reduce
//!
//! A reduce-scatter followed by an all-gather, with codecs applied as follows:
//!
//! 1. **Reduce-scatter.** Each sender encodes its contribution to a span with its own [`Codec`]
//!    for that span (error feedback is per sender and per span) and sends the bytes to the span
//!    owner. The owner encodes its own contribution too, so the reduction is a function of bytes
//!    only and a replacement owner can recompute it after a failure.
//! 2. **Reduction.** The owner calls [`reduce_encoded`]: decode every contribution and sum them
//!    in fp32, weighted, in roster-rank order. The order is fixed by the caller, never by arrival.
//! 3. **All-gather.** The owner re-encodes the reduced span once with its gather codec and
//!    [`reencode_reduced`] replaces its own copy by the decoding of those bytes. Every receiver
//!    decodes the same bytes with the same deterministic decoder, so every peer, the owner
//!    included, holds bit-identical floats and can compare blake3 digests before applying them.
//!
//! Decoding is plain IEEE-754 f32 arithmetic in a fixed order (Rust never fuses a multiply and an
//! add on its own), so the results are identical across x86-64 and aarch64 as well.
//!
//! A lossy codec thus costs two quantisations per step (contribution and reduced span). For the
//! error-feedback codecs the owner's gather codec keeps its own residual, so what the all-gather
//! drops is carried into the next step rather than lost.
//!
//! PowerSGD here is a *per-sender* codec: each sender compresses its own contribution to a rank-r
//! `P Qᵀ`. The original algorithm instead all-reduces `P = M Q` (linear in `M` for a shared `Q`)
//! and then `Q = Mᵀ P` in two phases, which yields a rank-r approximation of the *sum*. The
//! per-sender form sends the same bytes per step but approximates each addend, so the sum has
//! rank up to `senders × r` before the owner's re-encode truncates it to rank r again. See
//! `docs/codecs.md` for the other limits (a flat span reshaped to a near-square matrix has less
//! low-rank structure than a layer's weight gradient).

mod error;
mod float16;
mod int8;
mod kind;
mod mesh;
mod powersgd;
mod raw;
mod reduce;
mod topk;

#[cfg(test)]
mod sample;
#[cfg(test)]
mod tests;

use std::fmt;

pub use error::{CodecError, ParseCodecKindError};
pub use kind::{CodecKind, Int8Block, PowerSgdRank, TopKFraction};
pub use mesh::{CompressedMean, even_spans};
pub use reduce::{Contribution, reduce_encoded, reencode_reduced};

/// Largest span a codec accepts, in floats. Top-k sends u32 indices, so a span must be
/// addressable by them; at 16 GiB of f32 it is far beyond any span gradmesh assigns.
pub const MAX_SPAN_LEN: usize = u32::MAX as usize;

/// Encoder for one span of a fixed length; decoding is delegated to the stateless
/// [`CodecKind::decode`].
///
/// Stateful codecs (top-k, PowerSGD) keep an error-feedback residual: what one step does not
/// send is added to the next step's input, so over many steps nothing is lost, only delayed.
pub trait Codec: Send + fmt::Debug {
    /// The configuration this codec was built from.
    fn kind(&self) -> CodecKind;

    /// The span length, in floats, this instance encodes.
    fn span_len(&self) -> usize;

    /// Clears `out` and writes exactly [`CodecKind::encoded_len`] bytes for `input`.
    ///
    /// `out`'s capacity is reused, so a steady-state step allocates nothing. On error `out`
    /// holds unspecified bytes and the residual of a stateful codec is unchanged, except for
    /// [`CodecError::ResidualOverflow`], which resets it.
    fn encode(&mut self, input: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Drops the error-feedback residual (after a peer rejoins or a step is abandoned).
    /// PowerSGD keeps its warm-start Q, which carries no gradient mass.
    fn reset(&mut self) {}

    /// Decodes bytes produced by any codec of the same kind and span length.
    fn decode(&self, bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
        if out.len() != self.span_len() {
            return Err(CodecError::SpanLenMismatch {
                expected: self.span_len(),
                actual: out.len(),
            });
        }
        self.kind().decode(bytes, out)
    }

    /// Exact encoded size of one span.
    fn encoded_len(&self) -> usize {
        self.kind().encoded_len(self.span_len())
    }

    /// Raw f32 bytes over encoded bytes for one span.
    fn compression_ratio(&self) -> f64 {
        self.kind().compression_ratio(self.span_len())
    }

    /// The guarantee one encode/decode gives.
    fn error_bound(&self) -> ErrorBound {
        self.kind().error_bound(self.span_len())
    }
}

/// What one encode/decode round trip guarantees, with `x` the input and `x̂` the decoded span.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ErrorBound {
    /// `x̂ == x` bit for bit.
    Exact,
    /// For every element, `|x̂ - x| <= max(rel * |x|, abs)`.
    PerElement {
        /// Relative bound for values in the format's normal range.
        rel: f64,
        /// Absolute bound for values in the format's subnormal range.
        abs: f64,
    },
    /// For every element, `|x̂ - x| <= max(rel * absmax, abs)`, `absmax` being the largest
    /// magnitude in its block of `block` floats.
    BlockAbsMax {
        /// Floats per block.
        block: usize,
        /// Bound relative to the block's absolute maximum.
        rel: f64,
        /// Bound for blocks flushed to zero because their absmax is negligible.
        abs: f64,
    },
    /// Error feedback: with `a = x + residual` the vector actually compressed,
    /// `‖a - x̂‖₂ <= contraction * ‖a‖₂`, and the new residual is exactly `a - x̂`. Hence the sum
    /// of decoded spans over steps equals the sum of inputs minus the current residual.
    ErrorFeedback {
        /// At most 1; top-k gives `sqrt(1 - k/n)`, PowerSGD (an orthogonal projection) 1.
        contraction: f64,
    },
}

/// Checks an encoder's input: the span length, then finiteness. Runs before any state changes.
fn check_input(input: &[f32], span_len: usize) -> Result<(), CodecError> {
    if input.len() != span_len {
        return Err(CodecError::SpanLenMismatch {
            expected: span_len,
            actual: input.len(),
        });
    }
    match first_non_finite(input) {
        Some(index) => Err(CodecError::NonFiniteInput {
            index,
            value: input[index],
        }),
        None => Ok(()),
    }
}

/// Position of the first NaN or infinity. Scans in blocks with a branch-free fold so the common
/// all-finite case vectorises; only a failing block is searched element by element.
fn first_non_finite(values: &[f32]) -> Option<usize> {
    const BLOCK: usize = 1024;
    for (block_index, block) in values.chunks(BLOCK).enumerate() {
        if !block.iter().fold(true, |ok, x| ok & x.is_finite()) {
            let offset = block.iter().position(|x| !x.is_finite())?;
            return Some(block_index * BLOCK + offset);
        }
    }
    None
}

/// Fails with [`CodecError::NonFiniteDecoded`] if a decoded value is NaN or infinite.
fn check_decoded(values: &[f32]) -> Result<(), CodecError> {
    match first_non_finite(values) {
        Some(index) => Err(CodecError::NonFiniteDecoded { index }),
        None => Ok(()),
    }
}

/// Adds `input` into an error-feedback residual. On overflow the residual is reset to zero (it
/// no longer holds meaningful values) and the step fails with [`CodecError::ResidualOverflow`].
fn accumulate_residual(residual: &mut [f32], input: &[f32]) -> Result<(), CodecError> {
    for (r, x) in residual.iter_mut().zip(input) {
        *r += *x;
    }
    if let Some(index) = first_non_finite(residual) {
        residual.fill(0.0);
        return Err(CodecError::ResidualOverflow { index });
    }
    Ok(())
}
