//! Seeded test data and error measures shared by the codec tests.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// `n` standard normal floats from ChaCha8 seeded with `seed` (Box-Muller).
pub(crate) fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = move || (f64::from(rng.next_u32()) + 0.5) / 4_294_967_296.0;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let radius = (-2.0 * uniform().ln()).sqrt();
        let angle = std::f64::consts::TAU * uniform();
        out.push((radius * angle.cos()) as f32);
        out.push((radius * angle.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Euclidean norm, accumulated in f64.
pub(crate) fn l2_norm(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `‖decoded - input‖₂ / ‖input‖₂`, accumulated in f64.
pub(crate) fn rel_l2_error(input: &[f32], decoded: &[f32]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in input.iter().zip(decoded) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        err += (x - y) * (x - y);
        norm += x * x;
    }
    (err / norm).sqrt()
}
