use super::*;

#[test]
fn clipping_scales_only_long_updates() {
    let mut long = vec![3.0, 4.0];
    assert_eq!(clip_l2(&mut long, 1.0).unwrap(), 5.0);
    assert!((long[0] - 0.6).abs() < 1e-7 && (long[1] - 0.8).abs() < 1e-7);
    let mut short = vec![0.3, 0.4];
    clip_l2(&mut short, 1.0).unwrap();
    assert_eq!(short, vec![0.3, 0.4]);
    assert_eq!(
        clip_l2(&mut short, 0.0),
        Err(DpError::InvalidClip { clip: 0.0 })
    );
    let mut bad = vec![1.0, f32::NAN];
    assert_eq!(
        clip_l2(&mut bad, 1.0),
        Err(DpError::NonFinite {
            index: 0,
            coordinate: 1
        })
    );
}

/// With σ = 0 the mechanism is the clipped mean; with σ > 0 the added noise has std σ·C on the
/// sum, is seeded, and changes with the seed.
#[test]
fn aggregate_clips_then_adds_calibrated_noise() {
    let dim = 40_000;
    let a: Vec<f32> = (0..dim).map(|i| ((i % 7) as f32 - 3.0) * 0.001).collect();
    let b: Vec<f32> = (0..dim).map(|i| ((i % 5) as f32 - 2.0) * 1.0).collect();
    let updates = [a.as_slice(), b.as_slice()];
    let clip = 2.0;
    let plain = GaussianMechanism::new(clip, 0.0).unwrap();
    let mut clipped_sum = vec![0.0f32; dim];
    let norms = plain.aggregate(&updates, 1.0, 0, &mut clipped_sum).unwrap();
    assert!(norms[0] < clip && norms[1] > clip);
    let mut b_clipped = b.clone();
    clip_l2(&mut b_clipped, clip).unwrap();
    for i in 0..dim {
        assert!((clipped_sum[i] - (a[i] + b_clipped[i])).abs() < 1e-6);
    }

    let noisy = GaussianMechanism::new(clip, 1.5).unwrap();
    let mut out = vec![0.0f32; dim];
    noisy.aggregate(&updates, 4.0, 9, &mut out).unwrap();
    let residual: Vec<f64> = out
        .iter()
        .zip(&clipped_sum)
        .map(|(&o, &s)| f64::from(o) * 4.0 - f64::from(s))
        .collect();
    let n = dim as f64;
    let mean = residual.iter().sum::<f64>() / n;
    let sd = (residual.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.05, "mean {mean}");
    assert!((sd - 3.0).abs() < 0.05, "sd {sd}, expected sigma*C = 3");

    let mut again = vec![0.0f32; dim];
    noisy.aggregate(&updates, 4.0, 9, &mut again).unwrap();
    assert_eq!(out, again);
    noisy.aggregate(&updates, 4.0, 10, &mut again).unwrap();
    assert_ne!(out, again);
}

/// n clients each adding `client_noise_std(n)` give a sum with std σ·C.
#[test]
fn distributed_noise_sums_to_the_central_std() {
    let mechanism = GaussianMechanism::new(0.5, 2.0).unwrap();
    let clients = 16u32;
    let dim = 20_000;
    let mut sum = vec![0.0f64; dim];
    for client in 0..clients {
        let mut share = vec![0.0f32; dim];
        add_gaussian_noise(
            &mut share,
            mechanism.client_noise_std(clients),
            u64::from(client),
        );
        sum.iter_mut()
            .zip(&share)
            .for_each(|(s, &v)| *s += f64::from(v));
    }
    let sd = (sum.iter().map(|s| s * s).sum::<f64>() / dim as f64).sqrt();
    assert!((sd - 1.0).abs() < 0.02, "sd {sd}, expected sigma*C = 1");
}

#[test]
fn aggregate_rejects_bad_inputs() {
    let mechanism = GaussianMechanism::new(1.0, 1.0).unwrap();
    let mut out = vec![0.0f32; 2];
    assert_eq!(
        mechanism.aggregate(&[], 1.0, 0, &mut out),
        Err(DpError::NoUpdates)
    );
    let bad = [f32::INFINITY, 0.0];
    let good = [1.0, 0.0];
    assert_eq!(
        mechanism.aggregate(&[&good, &bad], 1.0, 0, &mut out),
        Err(DpError::NonFinite {
            index: 1,
            coordinate: 0
        })
    );
    assert_eq!(
        mechanism.aggregate(&[&good[..1]], 1.0, 0, &mut out),
        Err(DpError::LengthMismatch {
            index: 0,
            len: 1,
            expected: 2
        })
    );
    assert_eq!(
        GaussianMechanism::new(1.0, -1.0),
        Err(DpError::InvalidNoiseMultiplier { sigma: -1.0 })
    );
}
