//! Byzantine-robust aggregation rules over flat `f32` contributions.
//!
//! Every rule reads `n` contributions of equal length (`&[&[f32]]`, in roster order), optional
//! non-negative weights (sample counts, say) and writes the aggregate into a caller buffer. The
//! rules are deterministic: contributions are visited in the order given, sums are accumulated in
//! `f64`, ties are broken by contribution index, so every peer that applies a rule to the same
//! inputs gets bit-identical output. Contributions holding NaN or ±Inf are rejected with the
//! offending index ([`RobustError::NonFinite`]) instead of poisoning the result.
//!
//! # Applied per span by each span owner
//!
//! In the mesh a span owner only holds its span (a contiguous coordinate range) of every
//! contribution, so a rule runs on the span alone:
//! - [`mean`], [`median`] and [`trimmed_mean`] are coordinate-wise: the span-local result is
//!   exactly the global result restricted to the span.
//! - [`multi_krum`] scores contributions by distances over the span only, so different spans may
//!   select different contributions. That is a span-local approximation of Multi-Krum (it is as
//!   robust per span as Krum is globally, but an attacker is judged span by span).
//! - [`centered_clipping`] clips by the norm of the span of `x_i - v`, not the full vector's norm,
//!   so a radius `tau` bounds each span separately (a full-vector bound of `tau·sqrt(spans)`).
//!   Also a span-local approximation.
//!
//! [`Aggregation`] bundles the rules behind one enum for the protocol's span owners.

mod coordinate;
mod distance;
#[cfg(test)]
mod tests;

pub use coordinate::{mean, median, trimmed_mean};
pub use distance::{centered_clipping, multi_krum, multi_krum_select};

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Why a robust rule refused its inputs. Indices name contributions in the order given.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum RobustError {
    /// No contributions were given.
    #[error("no contributions to aggregate")]
    Empty,
    /// A contribution's length differs from the first contribution's.
    #[error("contribution {index} has {len} values, expected {expected}")]
    LengthMismatch {
        /// Index of the offending contribution.
        index: usize,
        /// Its length.
        len: usize,
        /// Length of contribution 0.
        expected: usize,
    },
    /// The output buffer (or a center) does not have the contributions' length.
    #[error("output buffer has {len} values, expected {expected}")]
    OutputLength {
        /// Length of the buffer given.
        len: usize,
        /// Length of the contributions.
        expected: usize,
    },
    /// A contribution holds NaN or ±Inf.
    #[error("contribution {index} holds a non-finite value at coordinate {coordinate}")]
    NonFinite {
        /// Index of the offending contribution.
        index: usize,
        /// First non-finite coordinate.
        coordinate: usize,
    },
    /// The weights slice does not have one weight per contribution.
    #[error("{len} weights for {expected} contributions")]
    WeightsLength {
        /// Number of weights given.
        len: usize,
        /// Number of contributions.
        expected: usize,
    },
    /// A weight is negative or not finite.
    #[error("weight {weight} of contribution {index} is not finite and >= 0")]
    InvalidWeight {
        /// Index of the offending contribution.
        index: usize,
        /// The weight.
        weight: f64,
    },
    /// All weights (of the contributions a rule kept) are zero.
    #[error("weights sum to zero")]
    ZeroTotalWeight,
    /// The trimmed-mean fraction is outside `[0, 0.5)`.
    #[error("trim fraction beta={beta} must be finite and in [0, 0.5)")]
    InvalidTrim {
        /// The fraction given.
        beta: f64,
    },
    /// Multi-Krum needs `n > 2f + 2` and `1 <= m <= n - f`.
    #[error("Multi-Krum needs n > 2f + 2 and 1 <= m <= n - f (n={n}, f={f}, m={m})")]
    KrumBounds {
        /// Number of contributions.
        n: usize,
        /// Assumed number of Byzantine contributions.
        f: usize,
        /// Number of contributions to average.
        m: usize,
    },
    /// The clipping radius is not finite and positive.
    #[error("clipping radius tau={tau} must be finite and > 0")]
    InvalidTau {
        /// The radius given.
        tau: f64,
    },
    /// The center of centered clipping holds NaN or ±Inf.
    #[error("center holds a non-finite value at coordinate {coordinate}")]
    NonFiniteCenter {
        /// First non-finite coordinate.
        coordinate: usize,
    },
}

/// Checks the contributions and the output length; returns the common length.
fn check_inputs(contributions: &[&[f32]], out_len: usize) -> Result<usize, RobustError> {
    let first = contributions.first().ok_or(RobustError::Empty)?;
    let expected = first.len();
    for (index, contribution) in contributions.iter().enumerate() {
        if contribution.len() != expected {
            return Err(RobustError::LengthMismatch {
                index,
                len: contribution.len(),
                expected,
            });
        }
        if let Some(coordinate) = contribution.iter().position(|v| !v.is_finite()) {
            return Err(RobustError::NonFinite { index, coordinate });
        }
    }
    if out_len != expected {
        return Err(RobustError::OutputLength {
            len: out_len,
            expected,
        });
    }
    Ok(expected)
}

/// Returns one weight per contribution (all 1.0 when `weights` is `None`), each checked.
fn resolve_weights(weights: Option<&[f64]>, n: usize) -> Result<Vec<f64>, RobustError> {
    let Some(weights) = weights else {
        return Ok(vec![1.0; n]);
    };
    if weights.len() != n {
        return Err(RobustError::WeightsLength {
            len: weights.len(),
            expected: n,
        });
    }
    for (index, &weight) in weights.iter().enumerate() {
        if !weight.is_finite() || weight < 0.0 {
            return Err(RobustError::InvalidWeight { index, weight });
        }
    }
    if weights.iter().sum::<f64>() <= 0.0 {
        return Err(RobustError::ZeroTotalWeight);
    }
    Ok(weights.to_vec())
}

/// One aggregation rule with its parameters, as the protocol's span owners apply it.
///
/// Weights are `u32` sample counts (one per contribution); pass all ones for an unweighted rule.
/// See the module docs for what each rule means when applied to one span.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Aggregation {
    /// Weighted mean: not robust, one contribution can move it arbitrarily far.
    Mean,
    /// Coordinate-wise weighted median.
    Median,
    /// Coordinate-wise trimmed mean dropping `floor(beta·n)` values at each end.
    TrimmedMean {
        /// Fraction trimmed at each end, in `[0, 0.5)`.
        beta: f64,
    },
    /// Multi-Krum: average of the `m` contributions with the best Krum scores assuming `f`
    /// Byzantine contributions.
    MultiKrum {
        /// Assumed number of Byzantine contributions (`n > 2f + 2`).
        f: usize,
        /// Number of contributions averaged (`1 <= m <= n - f`).
        m: usize,
    },
    /// Centered clipping started at the coordinate-wise median.
    CenteredClipping {
        /// Clipping radius (L2).
        tau: f64,
        /// Number of clipping iterations.
        iterations: u32,
    },
}

impl Aggregation {
    /// Aggregates `contributions` (in roster order) weighted by `weights` into a new vector.
    pub fn apply(
        &self,
        contributions: &[&[f32]],
        weights: &[u32],
    ) -> Result<Vec<f32>, RobustError> {
        let mut out = vec![0.0; contributions.first().map_or(0, |c| c.len())];
        self.apply_into(contributions, weights, &mut out)?;
        Ok(out)
    }

    /// As [`Aggregation::apply`], writing into `out` (which must have the contributions' length).
    pub fn apply_into(
        &self,
        contributions: &[&[f32]],
        weights: &[u32],
        out: &mut [f32],
    ) -> Result<(), RobustError> {
        let weights: Vec<f64> = weights.iter().map(|&w| f64::from(w)).collect();
        let weights = Some(weights.as_slice());
        match *self {
            Self::Mean => mean(contributions, weights, out),
            Self::Median => median(contributions, weights, out),
            Self::TrimmedMean { beta } => trimmed_mean(contributions, weights, beta, out),
            Self::MultiKrum { f, m } => multi_krum(contributions, weights, f, m, out),
            Self::CenteredClipping { tau, iterations } => {
                let mut center = vec![0.0; out.len()];
                median(contributions, weights, &mut center)?;
                centered_clipping(contributions, weights, &center, tau, iterations, out)
            }
        }
    }
}

/// CLI/config names: `mean`, `median`, `trimmed-mean:<beta>`, `multi-krum:<f>:<m>`,
/// `centered-clipping:<tau>:<iterations>`. [`Display`](fmt::Display) writes the same form.
impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Mean => write!(f, "mean"),
            Self::Median => write!(f, "median"),
            Self::TrimmedMean { beta } => write!(f, "trimmed-mean:{beta}"),
            Self::MultiKrum { f: byz, m } => write!(f, "multi-krum:{byz}:{m}"),
            Self::CenteredClipping { tau, iterations } => {
                write!(f, "centered-clipping:{tau}:{iterations}")
            }
        }
    }
}

/// An aggregation name that [`Aggregation::from_str`] does not accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown aggregation {input:?}: expected mean, median, trimmed-mean:<beta>, \
     multi-krum:<f>:<m> or centered-clipping:<tau>:<iterations>"
)]
pub struct ParseAggregationError {
    /// The text given.
    pub input: String,
}

impl FromStr for Aggregation {
    type Err = ParseAggregationError;

    /// Parses the names [`Display`](fmt::Display) writes. Parameters are range-checked when the
    /// rule is applied (e.g. `beta` against `[0, 0.5)`), except that they must parse and be finite.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || ParseAggregationError {
            input: input.to_owned(),
        };
        let mut parts = input.split(':');
        let name = parts.next().unwrap_or_default();
        let params: Vec<&str> = parts.collect();
        let float = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(err)
        };
        match (name, params.as_slice()) {
            ("mean", []) => Ok(Self::Mean),
            ("median", []) => Ok(Self::Median),
            ("trimmed-mean", [beta]) => Ok(Self::TrimmedMean { beta: float(beta)? }),
            ("multi-krum", [f, m]) => Ok(Self::MultiKrum {
                f: f.parse().map_err(|_| err())?,
                m: m.parse().map_err(|_| err())?,
            }),
            ("centered-clipping", [tau, iterations]) => Ok(Self::CenteredClipping {
                tau: float(tau)?,
                iterations: iterations.parse().map_err(|_| err())?,
            }),
            _ => Err(err()),
        }
    }
}
