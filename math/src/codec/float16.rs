//! `fp16` and `bf16`: 16-bit floats through the `half` crate, round to nearest even.
//!
//! fp16 keeps 11 significant bits but only reaches ±65504, so it is precise for gradients of
//! ordinary magnitude and rejects larger values ([`CodecError::OutOfRange`]) rather than send
//! infinities. bf16 keeps f32's exponent range with 8 significant bits, so it never overflows on
//! realistic data but is 8× coarser.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use std::fmt;

use super::{CodecError, CodecKind, check_input};

/// Floats converted per block. `half`'s slice conversions use F16C/NEON when present, and a
/// fixed-size stack block keeps the encoder allocation-free.
const STAGE: usize = 1024;

/// The parts of a 16-bit format the codec needs, so fp16 and bf16 share one implementation.
trait HalfFormat: Copy + Default {
    /// Exponent bits; all ones means infinity or NaN in both formats.
    const EXPONENT_MASK: u16;
    /// The codec this format implements.
    const KIND: CodecKind;
    fn from_bits(bits: u16) -> Self;
    fn to_bits(self) -> u16;
    fn is_infinite(self) -> bool;
    fn from_f32_slice(dst: &mut [Self], src: &[f32]);
    fn to_f32_slice(src: &[Self], dst: &mut [f32]);
}

impl HalfFormat for f16 {
    const EXPONENT_MASK: u16 = 0x7c00;
    const KIND: CodecKind = CodecKind::Fp16;
    fn from_bits(bits: u16) -> Self {
        Self::from_bits(bits)
    }
    fn to_bits(self) -> u16 {
        self.to_bits()
    }
    fn is_infinite(self) -> bool {
        self.is_infinite()
    }
    fn from_f32_slice(dst: &mut [Self], src: &[f32]) {
        dst.convert_from_f32_slice(src);
    }
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

impl HalfFormat for bf16 {
    const EXPONENT_MASK: u16 = 0x7f80;
    const KIND: CodecKind = CodecKind::Bf16;
    fn from_bits(bits: u16) -> Self {
        Self::from_bits(bits)
    }
    fn to_bits(self) -> u16 {
        self.to_bits()
    }
    fn is_infinite(self) -> bool {
        self.is_infinite()
    }
    fn from_f32_slice(dst: &mut [Self], src: &[f32]) {
        dst.convert_from_f32_slice(src);
    }
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

/// Encodes finite `input`; a value that rounds to infinity is [`CodecError::OutOfRange`].
fn encode_half<H: HalfFormat>(input: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.clear();
    out.reserve(input.len() * 2);
    let mut halves = [H::default(); STAGE];
    let mut staged = [0u8; STAGE * 2];
    for (chunk_index, chunk) in input.chunks(STAGE).enumerate() {
        let halves = &mut halves[..chunk.len()];
        H::from_f32_slice(halves, chunk);
        // Inputs are finite, so an infinity here is an overflow of the format's range.
        if let Some(offset) = halves.iter().position(|h| h.is_infinite()) {
            return Err(CodecError::OutOfRange {
                index: chunk_index * STAGE + offset,
                value: chunk[offset],
            });
        }
        let (words, _) = staged.as_chunks_mut::<2>();
        for (word, h) in words.iter_mut().zip(halves.iter()) {
            *word = h.to_bits().to_le_bytes();
        }
        out.extend_from_slice(&staged[..chunk.len() * 2]);
    }
    Ok(())
}

/// Decodes `out.len()` values; the caller has checked `bytes.len() == 2 * out.len()`.
fn decode_half<H: HalfFormat>(bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
    let mut halves = [H::default(); STAGE];
    let (words, _) = bytes.as_chunks::<2>();
    for (chunk_index, (dst, src)) in out.chunks_mut(STAGE).zip(words.chunks(STAGE)).enumerate() {
        let halves = &mut halves[..dst.len()];
        let mut exponent_all_ones = false;
        for (h, word) in halves.iter_mut().zip(src) {
            let bits = u16::from_le_bytes(*word);
            exponent_all_ones |= bits & H::EXPONENT_MASK == H::EXPONENT_MASK;
            *h = H::from_bits(bits);
        }
        if exponent_all_ones {
            let offset = src
                .iter()
                .position(|w| u16::from_le_bytes(*w) & H::EXPONENT_MASK == H::EXPONENT_MASK)
                .unwrap_or(0);
            return Err(CodecError::NonFiniteDecoded {
                index: chunk_index * STAGE + offset,
            });
        }
        H::to_f32_slice(halves, dst);
    }
    Ok(())
}

pub(super) fn decode_fp16(bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
    decode_half::<f16>(bytes, out)
}

pub(super) fn decode_bf16(bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
    decode_half::<bf16>(bytes, out)
}

/// fp16 or bf16 encoder for one span (stateless; one implementation for both formats).
#[derive(Debug)]
pub(super) struct HalfCodec<H> {
    span_len: usize,
    format: std::marker::PhantomData<H>,
}

/// fp16 encoder for one span.
pub(super) type Fp16Codec = HalfCodec<f16>;
/// bf16 encoder for one span.
pub(super) type Bf16Codec = HalfCodec<bf16>;

impl<H> HalfCodec<H> {
    pub(super) const fn new(span_len: usize) -> Self {
        Self {
            span_len,
            format: std::marker::PhantomData,
        }
    }
}

impl<H: HalfFormat + fmt::Debug + Send> super::Codec for HalfCodec<H> {
    fn kind(&self) -> CodecKind {
        H::KIND
    }

    fn span_len(&self) -> usize {
        self.span_len
    }

    fn encode(&mut self, input: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError> {
        check_input(input, self.span_len)?;
        encode_half::<H>(input, out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Codec;
    use super::*;

    #[test]
    fn fp16_rounds_to_nearest_even_and_rejects_overflow() {
        let mut codec = Fp16Codec::new(3);
        let mut bytes = Vec::new();
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even significand (1.0).
        let tie = 1.0 + 2f32.powi(-11);
        codec.encode(&[tie, 65504.0, -65519.0], &mut bytes).unwrap();
        let mut out = [0.0; 3];
        CodecKind::Fp16.decode(&bytes, &mut out).unwrap();
        assert_eq!(out, [1.0, 65504.0, -65504.0]);
        let err = codec.encode(&[0.0, 65520.0, 1.0], &mut bytes).unwrap_err();
        assert_eq!(
            err,
            CodecError::OutOfRange {
                index: 1,
                value: 65520.0
            }
        );
    }

    #[test]
    fn bf16_keeps_f32_range() {
        let mut codec = Bf16Codec::new(2);
        let mut bytes = Vec::new();
        codec.encode(&[1e38, -3e-39], &mut bytes).unwrap();
        let mut out = [0.0; 2];
        CodecKind::Bf16.decode(&bytes, &mut out).unwrap();
        assert!((out[0] - 1e38).abs() <= 1e38 * 2f32.powi(-8));
        assert!((out[1] + 3e-39).abs() <= 2f32.powi(-133));
        let err = codec.encode(&[f32::MAX, 0.0], &mut bytes).unwrap_err();
        assert!(matches!(err, CodecError::OutOfRange { index: 0, .. }));
    }

    #[test]
    fn hostile_nan_and_inf_patterns_are_rejected() {
        for (kind, bits) in [
            (CodecKind::Fp16, 0x7c00u16),
            (CodecKind::Fp16, 0xfe01),
            (CodecKind::Bf16, 0x7f80),
            (CodecKind::Bf16, 0xffc1),
        ] {
            let mut bytes = vec![0u8; 2 * 1500];
            bytes[2 * 1200..2 * 1201].copy_from_slice(&bits.to_le_bytes());
            let mut out = vec![0.0; 1500];
            let err = kind.decode(&bytes, &mut out).unwrap_err();
            assert_eq!(
                err,
                CodecError::NonFiniteDecoded { index: 1200 },
                "{kind} {bits:#x}"
            );
        }
    }
}
