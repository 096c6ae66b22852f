//! Shared by the integration tests: the 8×8 digits (data/digits.safetensors, from
//! scripts/setup.sh), a softmax regression's gradient and accuracy, and IID client shards.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::path::PathBuf;

use safetensors::SafeTensors;

pub const CLIENTS: usize = 10;
pub const ATTACKERS: usize = 2;
pub const FEATURES: usize = 64;
pub const CLASSES: usize = 10;
pub const PARAMS: usize = CLASSES * FEATURES + CLASSES;

pub struct Digits {
    pub train_x: Vec<f32>,
    pub train_y: Vec<u32>,
    pub test_x: Vec<f32>,
    pub test_y: Vec<u32>,
}

pub fn load_digits() -> Digits {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/digits.safetensors");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{} (run scripts/setup.sh): {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        let data = file.tensor(name).unwrap();
        data.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let labels = |name: &str| -> Vec<u32> {
        let data = file.tensor(name).unwrap();
        data.data()
            .chunks_exact(8)
            .map(|c| u32::try_from(i64::from_le_bytes(c.try_into().unwrap())).unwrap())
            .collect()
    };
    Digits {
        train_x: floats("train_x"),
        train_y: labels("train_y"),
        test_x: floats("test_x"),
        test_y: labels("test_y"),
    }
}

pub fn logits(params: &[f32], x: &[f32]) -> [f32; CLASSES] {
    let mut z = [0.0f32; CLASSES];
    for (c, zc) in z.iter_mut().enumerate() {
        let w = &params[c * FEATURES..(c + 1) * FEATURES];
        *zc = params[CLASSES * FEATURES + c] + w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
    }
    z
}

/// Mean cross-entropy gradient of a softmax regression over the samples `rows` (labels `y`).
pub fn gradient(params: &[f32], x: &[f32], y: &[u32], rows: &[usize]) -> Vec<f32> {
    let mut grad = vec![0.0f32; PARAMS];
    for &i in rows {
        let xi = &x[i * FEATURES..(i + 1) * FEATURES];
        let z = logits(params, xi);
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
        let total: f32 = exp.iter().sum();
        for c in 0..CLASSES {
            let delta = exp[c] / total - if y[i] as usize == c { 1.0 } else { 0.0 };
            let delta = delta / rows.len() as f32;
            for (g, &xv) in grad[c * FEATURES..(c + 1) * FEATURES].iter_mut().zip(xi) {
                *g += delta * xv;
            }
            grad[CLASSES * FEATURES + c] += delta;
        }
    }
    grad
}

pub fn accuracy(params: &[f32], data: &Digits) -> f64 {
    let correct = data
        .test_y
        .iter()
        .enumerate()
        .filter(|&(i, &y)| {
            let z = logits(params, &data.test_x[i * FEATURES..(i + 1) * FEATURES]);
            let best = (0..CLASSES).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap();
            best == y as usize
        })
        .count();
    correct as f64 / data.test_y.len() as f64
}

pub fn shards(n: usize) -> Vec<Vec<usize>> {
    (0..CLIENTS)
        .map(|k| (0..n).filter(|i| i % CLIENTS == k).collect())
        .collect()
}
