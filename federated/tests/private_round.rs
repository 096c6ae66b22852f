//! DP and secure aggregation together on real updates: ten clients compute softmax-regression
//! gradients on their digits shards, clip them and add their share of the Gaussian noise
//! (distributed DP), then mask them; two clients drop after masking. The aggregator recovers the
//! exact fixed-point sum of the eight survivors' noised updates, and the noise in it has the
//! std the DP module predicts for that many survivors.

mod common;

use std::collections::BTreeSet;

use common::{CLIENTS, PARAMS, gradient, load_digits, shards};
use gradmesh_federated::dp::{GaussianMechanism, RdpAccountant, add_gaussian_noise, clip_l2};
use gradmesh_federated::secagg::{
    Advertisement, ClientId, FixedPoint, Reveal, Roster, SecAggClient, unmask_sum,
};

const ROUND: u64 = 3;
const THRESHOLD: usize = 6;
const DROPPED: [u32; 2] = [3, 8];

fn seed_bytes(id: u32) -> [u8; 32] {
    *blake3::hash(&[b"private_round".as_slice(), &id.to_le_bytes()].concat()).as_bytes()
}

/// Runs the secure-aggregation round on `updates`; returns the unmasked sum and the plain
/// fixed-point sum of the survivors' encodings.
fn secure_sum(fixed: &FixedPoint, updates: &[Vec<f32>]) -> (Vec<u64>, Vec<u64>) {
    let mut clients: Vec<SecAggClient> = (0..CLIENTS as u32)
        .map(|i| SecAggClient::new(ClientId(i), ROUND, seed_bytes(i)))
        .collect();
    let ads: Vec<Advertisement> = clients.iter().map(SecAggClient::advertise).collect();
    let roster = Roster::new(ROUND, &ads, THRESHOLD).unwrap();
    let mut bundles = Vec::new();
    for client in &mut clients {
        bundles.extend(client.share_keys(&roster).unwrap());
    }
    for bundle in bundles {
        clients[bundle.to.0 as usize].receive_share(bundle).unwrap();
    }
    let mut masked = Vec::new();
    let mut plain = vec![0u64; PARAMS];
    for (client, update) in clients.iter_mut().zip(updates) {
        if DROPPED.contains(&client.id().0) {
            continue;
        }
        masked.push(client.mask(fixed, update).unwrap());
        for (p, e) in plain.iter_mut().zip(fixed.encode(update).unwrap()) {
            *p = p.wrapping_add(e);
        }
    }
    let survivors: BTreeSet<ClientId> = masked.iter().map(|m| m.from).collect();
    let reveals: Vec<Reveal> = clients
        .iter_mut()
        .filter(|c| survivors.contains(&c.id()))
        .map(|c| c.reveal(&survivors).unwrap())
        .collect();
    (unmask_sum(&roster, &masked, &reveals).unwrap(), plain)
}

#[test]
fn dp_noised_updates_sum_exactly_through_secure_aggregation() {
    let data = load_digits();
    let params = vec![0.0f32; PARAMS];
    let mechanism = GaussianMechanism::new(0.25, 1.0).unwrap();
    let mut clipped = Vec::new();
    let mut noised = Vec::new();
    for (k, rows) in shards(data.train_y.len()).iter().enumerate() {
        let mut update = gradient(&params, &data.train_x, &data.train_y, rows);
        let norm = clip_l2(&mut update, mechanism.clip()).unwrap();
        assert!(
            norm > mechanism.clip(),
            "client {k}: norm {norm} is not clipped"
        );
        clipped.push(update.clone());
        add_gaussian_noise(
            &mut update,
            mechanism.client_noise_std(CLIENTS as u32),
            k as u64,
        );
        noised.push(update);
    }
    let fixed = FixedPoint::new(24, 64.0, CLIENTS as u32).unwrap();
    let (recovered, plain) = secure_sum(&fixed, &noised);
    assert_eq!(
        recovered, plain,
        "the survivors' sum is recovered bit for bit"
    );

    // The noise left in the sum: 8 of 10 clients' shares, std σ·C·sqrt(8/10).
    let decoded = fixed.decode(&recovered);
    let survivors: Vec<usize> = (0..CLIENTS)
        .filter(|k| !DROPPED.contains(&(*k as u32)))
        .collect();
    let residual: Vec<f64> = (0..PARAMS)
        .map(|j| {
            let clean: f64 = survivors.iter().map(|&k| f64::from(clipped[k][j])).sum();
            f64::from(decoded[j]) - clean
        })
        .collect();
    let sd = (residual.iter().map(|r| r * r).sum::<f64>() / PARAMS as f64).sqrt();
    let expected = mechanism.sum_noise_std() * (survivors.len() as f64 / CLIENTS as f64).sqrt();
    println!("noise std in the recovered sum {sd:.4}, predicted {expected:.4}");
    assert!((sd - expected).abs() < 0.1 * expected, "{sd} vs {expected}");

    // One such round per epoch of a 100-client population sampling 10 (q = 0.1), 50 rounds.
    let mut accountant = RdpAccountant::new();
    accountant
        .compose(0.1, mechanism.noise_multiplier(), 50)
        .unwrap();
    let spent = accountant.epsilon(1e-5).unwrap();
    println!(
        "epsilon {:.3} at delta 1e-5 (order {})",
        spent.epsilon, spent.order
    );
    assert!(spent.epsilon.is_finite() && spent.epsilon > 0.0);
}
