//! `none`: raw little-endian f32. Exact; the baseline every other codec is measured against.

use super::{CodecError, CodecKind, check_decoded, check_input};

/// Floats staged per block when writing, so the byte conversion runs on a fixed-size stack array
/// that the compiler turns into straight stores.
const STAGE: usize = 1024;

/// Raw f32 encoder for one span.
#[derive(Debug)]
pub(super) struct RawCodec {
    span_len: usize,
}

impl RawCodec {
    pub(super) fn new(span_len: usize) -> Self {
        Self { span_len }
    }
}

impl super::Codec for RawCodec {
    fn kind(&self) -> CodecKind {
        CodecKind::None
    }

    fn span_len(&self) -> usize {
        self.span_len
    }

    fn encode(&mut self, input: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError> {
        check_input(input, self.span_len)?;
        out.clear();
        out.reserve(input.len() * 4);
        let mut staged = [0u8; STAGE * 4];
        for chunk in input.chunks(STAGE) {
            let (words, _) = staged.as_chunks_mut::<4>();
            for (word, x) in words.iter_mut().zip(chunk) {
                *word = x.to_le_bytes();
            }
            out.extend_from_slice(&staged[..chunk.len() * 4]);
        }
        Ok(())
    }
}

/// Decodes `out.len()` floats; the caller has checked `bytes.len() == 4 * out.len()`.
pub(super) fn decode(bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
    let (words, _) = bytes.as_chunks::<4>();
    for (x, word) in out.iter_mut().zip(words) {
        *x = f32::from_le_bytes(*word);
    }
    // Any bit pattern is a valid f32, so NaN and Inf from a hostile peer are caught here.
    check_decoded(out)
}
