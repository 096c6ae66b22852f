//! Typed codec errors. Every failure caused by input data or by bytes from a peer is one of these
//! variants; no codec path panics on such data.

use thiserror::Error;

/// Why an encode, a decode or a reduction failed.
///
/// Encode errors leave a stateless codec untouched; for error-feedback codecs the variant says
/// what happened to the residual. After a decode error the contents of the output slice are
/// unspecified (but every element is initialised), so callers must discard it.
#[derive(Clone, Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum CodecError {
    /// An input element is NaN or infinite. Gradients with such values are a training fault the
    /// caller must see; encoding them would silently poison every peer's reduction.
    #[error("input element {index} is not finite ({value})")]
    NonFiniteInput {
        /// Position of the first offending element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// A finite input element does not fit the codec's number format (fp16 saturates at 65504).
    #[error("input element {index} = {value} is outside the range of the codec's format")]
    OutOfRange {
        /// Position of the first offending element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Adding the error-feedback residual to the input overflowed f32. The residual has been
    /// reset to zero so the codec stays usable.
    #[error("input plus error-feedback residual overflowed at element {index}; residual reset")]
    ResidualOverflow {
        /// Position of the first overflowing element.
        index: usize,
    },
    /// The codec instance was built for a span of another length.
    #[error("codec built for spans of {expected} floats, called with {actual}")]
    SpanLenMismatch {
        /// Length the codec was built for.
        expected: usize,
        /// Length it was called with.
        actual: usize,
    },
    /// A span is longer than [`MAX_SPAN_LEN`](super::MAX_SPAN_LEN).
    #[error("span of {len} floats exceeds the codec limit of {max} floats")]
    SpanTooLong {
        /// Requested span length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded buffer does not have the exact length the codec produces for the output
    /// length. Catches truncation, padding and a sender/receiver disagreement on the span.
    #[error("encoded buffer is {actual} bytes, expected {expected} for {span_len} floats")]
    EncodedLenMismatch {
        /// Length the codec produces for `span_len` floats.
        expected: usize,
        /// Length received.
        actual: usize,
        /// Output length given by the caller.
        span_len: usize,
    },
    /// A decoded element (or an element of a reduced sum) is NaN or infinite: either the bytes
    /// are hostile or the sum overflowed.
    #[error("decoded element {index} is not finite")]
    NonFiniteDecoded {
        /// Position of the first offending element.
        index: usize,
    },
    /// An int8 block scale is negative, non-finite or so large that `127 * scale` overflows.
    #[error("int8 block {block} carries invalid scale {scale}")]
    InvalidScale {
        /// Block number.
        block: usize,
        /// The scale read from the wire.
        scale: f32,
    },
    /// An int8 code of -128, which the encoder never emits (codes are symmetric in -127..=127).
    #[error("int8 code -128 at element {index}")]
    InvalidCode {
        /// Position of the offending element.
        index: usize,
    },
    /// A top-k index is out of range or not strictly greater than the previous one. Strictly
    /// increasing indices make the encoding canonical and rule out duplicates.
    #[error("top-k entry {position} has index {index}, out of range or not increasing")]
    InvalidIndex {
        /// Entry number in the encoded list.
        position: usize,
        /// Index read from the wire.
        index: u32,
    },
    /// A reduction weight is NaN or infinite.
    #[error("contribution {position} has non-finite weight {weight}")]
    InvalidWeight {
        /// Position of the contribution.
        position: usize,
        /// The weight.
        weight: f32,
    },
    /// A [`CompressedMean`](super::CompressedMean) needs at least one peer and at least one
    /// float per peer's span.
    #[error("cannot split {vector_len} floats into spans for {peers} peers")]
    InvalidPeerCount {
        /// Peers requested.
        peers: usize,
        /// Length of the averaged vector.
        vector_len: usize,
    },
    /// A reduction was handed buffers for another number of peers than it was built for.
    #[error("expected one buffer for each of {expected} peers, got {actual}")]
    BufferCountMismatch {
        /// Peers the reduction was built for.
        expected: usize,
        /// Buffers given.
        actual: usize,
    },
}

/// Why a codec name such as `topk:0.01` could not be parsed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseCodecKindError {
    /// The name before `:` is not a known codec.
    #[error(
        "unknown codec `{name}` (expected none, fp16, bf16, int8[:block], topk:fraction, powersgd:rank)"
    )]
    UnknownCodec {
        /// The name given.
        name: String,
    },
    /// The codec needs a parameter (`topk:0.01`, `powersgd:4`).
    #[error("codec `{name}` needs a parameter, e.g. {example}")]
    MissingParameter {
        /// The codec name.
        name: String,
        /// An example of a valid spelling.
        example: &'static str,
    },
    /// The codec takes no parameter (`none`, `fp16`, `bf16`).
    #[error("codec `{name}` takes no parameter")]
    UnexpectedParameter {
        /// The codec name.
        name: String,
    },
    /// The parameter is not a number in the codec's valid range.
    #[error("invalid parameter `{value}` for codec `{name}`: {reason}")]
    InvalidParameter {
        /// The codec name.
        name: String,
        /// The parameter text.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },
}
