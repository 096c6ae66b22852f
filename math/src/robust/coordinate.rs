//! Coordinate-wise rules: mean, median, trimmed mean. Each output coordinate depends only on the
//! same coordinate of the contributions, so applying them to a span gives the global result.

use super::{RobustError, check_inputs, resolve_weights};

/// Weighted mean, accumulated in `f64` in contribution order. The non-robust baseline.
///
/// `weights` default to 1 for every contribution; they need not sum to one.
pub fn mean(
    contributions: &[&[f32]],
    weights: Option<&[f64]>,
    out: &mut [f32],
) -> Result<(), RobustError> {
    let dim = check_inputs(contributions, out.len())?;
    let weights = resolve_weights(weights, contributions.len())?;
    let total: f64 = weights.iter().sum();
    let mut acc = vec![0.0f64; dim];
    for (contribution, &weight) in contributions.iter().zip(&weights) {
        for (a, &v) in acc.iter_mut().zip(contribution.iter()) {
            *a += weight * f64::from(v);
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = (a / total) as f32;
    }
    Ok(())
}

/// Coordinate-wise weighted median.
///
/// Per coordinate the values are sorted (ties by contribution index) and the first value whose
/// cumulative weight reaches half the total is taken; when the cumulative weight equals exactly
/// half, the midpoint with the next value is taken, so equal weights give the textbook median
/// (the mean of the two middle values for even `n`). Zero-weight contributions are ignored.
pub fn median(
    contributions: &[&[f32]],
    weights: Option<&[f64]>,
    out: &mut [f32],
) -> Result<(), RobustError> {
    let dim = check_inputs(contributions, out.len())?;
    let weights = resolve_weights(weights, contributions.len())?;
    let total: f64 = weights.iter().sum();
    let mut column: Vec<(f32, f64)> = Vec::with_capacity(contributions.len());
    for (coordinate, o) in out.iter_mut().enumerate().take(dim) {
        fill_column(contributions, &weights, coordinate, &mut column);
        *o = weighted_median_sorted(&column, total);
    }
    Ok(())
}

/// Coordinate-wise trimmed mean: per coordinate the `k = floor(beta·n)` smallest and `k` largest
/// values are dropped (by count, not weight) and the weighted mean of the rest is taken.
///
/// `beta` must be in `[0, 0.5)`, so at least one value survives; `beta = 0` is the mean.
pub fn trimmed_mean(
    contributions: &[&[f32]],
    weights: Option<&[f64]>,
    beta: f64,
    out: &mut [f32],
) -> Result<(), RobustError> {
    let dim = check_inputs(contributions, out.len())?;
    let weights = resolve_weights(weights, contributions.len())?;
    if !beta.is_finite() || !(0.0..0.5).contains(&beta) {
        return Err(RobustError::InvalidTrim { beta });
    }
    let n = contributions.len();
    // beta < 0.5 guarantees 2k < n; the cast floors a value in [0, n/2).
    let k = (beta * n as f64).floor() as usize;
    let mut column: Vec<(f32, f64)> = Vec::with_capacity(n);
    for (coordinate, o) in out.iter_mut().enumerate().take(dim) {
        column.clear();
        column.extend(
            contributions
                .iter()
                .zip(&weights)
                .map(|(c, &w)| (c[coordinate], w)),
        );
        column.sort_by(|a, b| a.0.total_cmp(&b.0));
        let kept = &column[k..n - k];
        let weight_sum: f64 = kept.iter().map(|&(_, w)| w).sum();
        if weight_sum <= 0.0 {
            return Err(RobustError::ZeroTotalWeight);
        }
        let sum: f64 = kept.iter().map(|&(v, w)| w * f64::from(v)).sum();
        *o = (sum / weight_sum) as f32;
    }
    Ok(())
}

/// Collects coordinate `coordinate` of every positively weighted contribution, sorted by value
/// (a stable sort, so ties stay in contribution order).
fn fill_column(
    contributions: &[&[f32]],
    weights: &[f64],
    coordinate: usize,
    column: &mut Vec<(f32, f64)>,
) {
    column.clear();
    column.extend(
        contributions
            .iter()
            .zip(weights)
            .filter(|&(_, &w)| w > 0.0)
            .map(|(c, &w)| (c[coordinate], w)),
    );
    column.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// Weighted median of a value-sorted, non-empty column whose weights sum to `total`.
fn weighted_median_sorted(column: &[(f32, f64)], total: f64) -> f32 {
    let half = total / 2.0;
    let mut cumulative = 0.0;
    for (i, &(value, weight)) in column.iter().enumerate() {
        cumulative += weight;
        if cumulative == half {
            if let Some(&(next, _)) = column.get(i + 1) {
                return ((f64::from(value) + f64::from(next)) / 2.0) as f32;
            }
            return value;
        }
        if cumulative > half {
            return value;
        }
    }
    // Rounding left the cumulative sum just below half: the last value is the median.
    column.last().map_or(0.0, |&(v, _)| v)
}
