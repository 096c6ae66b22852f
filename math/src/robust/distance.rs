//! Rules driven by distances between whole contributions: Multi-Krum and centered clipping.
//! Applied to a span they see only the span's coordinates (see the module docs).

use super::{RobustError, check_inputs, resolve_weights};

/// Indices of the `m` contributions Multi-Krum keeps, best score first (Blanchard et al. 2017,
/// El Mhamdi et al. 2018).
///
/// The score of contribution `i` is the sum of the squared L2 distances to its `n - f - 2`
/// nearest other contributions (in `f64`); the `m` lowest scores are kept, ties broken by index.
/// Requires `n > 2f + 2` and `1 <= m <= n - f`.
pub fn multi_krum_select(
    contributions: &[&[f32]],
    f: usize,
    m: usize,
) -> Result<Vec<usize>, RobustError> {
    let dim = contributions.first().map_or(0, |c| c.len());
    check_inputs(contributions, dim)?;
    let n = contributions.len();
    if n <= 2 * f + 2 || m == 0 || m > n - f {
        return Err(RobustError::KrumBounds { n, f, m });
    }
    let mut distances = vec![0.0f64; n * n];
    for i in 0..n {
        for j in (i + 1)..n {
            let d = squared_distance(contributions[i], contributions[j]);
            distances[i * n + j] = d;
            distances[j * n + i] = d;
        }
    }
    let neighbours = n - f - 2;
    let mut scores: Vec<(f64, usize)> = Vec::with_capacity(n);
    let mut row: Vec<f64> = Vec::with_capacity(n - 1);
    for i in 0..n {
        row.clear();
        row.extend((0..n).filter(|&j| j != i).map(|j| distances[i * n + j]));
        row.sort_by(f64::total_cmp);
        scores.push((row[..neighbours].iter().sum(), i));
    }
    scores.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    Ok(scores.iter().take(m).map(|&(_, i)| i).collect())
}

/// Multi-Krum: the weighted mean of the contributions [`multi_krum_select`] keeps.
pub fn multi_krum(
    contributions: &[&[f32]],
    weights: Option<&[f64]>,
    f: usize,
    m: usize,
    out: &mut [f32],
) -> Result<(), RobustError> {
    check_inputs(contributions, out.len())?;
    let weights = resolve_weights(weights, contributions.len())?;
    let mut selected = multi_krum_select(contributions, f, m)?;
    // Average in roster order, not score order, so the sum's rounding is independent of scores.
    selected.sort_unstable();
    let kept: Vec<&[f32]> = selected.iter().map(|&i| contributions[i]).collect();
    let kept_weights: Vec<f64> = selected.iter().map(|&i| weights[i]).collect();
    if kept_weights.iter().sum::<f64>() <= 0.0 {
        return Err(RobustError::ZeroTotalWeight);
    }
    super::mean(&kept, Some(&kept_weights), out)
}

/// Centered clipping (Karimireddy, He and Jaggi 2021): starting at `center` (say the previous
/// round's aggregate or a median), `iterations` times move the center by the weighted mean of the
/// differences `x_i - v`, each clipped to L2 norm at most `tau`:
/// `v ← v + Σ w_i · clip_tau(x_i − v) / Σ w_i`.
///
/// One contribution can move the result by at most `tau · w_i / Σ w` per iteration.
pub fn centered_clipping(
    contributions: &[&[f32]],
    weights: Option<&[f64]>,
    center: &[f32],
    tau: f64,
    iterations: u32,
    out: &mut [f32],
) -> Result<(), RobustError> {
    let dim = check_inputs(contributions, out.len())?;
    let weights = resolve_weights(weights, contributions.len())?;
    if center.len() != dim {
        return Err(RobustError::OutputLength {
            len: center.len(),
            expected: dim,
        });
    }
    if let Some(coordinate) = center.iter().position(|v| !v.is_finite()) {
        return Err(RobustError::NonFiniteCenter { coordinate });
    }
    if !tau.is_finite() || tau <= 0.0 {
        return Err(RobustError::InvalidTau { tau });
    }
    let total: f64 = weights.iter().sum();
    let mut v: Vec<f64> = center.iter().map(|&c| f64::from(c)).collect();
    let mut step = vec![0.0f64; dim];
    for _ in 0..iterations {
        step.iter_mut().for_each(|s| *s = 0.0);
        for (contribution, &weight) in contributions.iter().zip(&weights) {
            let norm = contribution
                .iter()
                .zip(&v)
                .map(|(&x, &c)| (f64::from(x) - c).powi(2))
                .sum::<f64>()
                .sqrt();
            let scale = if norm > tau { tau / norm } else { 1.0 };
            for ((s, &x), &c) in step.iter_mut().zip(contribution.iter()).zip(&v) {
                *s += weight * scale * (f64::from(x) - c);
            }
        }
        for (c, s) in v.iter_mut().zip(&step) {
            *c += s / total;
        }
    }
    for (o, c) in out.iter_mut().zip(&v) {
        *o = *c as f32;
    }
    Ok(())
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum()
}
