//! `int8:<block>`: symmetric 8-bit quantisation with one absmax scale per block.
//!
//! Wire format, per block of `block` floats (the last block may be shorter):
//! `[scale: f32 LE][code: i8; len]`, with `scale = absmax / 127` and `x̂ = code * scale`.
//! Codes stay in -127..=127 so the grid is symmetric and zero is exact; -128 on the wire is
//! rejected. Rounding to nearest puts every element within half a step, `absmax / 254`, of its
//! input, which for Gaussian data and 64-float blocks is about 0.55% relative L2 error.

use super::{CodecError, CodecKind, Int8Block, check_input};

/// Bound on `|x̂ - x| / absmax(block)`: half a quantisation step, `1/254`, plus slack for the f32
/// rounding of the scale, its reciprocal and the product (a few ulps, far below `2^-20`).
pub(super) const ERROR_REL_TO_ABSMAX: f64 = 1.0 / 254.0 + 1.0 / (1u64 << 20) as f64;

/// Blocks whose absmax is below `2^-100` are sent as zeros (scale 0). Keeping the scale a normal
/// f32 and `127 / absmax` finite is what makes the relative bound hold; the flushed values are
/// below any gradient magnitude that matters.
pub(super) const FLUSH_BELOW: f32 = 7.888_609e-31; // 2^-100

/// Adding then subtracting `1.5 * 2^23` rounds any `|y| < 2^22` to the nearest integer, ties to
/// even, using only the FPU's default rounding. Unlike `f32::round_ties_even` it needs no SSE4.1,
/// so the quantisation loop vectorises on baseline x86-64.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Bytes of the scale in front of each block.
const SCALE_BYTES: usize = 4;

pub(super) fn encoded_len(block: usize, span_len: usize) -> usize {
    span_len.saturating_add(span_len.div_ceil(block).saturating_mul(SCALE_BYTES))
}

/// Int8 encoder for one span.
#[derive(Debug)]
pub(super) struct Int8Codec {
    block: Int8Block,
    span_len: usize,
}

impl Int8Codec {
    pub(super) fn new(block: Int8Block, span_len: usize) -> Self {
        Self { block, span_len }
    }
}

impl super::Codec for Int8Codec {
    fn kind(&self) -> CodecKind {
        CodecKind::Int8 { block: self.block }
    }

    fn span_len(&self) -> usize {
        self.span_len
    }

    fn encode(&mut self, input: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError> {
        check_input(input, self.span_len)?;
        out.clear();
        out.reserve(encoded_len(self.block.get(), input.len()));
        for chunk in input.chunks(self.block.get()) {
            let (scale, inv_scale) = block_scale(chunk);
            out.extend_from_slice(&scale.to_le_bytes());
            // A mapped slice iterator has an exact length, so `extend` writes in place.
            out.extend(chunk.iter().map(|&x| quantise(x, inv_scale)));
        }
        Ok(())
    }
}

/// The block's scale `absmax / 127` and the multiplier `127 / absmax` (0 for an all-zero block).
fn block_scale(block: &[f32]) -> (f32, f32) {
    // For finite values the bit pattern of |x| orders like |x|, and an integer max vectorises.
    let absmax_bits = block
        .iter()
        .map(|x| x.to_bits() & 0x7fff_ffff)
        .fold(0, u32::max);
    let absmax = f32::from_bits(absmax_bits);
    if absmax < FLUSH_BELOW {
        return (0.0, 0.0);
    }
    (absmax / 127.0, 127.0 / absmax)
}

/// The code of `x` as a two's-complement byte, in -127..=127.
fn quantise(x: f32, inv_scale: f32) -> u8 {
    let y = (x * inv_scale).clamp(-127.0, 127.0);
    let rounded = (y + ROUND_MAGIC) - ROUND_MAGIC;
    (rounded as i8).to_le_bytes()[0]
}

/// Decodes `out.len()` floats; the caller has checked the exact encoded length.
pub(super) fn decode(block: usize, bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
    let mut rest = bytes;
    for (block_index, dst) in out.chunks_mut(block).enumerate() {
        let Some((scale_bytes, tail)) = rest.split_first_chunk::<SCALE_BYTES>() else {
            return Err(truncated(bytes, out.len(), block));
        };
        let Some((codes, tail)) = tail.split_at_checked(dst.len()) else {
            return Err(truncated(bytes, out.len(), block));
        };
        rest = tail;
        let scale = f32::from_le_bytes(*scale_bytes);
        // `scale >= 0` is false for NaN; the product check keeps every decoded value finite.
        if !(scale >= 0.0 && (scale * 127.0).is_finite()) {
            return Err(CodecError::InvalidScale {
                block: block_index,
                scale,
            });
        }
        let mut has_min_code = false;
        for (x, &code) in dst.iter_mut().zip(codes) {
            has_min_code |= code == 0x80;
            *x = f32::from(i8::from_le_bytes([code])) * scale;
        }
        if has_min_code {
            let offset = codes.iter().position(|&c| c == 0x80).unwrap_or(0);
            return Err(CodecError::InvalidCode {
                index: block_index * block + offset,
            });
        }
    }
    Ok(())
}

fn truncated(bytes: &[u8], span_len: usize, block: usize) -> CodecError {
    CodecError::EncodedLenMismatch {
        expected: encoded_len(block, span_len),
        actual: bytes.len(),
        span_len,
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample::{gaussian, rel_l2_error};
    use super::*;

    #[test]
    fn magic_rounding_matches_round_ties_even() {
        let mut y = -127.5f32;
        while y <= 127.5 {
            assert_eq!((y + ROUND_MAGIC) - ROUND_MAGIC, y.round_ties_even(), "{y}");
            y += 0.125;
        }
    }

    #[test]
    fn gaussian_relative_l2_error_is_below_one_percent() {
        for block in [64, 256, 1000] {
            for seed in 0..4 {
                let input = gaussian(seed, 100_003);
                let kind = CodecKind::Int8 {
                    block: Int8Block::new(block).unwrap(),
                };
                let mut codec = kind.build(input.len(), seed).unwrap();
                let mut bytes = Vec::new();
                codec.encode(&input, &mut bytes).unwrap();
                let mut out = vec![0.0; input.len()];
                kind.decode(&bytes, &mut out).unwrap();
                let err = rel_l2_error(&input, &out);
                assert!(err <= 0.01, "block {block} seed {seed}: {err}");
            }
        }
    }

    #[test]
    fn zero_block_and_extremes_decode_exactly() {
        let kind = CodecKind::Int8 {
            block: Int8Block::new(4).unwrap(),
        };
        let input = [0.0, 0.0, 0.0, 0.0, 3.0, -3.0, 0.0, 1e-3];
        let mut codec = kind.build(input.len(), 0).unwrap();
        let mut bytes = Vec::new();
        codec.encode(&input, &mut bytes).unwrap();
        let mut out = [1.0; 8];
        kind.decode(&bytes, &mut out).unwrap();
        assert_eq!(out[..7], [0.0, 0.0, 0.0, 0.0, 3.0, -3.0, 0.0]);
    }

    #[test]
    fn tiny_blocks_flush_to_zero() {
        assert_eq!(FLUSH_BELOW, 2f32.powi(-100));
        let kind = CodecKind::Int8 {
            block: Int8Block::new(2).unwrap(),
        };
        let input = [1e-35, -1e-44, 2e-30, -1e-30];
        let mut bytes = Vec::new();
        kind.build(4, 0)
            .unwrap()
            .encode(&input, &mut bytes)
            .unwrap();
        let mut out = [1.0; 4];
        kind.decode(&bytes, &mut out).unwrap();
        assert_eq!(out[..2], [0.0, 0.0]);
        assert!((out[2] - 2e-30).abs() <= 2e-30 / 254.0 * 1.001);
    }

    #[test]
    fn hostile_scales_and_codes_are_rejected() {
        let kind = CodecKind::Int8 {
            block: Int8Block::new(2).unwrap(),
        };
        let mut out = [0.0; 3];
        for scale in [-1.0f32, f32::NAN, f32::INFINITY, f32::MAX] {
            let mut bytes = vec![0u8; kind.encoded_len(3)];
            bytes[6..10].copy_from_slice(&scale.to_le_bytes());
            let err = kind.decode(&bytes, &mut out).unwrap_err();
            assert!(
                matches!(err, CodecError::InvalidScale { block: 1, .. }),
                "{err:?}"
            );
        }
        let mut bytes = vec![0u8; kind.encoded_len(3)];
        bytes[5] = 0x80;
        let err = kind.decode(&bytes, &mut out).unwrap_err();
        assert_eq!(err, CodecError::InvalidCode { index: 1 });
    }
}
