//! The crate's one seeded Gaussian sampler (Box–Muller over ChaCha20), shared by the attack
//! library and the DP noise. `libm`'s pure-Rust `log`/`sqrt`/`sincos` keep the samples bit-identical
//! across platforms, which the platform's libm does not promise.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Draws standard normal samples from a ChaCha20 stream seeded with a `u64`.
#[derive(Debug, Clone)]
pub(crate) struct GaussianSampler {
    rng: ChaCha20Rng,
    spare: Option<f64>,
}

impl GaussianSampler {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One N(0, 1) sample.
    pub(crate) fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let radius = libm::sqrt(-2.0 * libm::log(1.0 - self.uniform()));
        let (sin, cos) = libm::sincos(2.0 * std::f64::consts::PI * self.uniform());
        self.spare = Some(radius * sin);
        radius * cos
    }
}

#[cfg(test)]
mod tests {
    use super::GaussianSampler;

    #[test]
    fn samples_have_unit_moments_and_repeat_per_seed() {
        let mut sampler = GaussianSampler::new(7);
        let samples: Vec<f64> = (0..200_000).map(|_| sampler.sample()).collect();
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / n;
        let within_one = samples.iter().filter(|z| z.abs() < 1.0).count() as f64 / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        // P(|Z| < 1) = 0.6827 for a standard normal.
        assert!((within_one - 0.6827).abs() < 0.005, "{within_one}");
        let mut again = GaussianSampler::new(7);
        assert!(samples.iter().take(100).all(|&z| z == again.sample()));
    }
}
