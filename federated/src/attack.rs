//! Model-poisoning and data-poisoning attacks, for testing the robust rules and for simulated
//! adversaries. Attacks rewrite a client's honest update (or labels) in place; all randomness is
//! seeded.

use thiserror::Error;

use crate::noise::GaussianSampler;

/// An update-rewriting attack a Byzantine client applies to its honest update before sending it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Attack {
    /// Sends `-lambda · update` (sign flip, scaled by `lambda >= 0`; `lambda = 1` is plain).
    SignFlip {
        /// Scale applied after flipping.
        lambda: f32,
    },
    /// Sends `lambda · update` (a boosted update).
    Scaled {
        /// Scale factor.
        lambda: f32,
    },
    /// Sends pure noise `N(0, sigma²)` per coordinate instead of the update.
    GaussianNoise {
        /// Standard deviation of the noise.
        sigma: f32,
    },
}

impl Attack {
    /// Rewrites `update` in place. `seed` drives the noise attack and is ignored by the others.
    pub fn apply(&self, update: &mut [f32], seed: u64) {
        match *self {
            Self::SignFlip { lambda } => sign_flip(update, lambda),
            Self::Scaled { lambda } => scale(update, lambda),
            Self::GaussianNoise { sigma } => gaussian_noise(update, sigma, seed),
        }
    }
}

/// Replaces `update` by `-lambda · update`.
pub fn sign_flip(update: &mut [f32], lambda: f32) {
    update.iter_mut().for_each(|v| *v *= -lambda);
}

/// Replaces `update` by `lambda · update`.
pub fn scale(update: &mut [f32], lambda: f32) {
    update.iter_mut().for_each(|v| *v *= lambda);
}

/// Replaces `update` by independent `N(0, sigma²)` samples drawn from a ChaCha20 stream seeded
/// with `seed` (same seed, same noise).
pub fn gaussian_noise(update: &mut [f32], sigma: f32, seed: u64) {
    let mut sampler = GaussianSampler::new(seed);
    let sigma = f64::from(sigma);
    update
        .iter_mut()
        .for_each(|v| *v = (sigma * sampler.sample()) as f32);
}

/// A label outside `0..classes` was given to [`flip_labels`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("label {label} at index {index} is outside 0..{classes}")]
pub struct LabelOutOfRange {
    /// Position of the label in the slice.
    pub index: usize,
    /// The label.
    pub label: u32,
    /// Number of classes.
    pub classes: u32,
}

/// Label flipping (a data-poisoning attack): maps every label `y` to `classes - 1 - y`, so a
/// poisoned client trains on systematically wrong targets. The slice is left untouched when any
/// label is out of range.
pub fn flip_labels(labels: &mut [u32], classes: u32) -> Result<(), LabelOutOfRange> {
    if let Some((index, &label)) = labels.iter().enumerate().find(|&(_, &y)| y >= classes) {
        return Err(LabelOutOfRange {
            index,
            label,
            classes,
        });
    }
    labels.iter_mut().for_each(|y| *y = classes - 1 - *y);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_flip_and_scale_rewrite_the_update() {
        let mut u = vec![1.0, -2.0, 0.5];
        Attack::SignFlip { lambda: 3.0 }.apply(&mut u, 0);
        assert_eq!(u, vec![-3.0, 6.0, -1.5]);
        Attack::Scaled { lambda: 2.0 }.apply(&mut u, 0);
        assert_eq!(u, vec![-6.0, 12.0, -3.0]);
    }

    #[test]
    fn gaussian_noise_is_seeded_and_has_the_requested_spread() {
        let mut a = vec![5.0f32; 50_000];
        let mut b = a.clone();
        Attack::GaussianNoise { sigma: 2.0 }.apply(&mut a, 11);
        Attack::GaussianNoise { sigma: 2.0 }.apply(&mut b, 11);
        assert_eq!(a, b);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let sd = (a
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((sd - 2.0).abs() < 0.05, "sd {sd}");
        let mut c = vec![5.0f32; 50_000];
        gaussian_noise(&mut c, 2.0, 12);
        assert_ne!(a, c);
    }

    #[test]
    fn label_flip_reverses_classes_and_rejects_bad_labels() {
        let mut labels = vec![0, 3, 9, 4];
        flip_labels(&mut labels, 10).unwrap();
        assert_eq!(labels, vec![9, 6, 0, 5]);
        let mut bad = vec![1, 10, 2];
        let err = flip_labels(&mut bad, 10).unwrap_err();
        assert_eq!(
            err,
            LabelOutOfRange {
                index: 1,
                label: 10,
                classes: 10
            }
        );
        assert_eq!(bad, vec![1, 10, 2]);
    }
}
