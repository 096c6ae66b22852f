//! Fixed-point encoding of `f32` updates into `Z/2^64` for secure aggregation.

use super::SecAggError;

/// Encodes `x` as `round(x · 2^frac_bits)` in two's complement modulo 2^64, so that wrapping
/// `u64` sums of encodings decode (as `i64`) to the exact sum of the rounded values.
///
/// The range check `max_clients · max_abs · 2^frac_bits < 2^63` guarantees that the sum of up to
/// `max_clients` encodings never wraps past `i64`; values beyond `±max_abs` are refused rather
/// than clamped. Example: 24 fraction bits (resolution 6·10⁻⁸) with `|x| <= 1000` allows
/// about 5.5·10⁸ clients (2^39 / 1000).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixedPoint {
    frac_bits: u32,
    max_abs: f32,
    max_clients: u32,
}

impl FixedPoint {
    /// Checks `frac_bits <= 52`, `max_abs` finite and positive, `max_clients >= 1` and that the
    /// largest possible sum fits in 63 bits.
    pub fn new(frac_bits: u32, max_abs: f32, max_clients: u32) -> Result<Self, SecAggError> {
        let bound =
            f64::from(max_clients) * f64::from(max_abs) * f64::from(frac_bits.min(63)).exp2();
        if frac_bits > 52
            || !max_abs.is_finite()
            || max_abs <= 0.0
            || max_clients == 0
            || bound >= 2f64.powi(63)
        {
            return Err(SecAggError::FixedPointRange {
                frac_bits,
                max_abs,
                max_clients,
            });
        }
        Ok(Self {
            frac_bits,
            max_abs,
            max_clients,
        })
    }

    /// Number of fraction bits.
    #[must_use]
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// Largest client count whose sum is guaranteed to decode.
    #[must_use]
    pub fn max_clients(&self) -> u32 {
        self.max_clients
    }

    /// Encodes `values` (each finite with `|x| <= max_abs`).
    pub fn encode(&self, values: &[f32]) -> Result<Vec<u64>, SecAggError> {
        let scale = f64::from(self.frac_bits).exp2();
        values
            .iter()
            .enumerate()
            .map(|(coordinate, &x)| {
                if !x.is_finite() || x.abs() > self.max_abs {
                    return Err(SecAggError::ValueOutOfRange {
                        coordinate,
                        value: x,
                        max_abs: self.max_abs,
                    });
                }
                // |x · 2^f| < 2^63 by the constructor's check, so the cast is exact after
                // rounding; `as u64` of the i64 is the two's-complement residue.
                Ok(((f64::from(x) * scale).round() as i64) as u64)
            })
            .collect()
    }

    /// Decodes a wrapping sum of encodings to `f32` (the `i64` sum is exact; converting it to
    /// `f64` is exact below 2^53, i.e. while `|sum| < 2^(53 − frac_bits)`).
    #[must_use]
    pub fn decode(&self, sum: &[u64]) -> Vec<f32> {
        let scale = f64::from(self.frac_bits).exp2();
        sum.iter()
            .map(|&s| ((s as i64) as f64 / scale) as f32)
            .collect()
    }
}
