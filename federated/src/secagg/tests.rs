use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::noise::GaussianSampler;

fn client_seed(seed: u64, id: u32) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..12].copy_from_slice(&id.to_le_bytes());
    bytes
}

fn fixed() -> FixedPoint {
    FixedPoint::new(24, 100.0, 1024).unwrap()
}

/// Seeded Gaussian updates of spread `scale`, clamped into the encoder's range.
fn updates(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut sampler = GaussianSampler::new(seed);
    (0..n)
        .map(|i| {
            let scale = 0.1 * (i + 1) as f64;
            (0..dim)
                .map(|_| (scale * sampler.sample()).clamp(-99.0, 99.0) as f32)
                .collect()
        })
        .collect()
}

struct Outcome {
    expected: Vec<u64>,
    recovered: Result<Vec<u64>, SecAggError>,
    inputs: Vec<MaskedInput>,
}

/// Runs one round with `n` clients and threshold `t`; clients in `silent` never send their
/// bundles (dropped before masking) and clients in `dropped` vanish after sending their masked
/// input is due (their inputs never arrive, they reveal nothing).
fn run_round(t: usize, inputs: &[Vec<f32>], silent: &[u32], dropped: &[u32], seed: u64) -> Outcome {
    let n = inputs.len() as u32;
    let round = 7;
    let mut clients: Vec<SecAggClient> = (0..n)
        .map(|i| SecAggClient::new(ClientId(i), round, client_seed(seed, i)))
        .collect();
    let ads: Vec<Advertisement> = clients.iter().map(SecAggClient::advertise).collect();
    let roster = Roster::new(round, &ads, t).unwrap();
    let mut all_bundles = Vec::new();
    for client in &mut clients {
        let bundles = client.share_keys(&roster).unwrap();
        if !silent.contains(&client.id().0) {
            all_bundles.extend(bundles);
        }
    }
    for bundle in all_bundles {
        clients[bundle.to.0 as usize].receive_share(bundle).unwrap();
    }
    let fixed = fixed();
    let gone = |id: u32| silent.contains(&id) || dropped.contains(&id);
    let mut masked = Vec::new();
    let mut expected = vec![0u64; inputs[0].len()];
    for (client, update) in clients.iter_mut().zip(inputs) {
        if gone(client.id().0) {
            continue;
        }
        masked.push(client.mask(&fixed, update).unwrap());
        for (e, v) in expected.iter_mut().zip(fixed.encode(update).unwrap()) {
            *e = e.wrapping_add(v);
        }
    }
    let survivors: BTreeSet<ClientId> = masked.iter().map(|m| m.from).collect();
    // Survivors refuse to reveal anything when fewer than t of them remain.
    let reveals: Result<Vec<Reveal>, SecAggError> = clients
        .iter_mut()
        .filter(|c| survivors.contains(&c.id()))
        .map(|c| c.reveal(&survivors))
        .collect();
    Outcome {
        expected,
        recovered: reveals.and_then(|reveals| unmask_sum(&roster, &masked, &reveals)),
        inputs: masked,
    }
}

#[test]
fn masked_sum_equals_the_plain_fixed_point_sum() {
    let inputs = updates(5, 1000, 1);
    let outcome = run_round(3, &inputs, &[], &[], 1);
    assert_eq!(outcome.recovered.unwrap(), outcome.expected);
    // And the decoded sum is the float sum up to the fixed-point resolution.
    let decoded = fixed().decode(&outcome.expected);
    for (j, d) in decoded.iter().enumerate() {
        let plain: f32 = inputs.iter().map(|u| u[j]).sum();
        assert!((d - plain).abs() < 1e-5, "{d} vs {plain}");
    }
    // No single masked input equals its encoding (the masks are there).
    let encoded = fixed().encode(&inputs[0]).unwrap();
    assert_ne!(outcome.inputs[0].values, encoded);
}

#[test]
fn survivors_sum_is_recovered_after_one_or_two_dropouts() {
    let inputs = updates(6, 500, 2);
    for dropped in [vec![2], vec![0, 5], vec![3, 1]] {
        let outcome = run_round(4, &inputs, &[], &dropped, 2);
        assert_eq!(outcome.recovered.unwrap(), outcome.expected, "{dropped:?}");
    }
    // A client that never delivered its bundles is simply not anyone's neighbour.
    let outcome = run_round(4, &inputs, &[4], &[1], 3);
    assert_eq!(outcome.recovered.unwrap(), outcome.expected);
}

#[test]
fn fewer_survivors_than_the_threshold_cannot_unmask() {
    let inputs = updates(5, 10, 3);
    let outcome = run_round(3, &inputs, &[], &[0, 1, 2], 4);
    assert_eq!(
        outcome.recovered,
        Err(SecAggError::TooFewShares {
            have: 2,
            threshold: 3
        })
    );
}

#[test]
fn roster_and_fixed_point_limits_are_enforced() {
    let ads: Vec<Advertisement> = (0..4)
        .map(|i| SecAggClient::new(ClientId(i), 0, client_seed(0, i)).advertise())
        .collect();
    assert_eq!(
        Roster::new(0, &ads, 2),
        Err(SecAggError::InvalidThreshold { threshold: 2, n: 4 })
    );
    let twice = [ads[0], ads[1], ads[0]];
    assert_eq!(
        Roster::new(0, &twice, 2),
        Err(SecAggError::DuplicateClient(ClientId(0)))
    );
    assert!(FixedPoint::new(40, 1e6, 100).is_err());
    let err = fixed().encode(&[0.0, 101.0]).unwrap_err();
    assert!(matches!(
        err,
        SecAggError::ValueOutOfRange { coordinate: 1, .. }
    ));
    assert!(fixed().encode(&[f32::NAN]).is_err());
    // Negative values wrap and decode back.
    let enc = fixed().encode(&[-1.5, 2.25]).unwrap();
    assert_eq!(fixed().decode(&enc), vec![-1.5, 2.25]);
}

/// A tampered share is caught by the commitment (or as inconsistent limbs), never decoded.
#[test]
fn tampered_reveals_are_detected() {
    let round = 1;
    let mut clients: Vec<SecAggClient> = (0..3)
        .map(|i| SecAggClient::new(ClientId(i), round, client_seed(9, i)))
        .collect();
    let ads: Vec<Advertisement> = clients.iter().map(SecAggClient::advertise).collect();
    let roster = Roster::new(round, &ads, 2).unwrap();
    let mut bundles = Vec::new();
    for c in &mut clients {
        bundles.extend(c.share_keys(&roster).unwrap());
    }
    for b in bundles {
        clients[b.to.0 as usize].receive_share(b).unwrap();
    }
    let masked: Vec<MaskedInput> = clients
        .iter_mut()
        .map(|c| c.mask(&fixed(), &[1.0, 2.0]).unwrap())
        .collect();
    let survivors: BTreeSet<ClientId> = (0..3).map(ClientId).collect();
    let mut reveals: Vec<Reveal> = clients
        .iter_mut()
        .map(|c| c.reveal(&survivors).unwrap())
        .collect();
    // A second request (say with client 1 declared dropped) is refused: answering it would hand
    // out client 1's key share after its self-mask share, unmasking its update.
    let fewer: BTreeSet<ClientId> = [ClientId(0), ClientId(2)].into_iter().collect();
    assert_eq!(
        clients[0].reveal(&fewer),
        Err(SecAggError::OutOfOrder("reveal called twice"))
    );
    assert_eq!(
        clients[0].mask(&fixed(), &[0.0, 0.0]),
        Err(SecAggError::OutOfOrder("mask called twice"))
    );
    assert_eq!(
        clients[0].share_keys(&roster),
        Err(SecAggError::OutOfOrder("share_keys called twice"))
    );
    let share = reveals[0].mask_shares.get_mut(&ClientId(1)).unwrap();
    share.y[0] = (share.y[0] + 1) % ((1 << 61) - 1);
    let err = unmask_sum(&roster, &masked, &reveals).unwrap_err();
    assert!(
        matches!(
            err,
            SecAggError::CommitmentMismatch(ClientId(1)) | SecAggError::InconsistentShares
        ),
        "{err:?}"
    );
}

/// Pearson chi-square of the top byte of `values` against the uniform distribution on 256 bins.
fn chi_square_top_byte(values: &[u64]) -> f64 {
    let mut bins = [0u64; 256];
    for &v in values {
        bins[(v >> 56) as usize] += 1;
    }
    let expected = values.len() as f64 / 256.0;
    bins.iter()
        .map(|&b| (b as f64 - expected).powi(2) / expected)
        .sum()
}

/// No single masked message reveals its update: the masked vectors of an all-zero update and of
/// a large constant update both pass a chi-square uniformity test on their top byte (255 degrees
/// of freedom; 99.9 % quantile 330.5), their means match a uniform u64, and a two-sample test
/// cannot tell them apart. Without masks both would sit in one or two bins.
#[test]
fn a_masked_message_looks_uniform_whatever_the_update() {
    let dim = 65_536;
    let zeros = vec![0.0f32; dim];
    let large = vec![99.0f32; dim];
    let a = run_round(2, &[zeros, vec![0.0; dim], vec![0.0; dim]], &[], &[], 21);
    let b = run_round(2, &[large, vec![0.0; dim], vec![0.0; dim]], &[], &[], 22);
    let (ma, mb) = (&a.inputs[0].values, &b.inputs[0].values);
    for values in [ma, mb] {
        let chi = chi_square_top_byte(values);
        assert!(chi < 330.5, "chi-square {chi}");
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let uniform_mean = 2f64.powi(63);
        // Std of the mean of `dim` uniform u64s: 2^64 / sqrt(12 · dim).
        let sd = 2f64.powi(64) / (12.0 * dim as f64).sqrt();
        assert!((mean - uniform_mean).abs() < 4.0 * sd, "mean {mean}");
    }
    let (mut ha, mut hb) = ([0f64; 256], [0f64; 256]);
    for (&x, &y) in ma.iter().zip(mb) {
        ha[(x >> 56) as usize] += 1.0;
        hb[(y >> 56) as usize] += 1.0;
    }
    let two_sample: f64 = ha
        .iter()
        .zip(&hb)
        .filter(|(x, y)| **x + **y > 0.0)
        .map(|(x, y)| (x - y).powi(2) / (x + y))
        .sum();
    assert!(two_sample < 330.5, "two-sample chi-square {two_sample}");
    // The unmasked encodings would fail the same test outright.
    assert!(chi_square_top_byte(&fixed().encode(&vec![99.0; dim]).unwrap()) > 1e6);
}

/// Once a dropped client's key is revealed, its pairwise masks are known, but a late copy of its
/// message still carries its self mask and stays uniform.
#[test]
fn a_late_message_of_a_dropped_client_stays_masked() {
    let dim = 65_536;
    let inputs = vec![vec![50.0f32; dim], vec![1.0; dim], vec![2.0; dim]];
    let all = run_round(2, &inputs, &[], &[], 5);
    // Client 0's message minus both pairwise masks (what an aggregator learns after revealing
    // its key) is encode(x) + PRG(b): recompute that from the clients' seeds.
    let client0 = SecAggClient::new(ClientId(0), 7, client_seed(5, 0));
    let mut residual = all.inputs[0].values.clone();
    for j in 1..3u32 {
        let other = SecAggClient::new(ClientId(j), 7, client_seed(5, j));
        let shared = client0
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(other.advertise().public_key));
        apply_mask(
            &mut residual,
            pair_seed(shared.as_bytes(), 7, ClientId(0), ClientId(j)),
            true,
        );
    }
    assert!(chi_square_top_byte(&residual) < 330.5);
    assert_ne!(residual, fixed().encode(&inputs[0]).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// For any group size, threshold and set of at most n − t dropouts, the survivors' exact
    /// fixed-point sum is recovered.
    #[test]
    fn survivors_sum_is_exact(n in 3usize..8, extra in 0usize..4, drops in 0usize..4, seed in any::<u64>()) {
        let t = (n / 2 + 1 + extra).min(n);
        let drops = drops.min(n - t);
        let inputs = updates(n, 64, seed);
        let dropped: Vec<u32> = (0..drops as u32).map(|k| (k * 2 + (seed % 2) as u32) % n as u32).collect();
        let outcome = run_round(t, &inputs, &[], &dropped, seed);
        prop_assert_eq!(outcome.recovered.unwrap(), outcome.expected);
    }
}
