//! Differential privacy for federated rounds: per-client L2 clipping, Gaussian noise calibrated
//! to the clipping bound (`std = σ·C`, as DP-FedAvg, McMahan et al. 2018), and an RDP accountant
//! ([`rdp`]) that turns (sampling rate, σ, rounds) into ε for a given δ.
//!
//! Where the noise is added decides whom it protects against:
//! - **Central** ([`GaussianMechanism::aggregate`]): whoever aggregates sees clipped but
//!   un-noised updates. In the mesh that is each span owner for its span, so span owners are
//!   trusted with individual updates; everyone else sees only the noised result.
//! - **Distributed** ([`GaussianMechanism::client_noise_std`]): each of `n` clients adds
//!   `N(0, σ²C²/n)` to its clipped update before secure aggregation, so the sum carries the full
//!   `σ·C` noise and nobody sees an un-noised update. If clients drop out the sum carries less
//!   noise than accounted for (`σ·C·sqrt(survivors/n)`), so size `n` for the expected survivors.
//!
//! Noise comes from a seeded ChaCha20 stream through Box–Muller in `f64` (see `noise.rs`). A
//! production deployment must seed it from a secret, fresh source per round; a seed anyone can
//! guess lets them subtract the noise. Floating-point Gaussian samplers also leak through the
//! low-order bits (Mironov 2012); that is not addressed here.

pub mod rdp;

pub use rdp::{PrivacySpent, RdpAccountant, compute_rdp, default_orders, get_privacy_spent};

use thiserror::Error;

use crate::noise::GaussianSampler;

/// Why a DP computation refused its inputs.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum DpError {
    /// The sampling rate is outside `[0, 1]`.
    #[error("sampling rate q={q} must be in [0, 1]")]
    InvalidSamplingRate {
        /// The rate given.
        q: f64,
    },
    /// The noise multiplier is negative or not finite.
    #[error("noise multiplier sigma={sigma} must be finite and >= 0")]
    InvalidNoiseMultiplier {
        /// The multiplier given.
        sigma: f64,
    },
    /// An RDP order is not above 1.
    #[error("RDP order alpha={alpha} must be > 1")]
    InvalidOrder {
        /// The order given.
        alpha: f64,
    },
    /// δ is outside `(0, 1)`.
    #[error("delta={delta} must be in (0, 1)")]
    InvalidDelta {
        /// The δ given.
        delta: f64,
    },
    /// `orders` and `rdp` differ in length.
    #[error("{orders} orders but {rdp} RDP values")]
    OrdersLength {
        /// Number of orders.
        orders: usize,
        /// Number of RDP values.
        rdp: usize,
    },
    /// The fractional-order series did not reach its stopping rule within its iteration cap.
    #[error("RDP series for alpha={alpha}, q={q}, sigma={sigma} did not converge")]
    SeriesDiverged {
        /// The order.
        alpha: f64,
        /// The sampling rate.
        q: f64,
        /// The noise multiplier.
        sigma: f64,
    },
    /// Log-space subtraction would go negative (a numerical failure of the series).
    #[error("log-space subtraction ln(e^{x} - e^{y}) with x < y")]
    NegativeLogDifference {
        /// Minuend (log space).
        x: f64,
        /// Subtrahend (log space).
        y: f64,
    },
    /// The clipping bound is not finite and positive.
    #[error("clipping bound C={clip} must be finite and > 0")]
    InvalidClip {
        /// The bound given.
        clip: f64,
    },
    /// An update holds NaN or ±Inf.
    #[error("update {index} holds a non-finite value at coordinate {coordinate}")]
    NonFinite {
        /// Index of the update.
        index: usize,
        /// First non-finite coordinate.
        coordinate: usize,
    },
    /// An update has the wrong length (that of the output buffer).
    #[error("update {index} has {len} values, expected {expected}")]
    LengthMismatch {
        /// Index of the update.
        index: usize,
        /// Its length.
        len: usize,
        /// The expected length.
        expected: usize,
    },
    /// No updates were given.
    #[error("no updates to aggregate")]
    NoUpdates,
    /// The denominator of the noised mean is not finite and positive.
    #[error("mean denominator {denominator} must be finite and > 0")]
    InvalidDenominator {
        /// The denominator given.
        denominator: f64,
    },
}

/// Scales `update` to L2 norm at most `clip` (`x · min(1, C/‖x‖)`, norm in `f64`) and returns its
/// norm before clipping.
pub fn clip_l2(update: &mut [f32], clip: f64) -> Result<f64, DpError> {
    check_clip(clip)?;
    if let Some(coordinate) = update.iter().position(|v| !v.is_finite()) {
        return Err(DpError::NonFinite {
            index: 0,
            coordinate,
        });
    }
    let norm = l2_norm(update);
    if norm > clip {
        let scale = clip / norm;
        update
            .iter_mut()
            .for_each(|v| *v = (f64::from(*v) * scale) as f32);
    }
    Ok(norm)
}

/// Adds independent `N(0, std²)` noise to every coordinate of `values`, from a ChaCha20 stream
/// seeded with `seed`.
pub fn add_gaussian_noise(values: &mut [f32], std: f64, seed: u64) {
    let mut sampler = GaussianSampler::new(seed);
    values
        .iter_mut()
        .for_each(|v| *v = (f64::from(*v) + std * sampler.sample()) as f32);
}

/// The Gaussian mechanism over clipped client updates: clipping bound `C` and noise multiplier
/// `σ` (noise std `σ·C` on the sum, since one client changes the clipped sum by at most `C`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianMechanism {
    clip: f64,
    noise_multiplier: f64,
}

impl GaussianMechanism {
    /// Checks `clip > 0` and `noise_multiplier >= 0` (both finite).
    pub fn new(clip: f64, noise_multiplier: f64) -> Result<Self, DpError> {
        check_clip(clip)?;
        if !noise_multiplier.is_finite() || noise_multiplier < 0.0 {
            return Err(DpError::InvalidNoiseMultiplier {
                sigma: noise_multiplier,
            });
        }
        Ok(Self {
            clip,
            noise_multiplier,
        })
    }

    /// The clipping bound `C`.
    #[must_use]
    pub fn clip(&self) -> f64 {
        self.clip
    }

    /// The noise multiplier `σ`.
    #[must_use]
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// Std of the noise on the sum: `σ·C`.
    #[must_use]
    pub fn sum_noise_std(&self) -> f64 {
        self.noise_multiplier * self.clip
    }

    /// Std each of `clients` adds to its own clipped update for distributed noise, so that the
    /// sum of `clients` noises has std `σ·C`: `σ·C/sqrt(clients)`.
    #[must_use]
    pub fn client_noise_std(&self, clients: u32) -> f64 {
        self.sum_noise_std() / f64::from(clients.max(1)).sqrt()
    }

    /// Central DP-FedAvg: clips each update to `C`, sums them in `f64` in the order given, adds
    /// `N(0, σ²C²)` per coordinate (seeded) and divides by `denominator`.
    ///
    /// Use a fixed `denominator` (the expected number of clients per round, `q·N`) rather than
    /// the actual count, which would itself depend on who took part. Returns each update's norm
    /// before clipping, in input order.
    pub fn aggregate(
        &self,
        updates: &[&[f32]],
        denominator: f64,
        seed: u64,
        out: &mut [f32],
    ) -> Result<Vec<f64>, DpError> {
        if !denominator.is_finite() || denominator <= 0.0 {
            return Err(DpError::InvalidDenominator { denominator });
        }
        check_updates(updates, out.len())?;
        let mut sum = vec![0.0f64; out.len()];
        let mut norms = Vec::with_capacity(updates.len());
        for update in updates {
            let norm = l2_norm(update);
            let scale = if norm > self.clip {
                self.clip / norm
            } else {
                1.0
            };
            for (s, &v) in sum.iter_mut().zip(update.iter()) {
                *s += f64::from(v) * scale;
            }
            norms.push(norm);
        }
        let mut sampler = GaussianSampler::new(seed);
        let std = self.sum_noise_std();
        for (o, s) in out.iter_mut().zip(&sum) {
            *o = ((s + std * sampler.sample()) / denominator) as f32;
        }
        Ok(norms)
    }
}

fn check_clip(clip: f64) -> Result<(), DpError> {
    if clip.is_finite() && clip > 0.0 {
        Ok(())
    } else {
        Err(DpError::InvalidClip { clip })
    }
}

fn check_updates(updates: &[&[f32]], expected: usize) -> Result<(), DpError> {
    if updates.is_empty() {
        return Err(DpError::NoUpdates);
    }
    for (index, update) in updates.iter().enumerate() {
        if update.len() != expected {
            return Err(DpError::LengthMismatch {
                index,
                len: update.len(),
                expected,
            });
        }
        if let Some(coordinate) = update.iter().position(|v| !v.is_finite()) {
            return Err(DpError::NonFinite { index, coordinate });
        }
    }
    Ok(())
}

fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests;
