use super::*;

/// A heterogeneous federated least-squares problem: client i minimizes
/// fᵢ(w) = ½ Σⱼ hᵢⱼ (wⱼ − aᵢⱼ)², so its gradient is hᵢ ⊙ (w − aᵢ). With unequal curvatures hᵢ,
/// the global optimum of the mean objective is w* = Σ hᵢaᵢ / Σ hᵢ, and FedAvg with several local
/// steps drifts away from it (the client drift SCAFFOLD corrects).
struct Quadratic {
    h: Vec<Vec<f32>>,
    a: Vec<Vec<f32>>,
}

impl Quadratic {
    fn new() -> Self {
        Self {
            h: vec![
                vec![1.0, 0.2, 2.0],
                vec![0.1, 1.5, 0.5],
                vec![2.0, 0.3, 0.1],
            ],
            a: vec![
                vec![1.0, -2.0, 0.5],
                vec![-3.0, 1.0, 2.0],
                vec![2.0, 4.0, -1.0],
            ],
        }
    }

    fn optimum(&self) -> Vec<f32> {
        (0..3)
            .map(|j| {
                let num: f32 = (0..3).map(|i| self.h[i][j] * self.a[i][j]).sum();
                let den: f32 = (0..3).map(|i| self.h[i][j]).sum();
                num / den
            })
            .collect()
    }

    /// `steps` local SGD steps of client `i` with the strategy's gradient hook.
    fn train(
        &self,
        s: &dyn Strategy,
        i: usize,
        global: &[f32],
        client: &ClientState,
        steps: u32,
        lr: f32,
    ) -> Vec<f32> {
        let mut w = global.to_vec();
        for _ in 0..steps {
            let mut g: Vec<f32> = (0..3)
                .map(|j| self.h[i][j] * (w[j] - self.a[i][j]))
                .collect();
            s.correct_gradient(global, client, &w, &mut g).unwrap();
            for (wj, gj) in w.iter_mut().zip(&g) {
                *wj -= lr * gj;
            }
        }
        w
    }

    /// Runs `rounds` rounds with all three clients; returns the final global model.
    fn run(&self, s: &mut dyn Strategy, rounds: usize, steps: u32, lr: f32) -> Vec<f32> {
        let mut global = vec![0.0_f32; 3];
        let mut clients = vec![ClientState::default(); 3];
        for _ in 0..rounds {
            let mut messages = Vec::new();
            for (i, client) in clients.iter_mut().enumerate() {
                let local = self.train(s, i, &global, client, steps, lr);
                let m = s
                    .client_message(client, &delta(&global, &local).unwrap(), steps, lr)
                    .unwrap();
                assert_eq!(m.len(), s.message_len(3));
                messages.push((m, s.aggregation_weight(10)));
            }
            let aggregate = weighted_mean(&messages).unwrap();
            s.server_step(&mut global, &aggregate, 1.0).unwrap();
        }
        global
    }
}

/// Every name `StrategyConfig::from_str` accepts.
const NAMES: [&str; 8] = [
    "fedavg",
    "fedavgm",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "scaffold",
    "diloco",
];

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

#[test]
fn fedavg_server_step_is_the_weighted_mean_of_models() {
    let global = vec![1.0_f32, 2.0];
    let models = [vec![2.0_f32, 2.0], vec![0.0, 5.0]];
    let messages: Vec<(Vec<f32>, f64)> = models
        .iter()
        .zip([3.0, 1.0])
        .map(|(m, w)| (delta(&global, m).unwrap(), w))
        .collect();
    let aggregate = weighted_mean(&messages).unwrap();
    let mut next = global.clone();
    FedAvg::new(1.0)
        .unwrap()
        .server_step(&mut next, &aggregate, 1.0)
        .unwrap();
    // (3·2 + 1·0)/4 = 1.5 and (3·2 + 1·5)/4 = 2.75.
    assert_eq!(next, vec![1.5, 2.75]);
}

#[test]
fn fedprox_with_mu_zero_is_fedavg_bit_for_bit() {
    let q = Quadratic::new();
    let fedavg = q.run(&mut FedAvg::new(1.0).unwrap(), 20, 10, 0.1);
    let prox0 = q.run(&mut FedProx::new(0.0).unwrap(), 20, 10, 0.1);
    assert_eq!(fedavg, prox0);
    // A positive μ changes the trajectory (the proximal term is really applied).
    let prox = q.run(&mut FedProx::new(1.0).unwrap(), 20, 10, 0.1);
    assert_ne!(fedavg, prox);
}

#[test]
fn fedprox_adds_the_proximal_gradient() {
    let s = FedProx::new(0.5).unwrap();
    let mut g = vec![1.0_f32, -1.0];
    s.correct_gradient(&[0.0, 1.0], &ClientState::default(), &[2.0, 0.0], &mut g)
        .unwrap();
    // g + μ(w − w₀) = [1 + 0.5·2, −1 + 0.5·(−1)].
    assert_eq!(g, vec![2.0, -1.5]);
}

#[test]
fn scaffold_removes_client_drift_where_fedavg_does_not() {
    let q = Quadratic::new();
    let opt = q.optimum();
    let fedavg = q.run(&mut FedAvg::new(1.0).unwrap(), 200, 20, 0.05);
    let scaffold = q.run(&mut Scaffold::new(1.0).unwrap(), 200, 20, 0.05);
    let (d_avg, d_sc) = (distance(&fedavg, &opt), distance(&scaffold, &opt));
    println!("distance to w*: fedavg {d_avg:.4}, scaffold {d_sc:.6}");
    assert!(
        d_avg > 0.1,
        "the problem should show client drift under FedAvg ({d_avg})"
    );
    assert!(d_sc < 1e-3, "SCAFFOLD should reach the optimum ({d_sc})");
}

#[test]
fn scaffold_control_variates_follow_option_two() {
    let mut s = Scaffold::new(1.0).unwrap();
    let global = [1.0_f32, 0.0];
    // Round 1: c = cᵢ = 0. Two local steps of lr 0.5 ended at y = [0, 1].
    let mut client = ClientState::default();
    let m = s
        .client_message(&mut client, &delta(&global, &[0.0, 1.0]).unwrap(), 2, 0.5)
        .unwrap();
    // Δy = y − x = [−1, 1]; cᵢ⁺ = 0 − 0 + (x − y)/(K·η) = [1, −1]/1; Δc = cᵢ⁺ − 0.
    assert_eq!(m, vec![-1.0, 1.0, 1.0, -1.0]);
    assert_eq!(client.control(), &[1.0, -1.0]);
    // Server with |S|/N = 0.25: x ← x + Δy, c ← c + 0.25·Δc.
    let mut x = global.to_vec();
    s.server_step(&mut x, &m, 0.25).unwrap();
    assert_eq!(x, vec![0.0, 1.0]);
    assert_eq!(s.control(), &[0.25, -0.25]);
    // Round 2: the gradient correction is g + c − cᵢ.
    let mut g = vec![0.0_f32, 0.0];
    s.correct_gradient(&x, &client, &x, &mut g).unwrap();
    assert_eq!(g, vec![0.25 - 1.0, -0.25 + 1.0]);
    // cᵢ⁺ = cᵢ − c + (x − y)/(Kη) with y = x + [0.5, 0] after K = 1, η = 0.5: [1 − 0.25 − 1, −1 + 0.25].
    let m2 = s
        .client_message(&mut client, &delta(&x, &[0.5, 1.0]).unwrap(), 1, 0.5)
        .unwrap();
    assert_eq!(client.control(), &[-0.25, -0.75]);
    assert_eq!(&m2[2..], &[-1.25, 0.25]);
    assert!(
        s.server_step(&mut x, &m2[..2], 1.0).is_err(),
        "short aggregate accepted"
    );
}

#[test]
fn fedadam_matches_a_hand_computed_step() {
    let (lr, b1, b2, tau) = (0.1_f32, 0.9_f32, 0.99_f32, 1e-3_f32);
    let mut s = FedOpt::new(FedOptRule::Adam, lr, b1, b2, tau).unwrap();
    let mut x = vec![1.0_f32, -2.0];
    let deltas = [[0.5_f32, -0.25], [-0.1, 0.3]];
    // The same algorithm in f64, written out: m₀ = 0, v₀ = τ², no bias correction.
    let (mut m, mut v, mut xe) = ([0.0_f64; 2], [f64::from(tau * tau); 2], [1.0_f64, -2.0]);
    for d in deltas {
        s.server_step(&mut x, &d, 1.0).unwrap();
        for j in 0..2 {
            let dj = f64::from(d[j]);
            m[j] = 0.9 * m[j] + 0.1 * dj;
            v[j] = 0.99 * v[j] + 0.01 * dj * dj;
            xe[j] += 0.1 * m[j] / (v[j].sqrt() + 1e-3);
        }
        for j in 0..2 {
            assert!((f64::from(x[j]) - xe[j]).abs() < 1e-6, "{x:?} vs {xe:?}");
        }
    }
    // First step by hand: m = 0.05, v = 0.99e-6 + 0.0025 = 0.00250099, x = 1 + 0.1·0.05/(√v + τ).
    let first = 1.0 + 0.1 * 0.05 / (0.002_500_99_f64.sqrt() + 0.001);
    assert!((first - 1.098_020_2).abs() < 1e-6, "{first}");
}

#[test]
fn fedyogi_and_fedadagrad_second_moments_by_hand() {
    let d = [0.5_f32];
    let mut yogi = FedOpt::new(FedOptRule::Yogi, 1.0, 0.0, 0.5, 0.1).unwrap();
    let mut x = vec![0.0_f32];
    yogi.server_step(&mut x, &d, 1.0).unwrap();
    // v₀ = τ² = 0.01 < Δ² = 0.25 ⇒ v = 0.01 + 0.5·0.25 = 0.135; m = Δ (β₁ = 0).
    assert!((yogi.moments().1[0] - 0.135).abs() < 1e-7);
    assert!((x[0] - 0.5 / (0.135_f32.sqrt() + 0.1)).abs() < 1e-6);
    let mut adagrad = FedOpt::new(FedOptRule::Adagrad, 1.0, 0.0, 0.5, 0.1).unwrap();
    let mut x = vec![0.0_f32];
    adagrad.server_step(&mut x, &d, 1.0).unwrap();
    adagrad.server_step(&mut x, &d, 1.0).unwrap();
    // v = 0.01 + 0.25 + 0.25.
    assert!((adagrad.moments().1[0] - 0.51).abs() < 1e-7);
    // Yogi grows v more slowly than Adagrad once v > Δ²: its next step shrinks v toward Δ².
    yogi.server_step(&mut x, &[0.1], 1.0).unwrap();
    assert!((yogi.moments().1[0] - (0.135 - 0.5 * 0.01)).abs() < 1e-7);
    assert!(FedOpt::new(FedOptRule::Adam, 0.1, 1.0, 0.9, 1e-3).is_err());
}

#[test]
fn server_optimizers_are_deterministic_across_instances() {
    let q = Quadratic::new();
    for name in NAMES {
        let config: StrategyConfig = name.parse().unwrap();
        let a = q.run(config.build().unwrap().as_mut(), 30, 5, 0.1);
        let b = q.run(config.build().unwrap().as_mut(), 30, 5, 0.1);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(config.build().unwrap().name(), name);
        // Every strategy makes progress from w = 0 toward the optimum.
        assert!(
            distance(&a, &q.optimum()) < distance(&[0.0; 3], &q.optimum()),
            "{name}: {a:?}"
        );
    }
    assert!(matches!(
        "fedsgd".parse::<StrategyConfig>(),
        Err(StrategyError::UnknownName(_))
    ));
}

#[test]
fn fedavgm_is_heavy_ball_on_the_pseudo_gradient() {
    let mut s = FedAvgM::new(0.5, 0.9).unwrap();
    let mut x = vec![0.0_f32];
    s.server_step(&mut x, &[1.0], 1.0).unwrap();
    // g = −1, v = −1, x = 0 − 0.5·(−1).
    assert_eq!(x, vec![0.5]);
    s.server_step(&mut x, &[1.0], 1.0).unwrap();
    // v = 0.9·(−1) − 1 = −1.9, x = 0.5 + 0.95.
    assert!((x[0] - 1.45).abs() < 1e-6);
}

#[test]
fn diloco_is_the_ground_crates_outer_nesterov_step() {
    let mut s = Diloco::new(0.5, 0.9).unwrap();
    let mut x = vec![1.0_f32, 2.0];
    // Clients moved to [0, 2]: Δ = [−1, 0], pseudo-gradient [1, 0] (the ground crate's hand-computed case).
    s.server_step(&mut x, &[-1.0, 0.0], 1.0).unwrap();
    assert!((x[0] - 0.05).abs() < 1e-6 && x[1] == 2.0, "{x:?}");
}

#[test]
fn a_restored_client_control_is_the_one_scaffold_reads() {
    let s = Scaffold::new(1.0).unwrap();
    let client = ClientState::with_control(vec![1.0, -1.0]);
    assert_eq!(client.control(), &[1.0, -1.0]);
    // c = 0 before the first server step, so the correction is −cᵢ.
    let mut g = vec![0.0_f32, 0.5];
    s.correct_gradient(&[0.0, 0.0], &client, &[0.0, 0.0], &mut g)
        .unwrap();
    assert_eq!(g, vec![-1.0, 1.5]);
}

/// Model size of the server-state tests.
const PARAMS: usize = 7;

fn build(name: &str) -> Box<dyn Strategy> {
    name.parse::<StrategyConfig>().unwrap().build().unwrap()
}

fn initial_global() -> Vec<f32> {
    (0..PARAMS).map(|j| 0.25 * j as f32 - 1.0).collect()
}

/// Server step `k` with an aggregate of mixed signs and magnitudes (zeros included), sized by the
/// strategy's message layout, and |S|/N = 0.5.
fn step(s: &mut dyn Strategy, global: &mut [f32], k: usize) {
    let aggregate: Vec<f32> = (0..s.message_len(PARAMS))
        .map(|j| ((j * 7 + k * 5 + 3) % 13) as f32 / 8.0 - 0.75)
        .collect();
    s.server_step(global, &aggregate, 0.5).unwrap();
}

/// The global model and server state, as bits: what peers digest.
fn fingerprint(s: &dyn Strategy, global: &[f32]) -> (Vec<u32>, u64, Vec<u32>) {
    let state = s.server_state(PARAMS);
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    (bits(global), state.step, bits(&state.values))
}

#[test]
fn a_synced_server_state_continues_bit_identically() {
    for name in NAMES {
        let mut a = build(name);
        let mut global = initial_global();
        for k in 0..3 {
            step(a.as_mut(), &mut global, k);
        }
        let snapshot = a.server_state(PARAMS);
        let stateful = a.server_state_len(PARAMS) > 0;
        assert_eq!(snapshot.step, if stateful { 3 } else { 0 }, "{name}");
        assert!(
            !stateful || snapshot.values.iter().any(|&v| v != 0.0),
            "{name}: trained state is all zero"
        );
        // A fresh peer, and one whose own history differs (DiLoCo's start must be reset too).
        let mut fresh = build(name);
        fresh.load_server_state(&global, snapshot.clone()).unwrap();
        let mut diverged = build(name);
        let mut other = initial_global();
        for k in 5..9 {
            step(diverged.as_mut(), &mut other, k);
        }
        diverged
            .load_server_state(&global, snapshot.clone())
            .unwrap();
        // Without the state, the same global model steps elsewhere.
        let mut unsynced = build(name);
        let mut unsynced_global = global.clone();
        step(unsynced.as_mut(), &mut unsynced_global, 3);

        let mut a_global = global.clone();
        step(a.as_mut(), &mut a_global, 3);
        let expected = fingerprint(a.as_ref(), &a_global);
        for synced in [&mut fresh, &mut diverged] {
            assert_eq!(synced.server_state(PARAMS), snapshot, "{name}");
            let mut g = global.clone();
            step(synced.as_mut(), &mut g, 3);
            assert_eq!(fingerprint(synced.as_ref(), &g), expected, "{name}");
        }
        let without = fingerprint(unsynced.as_ref(), &unsynced_global);
        assert_eq!(
            without == expected,
            !stateful,
            "{name}: state should matter"
        );
    }
}

#[test]
fn a_fresh_server_state_is_the_starting_state() {
    for name in NAMES {
        let fresh = build(name);
        let len = fresh.server_state_len(PARAMS);
        let expected_len = match name {
            "fedavg" | "fedprox" => 0,
            "fedadam" | "fedyogi" | "fedadagrad" => 2 * PARAMS,
            _ => PARAMS,
        };
        assert_eq!(len, expected_len, "{name}");
        let state = fresh.server_state(PARAMS);
        assert_eq!((state.step, state.values.len()), (0, len), "{name}");
        // Zeros, except FedOpt's v, which starts at τ² (default τ = 1e-3) as in the paper.
        let v0 = if len == 2 * PARAMS {
            1e-3_f32 * 1e-3
        } else {
            0.0
        };
        let (m, v) = state.values.split_at(len.min(PARAMS));
        assert!(m.iter().all(|&x| x.to_bits() == 0), "{name}: {m:?}");
        assert!(v.iter().all(|&x| x == v0), "{name}: {v:?}");

        let (mut plain, mut loaded) = (build(name), build(name));
        loaded.load_server_state(&initial_global(), state).unwrap();
        let (mut g_plain, mut g_loaded) = (initial_global(), initial_global());
        for k in 0..2 {
            step(plain.as_mut(), &mut g_plain, k);
            step(loaded.as_mut(), &mut g_loaded, k);
        }
        assert_eq!(
            fingerprint(plain.as_ref(), &g_plain),
            fingerprint(loaded.as_ref(), &g_loaded),
            "{name}"
        );
    }
}

#[test]
fn a_server_state_of_the_wrong_length_is_refused_without_change() {
    for name in NAMES {
        let (mut s, mut twin) = (build(name), build(name));
        let (mut g, mut g_twin) = (initial_global(), initial_global());
        for k in 0..2 {
            step(s.as_mut(), &mut g, k);
            step(twin.as_mut(), &mut g_twin, k);
        }
        let len = s.server_state_len(PARAMS);
        // A different global model too, so a DiLoCo start reset before the check would show.
        let moved: Vec<f32> = g.iter().map(|x| x + 1.0).collect();
        for bad in [len + 1, len.saturating_sub(1), 3 * len + 2] {
            if bad == len {
                continue;
            }
            let state = ServerState {
                step: 9,
                values: vec![0.5; bad],
            };
            let err = s.load_server_state(&moved, state).unwrap_err();
            assert!(
                matches!(err, StrategyError::LengthMismatch { expected, found, .. }
                    if expected == len && found == bad),
                "{name}: {err}"
            );
        }
        // A state sized for another model.
        if len > 0 {
            let state = s.server_state(PARAMS);
            assert!(s.load_server_state(&moved[..PARAMS - 1], state).is_err());
        }
        assert_eq!(
            fingerprint(s.as_ref(), &g),
            fingerprint(twin.as_ref(), &g_twin)
        );
        step(s.as_mut(), &mut g, 2);
        step(twin.as_mut(), &mut g_twin, 2);
        assert_eq!(
            fingerprint(s.as_ref(), &g),
            fingerprint(twin.as_ref(), &g_twin),
            "{name}"
        );
    }
}

#[test]
fn optimizer_backed_state_matches_the_ground_crate() {
    for momentum in [0.0, 0.9] {
        let strategies: [Box<dyn Strategy>; 2] = [
            Box::new(FedAvgM::new(0.5, momentum).unwrap()),
            Box::new(Diloco::new(0.5, momentum).unwrap()),
        ];
        let expected = if momentum > 0.0 { PARAMS } else { 0 };
        for mut s in strategies {
            assert_eq!(s.server_state_len(PARAMS), expected, "{s:?}");
            let mut g = initial_global();
            step(s.as_mut(), &mut g, 0);
            // Step 1 read from the optimizer itself, whose state has the length announced.
            let state = s.server_state(PARAMS);
            assert_eq!((state.step, state.values.len()), (1, expected), "{s:?}");
        }
    }
}

#[test]
fn a_strategy_displays_its_name_and_every_server_hyper_parameter() {
    let shown: Vec<String> = [
        "fedavg",
        "fedavgm",
        "fedprox",
        "fedadam",
        "fedyogi",
        "fedadagrad",
        "scaffold",
        "diloco",
    ]
    .iter()
    .map(|name| name.parse::<StrategyConfig>().unwrap().to_string())
    .collect();
    assert_eq!(
        shown,
        [
            "fedavg:lr=1",
            "fedavgm:lr=1,momentum=0.9",
            "fedprox:mu=0.01",
            "fedadam:lr=0.01,beta1=0.9,beta2=0.99,tau=0.001",
            "fedyogi:lr=0.01,beta1=0.9,beta2=0.99,tau=0.001",
            "fedadagrad:lr=0.01,beta1=0.9,beta2=0.99,tau=0.001",
            "scaffold:lr=1",
            "diloco:lr=0.7,momentum=0.9",
        ]
    );
    // Each shown form starts with the name it parses from.
    for s in &shown {
        let name = s.split(':').next().unwrap();
        assert!(name.parse::<StrategyConfig>().is_ok(), "{s}");
    }
}
