//! Robust aggregation under attack on real gradients: a softmax regression on the 8×8 digits
//! (data/digits.safetensors, from scripts/setup.sh), ten IID clients, two of them (20 %)
//! Byzantine. The plain mean collapses; median, trimmed mean, Multi-Krum and centered clipping
//! stay close to the honest mean and keep the model's accuracy.

mod common;

use common::{ATTACKERS, CLASSES, CLIENTS, PARAMS, accuracy, gradient, load_digits, shards};
use gradmesh_federated::attack::{Attack, flip_labels};
use gradmesh_federated::robust::Aggregation;

const RULES: [(&str, Aggregation); 4] = [
    ("median", Aggregation::Median),
    ("trimmed mean", Aggregation::TrimmedMean { beta: 0.2 }),
    ("multi-krum", Aggregation::MultiKrum { f: 2, m: 6 }),
    (
        "centered clipping",
        Aggregation::CenteredClipping {
            tau: 0.1,
            iterations: 3,
        },
    ),
];

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

fn relative_error(a: &[f32], reference: &[f32]) -> f64 {
    let diff: Vec<f32> = a.iter().zip(reference).map(|(x, y)| x - y).collect();
    norm(&diff) / norm(reference)
}

/// One round on the clients' real gradients at a partly trained model, for each attack run by
/// 20 % of the clients (sign flip ×10, boosting ×10, pure noise with σ = 0.5, about 10× an
/// honest gradient's coordinate spread): the mean is dragged far from the honest mean, the robust
/// rules stay near it.
#[test]
fn robust_rules_stay_near_the_honest_mean_under_attack() {
    let data = load_digits();
    let shards = shards(data.train_y.len());
    let mut params = vec![0.0f32; PARAMS];
    let all: Vec<usize> = (0..data.train_y.len()).collect();
    for _ in 0..5 {
        let g = gradient(&params, &data.train_x, &data.train_y, &all);
        params.iter_mut().zip(&g).for_each(|(p, g)| *p -= g);
    }
    let honest: Vec<Vec<f32>> = shards
        .iter()
        .map(|rows| gradient(&params, &data.train_x, &data.train_y, rows))
        .collect();
    let honest_refs: Vec<&[f32]> = honest[ATTACKERS..].iter().map(Vec::as_slice).collect();
    let honest_mean = Aggregation::Mean
        .apply(&honest_refs, &[1; CLIENTS - ATTACKERS])
        .unwrap();
    for attack in [
        Attack::SignFlip { lambda: 10.0 },
        Attack::Scaled { lambda: 10.0 },
        Attack::GaussianNoise { sigma: 0.5 },
    ] {
        let mut sent = honest.clone();
        for (k, update) in sent.iter_mut().take(ATTACKERS).enumerate() {
            attack.apply(update, k as u64);
        }
        let refs: Vec<&[f32]> = sent.iter().map(Vec::as_slice).collect();
        let ones = [1u32; CLIENTS];
        let mean = Aggregation::Mean.apply(&refs, &ones).unwrap();
        let mean_error = relative_error(&mean, &honest_mean);
        println!("{attack:?}: mean relative error {mean_error:.3}");
        assert!(
            mean_error > 1.5,
            "{attack:?}: the mean should collapse, error {mean_error}"
        );
        for (name, rule) in RULES {
            let out = rule.apply(&refs, &ones).unwrap();
            let error = relative_error(&out, &honest_mean);
            println!("{attack:?}: {name} relative error {error:.3}");
            assert!(error < 0.35, "{attack:?}: {name} relative error {error}");
        }
    }
}

/// Training with each rule for 20 rounds of full-shard gradient steps: with 20 % sign-flippers
/// (×5) the mean's model falls to chance while every robust rule reaches the accuracy of honest
/// training (0.93 here); with 20 % label-flipping clients the robust rules still hold it.
#[test]
fn robust_rules_keep_accuracy_where_the_mean_collapses() {
    let data = load_digits();
    let shards = shards(data.train_y.len());
    let mut flipped = data.train_y.clone();
    flip_labels(&mut flipped, CLASSES as u32).unwrap();
    let train = |rule: Aggregation, attack: Option<Attack>, label_flip: bool| -> f64 {
        let mut params = vec![0.0f32; PARAMS];
        for round in 0..20u64 {
            let updates: Vec<Vec<f32>> = shards
                .iter()
                .enumerate()
                .map(|(k, rows)| {
                    let byzantine = k < ATTACKERS;
                    let labels = if byzantine && label_flip {
                        &flipped
                    } else {
                        &data.train_y
                    };
                    let mut g = gradient(&params, &data.train_x, labels, rows);
                    if let (true, Some(attack)) = (byzantine, attack) {
                        attack.apply(&mut g, round * 100 + k as u64);
                    }
                    g
                })
                .collect();
            let refs: Vec<&[f32]> = updates.iter().map(Vec::as_slice).collect();
            let step = rule.apply(&refs, &[1; CLIENTS]).unwrap();
            params.iter_mut().zip(&step).for_each(|(p, s)| *p -= s);
        }
        accuracy(&params, &data)
    };
    let honest = train(Aggregation::Mean, None, false);
    let sign_flip = Some(Attack::SignFlip { lambda: 5.0 });
    let collapsed = train(Aggregation::Mean, sign_flip, false);
    let mean_label_flip = train(Aggregation::Mean, None, true);
    println!(
        "no attack, mean: accuracy {honest:.3}; sign flip, mean: {collapsed:.3}; \
         label flip, mean: {mean_label_flip:.3}"
    );
    assert!(honest > 0.9, "{honest}");
    assert!(collapsed < 0.3, "{collapsed}");
    for (name, rule) in RULES {
        let attacked = train(rule, sign_flip, false);
        let label_flipped = train(rule, None, true);
        println!("{name}: sign flip {attacked:.3}, label flip {label_flipped:.3}");
        assert!(attacked > 0.88, "{name} under sign flip: {attacked}");
        assert!(
            label_flipped > 0.88,
            "{name} under label flip: {label_flipped}"
        );
    }
}
