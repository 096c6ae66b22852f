//! The full training state of one peer as bytes, for state sync to a joining peer.
//!
//! Encoding (all integers and floats little-endian, so bytes are identical on every machine):
//! `b"GMTS"`, `u32` version 1, `u64` step, `u64` optimizer step, `u64` parameter count `P`,
//! `u64` optimizer value count `S`, then `P` then `S` `f32`s. Decoding checks every length
//! against the input before allocating, the counts against the receiver's model, and that every
//! value is finite.

use crate::{
    OptimizerState,
    error::{KernelError, Result},
};

const MAGIC: &[u8; 4] = b"GMTS";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 4 + 4 + 8 * 4;

/// Parameters, optimizer state and step counter of a [`crate::Trainer`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingState {
    /// Training steps taken (also the next batch index for the seeded samplers).
    pub step: u64,
    /// Flat parameters in [`crate::FlatLayout`] order.
    pub params: Vec<f32>,
    /// The optimizer's flat state.
    pub optimizer: OptimizerState,
}

impl TrainingState {
    /// Deterministic encoding (see the module docs).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let floats = self.params.len() + self.optimizer.values.len();
        let mut out = Vec::with_capacity(HEADER_BYTES + 4 * floats);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        for n in [
            self.step,
            self.optimizer.step,
            self.params.len() as u64,
            self.optimizer.values.len() as u64,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for x in self.params.iter().chain(&self.optimizer.values) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Decodes bytes from [`TrainingState::to_bytes`], expecting exactly `params` parameters and
    /// `optimizer_values` optimizer values (the receiver's own model and optimizer sizes).
    pub fn from_bytes(bytes: &[u8], params: usize, optimizer_values: usize) -> Result<Self> {
        let header = bytes
            .get(..HEADER_BYTES)
            .ok_or(KernelError::BadState("shorter than its header"))?;
        if &header[..4] != MAGIC {
            return Err(KernelError::BadState("bad magic"));
        }
        if header[4..8] != VERSION.to_le_bytes() {
            return Err(KernelError::BadState("unknown version"));
        }
        let word = |i: usize| {
            let at = 8 + 8 * i;
            u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0xff; 8]))
        };
        let (step, optimizer_step) = (word(0), word(1));
        if word(2) != params as u64 || word(3) != optimizer_values as u64 {
            return Err(KernelError::BadState(
                "sizes do not match this model and optimizer",
            ));
        }
        let body = &bytes[HEADER_BYTES..];
        if body.len() != 4 * (params + optimizer_values) {
            return Err(KernelError::BadState(
                "body length does not match its header",
            ));
        }
        let mut floats = crate::data::decode_f32(body);
        // A state with NaN or ±Inf would poison every gradient computed on it: a donor that
        // serves one is refused like one that serves junk.
        if !floats.iter().all(|x| x.is_finite()) {
            return Err(KernelError::BadState(
                "parameters or optimizer state are not finite",
            ));
        }
        let values = floats.split_off(params);
        Ok(Self {
            step,
            params: floats,
            optimizer: OptimizerState {
                step: optimizer_step,
                values,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let state = TrainingState {
            step: 7,
            params: vec![1.5, -2.0, 3.25],
            optimizer: OptimizerState {
                step: 6,
                values: vec![0.5; 6],
            },
        };
        let bytes = state.to_bytes();
        assert_eq!(bytes.len(), HEADER_BYTES + 4 * 9);
        assert_eq!(TrainingState::from_bytes(&bytes, 3, 6).unwrap(), state);
        assert!(TrainingState::from_bytes(&bytes, 4, 6).is_err());
        assert!(TrainingState::from_bytes(&bytes[..bytes.len() - 1], 3, 6).is_err());
        assert!(TrainingState::from_bytes(&bytes[..10], 3, 6).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(TrainingState::from_bytes(&bad, 3, 6).is_err());
        for poison in [f32::NAN, f32::INFINITY] {
            let mut poisoned = state.clone();
            poisoned.optimizer.values[5] = poison;
            assert!(TrainingState::from_bytes(&poisoned.to_bytes(), 3, 6).is_err());
            poisoned = state.clone();
            poisoned.params[0] = poison;
            assert!(TrainingState::from_bytes(&poisoned.to_bytes(), 3, 6).is_err());
        }
    }
}
