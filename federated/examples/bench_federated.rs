//! Cost of the aggregation-and-privacy half of the federated toolkit, with fixed seeds:
//! robust rules over `n` contributions of `d` floats, one secure-aggregation round (mask per
//! client, unmask with and without dropouts) and the RDP accountant.
//!
//! `cargo run --release -p gradmesh-federated --example bench_federated`
//! Prints one line per measurement: the median of 5 runs (3 for unmasking; masking is the median
//! over the round's surviving clients, since each masks once).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gradmesh_federated::attack::gaussian_noise;
use gradmesh_federated::dp::RdpAccountant;
use gradmesh_federated::robust::Aggregation;
use gradmesh_federated::secagg::{
    Advertisement, ClientId, FixedPoint, MaskedInput, Reveal, Roster, SecAggClient, unmask_sum,
};

fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn contributions(n: usize, dim: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            let mut v = vec![0.0; dim];
            gaussian_noise(&mut v, 1.0, i as u64);
            v
        })
        .collect()
}

fn bench_robust() {
    let (n, dim) = (20, 100_000);
    let rows = contributions(n, dim);
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let weights = vec![1u32; n];
    for (name, rule) in [
        ("mean", Aggregation::Mean),
        ("median", Aggregation::Median),
        (
            "trimmed mean beta=0.2",
            Aggregation::TrimmedMean { beta: 0.2 },
        ),
        (
            "multi-krum f=4 m=16",
            Aggregation::MultiKrum { f: 4, m: 16 },
        ),
        (
            "centered clipping tau=1 x3",
            Aggregation::CenteredClipping {
                tau: 1.0,
                iterations: 3,
            },
        ),
    ] {
        let t = median_time(5, || {
            std::hint::black_box(rule.apply(&refs, &weights).ok());
        });
        println!(
            "robust {name:<28} n={n} d={dim}: {:>8.1} ms",
            t.as_secs_f64() * 1e3
        );
    }
}

struct Round {
    roster: Roster,
    clients: Vec<SecAggClient>,
}

fn setup_round(n: u32) -> Round {
    let mut clients: Vec<SecAggClient> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SecAggClient::new(ClientId(i), 1, seed)
        })
        .collect();
    let ads: Vec<Advertisement> = clients.iter().map(SecAggClient::advertise).collect();
    let roster = Roster::new(1, &ads, n as usize / 2 + 1).unwrap_or_else(|e| panic!("{e}"));
    let mut bundles = Vec::new();
    for c in &mut clients {
        bundles.extend(c.share_keys(&roster).unwrap_or_else(|e| panic!("{e}")));
    }
    for b in bundles {
        clients[b.to.0 as usize]
            .receive_share(b)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Round { roster, clients }
}

fn bench_secagg(n: u32, dim: usize) {
    let fixed = FixedPoint::new(24, 1000.0, n).unwrap_or_else(|e| panic!("{e}"));
    let update = &contributions(1, dim)[0];
    for dropped in [0usize, 2] {
        // A fresh round per dropout case: a client reveals only once per round.
        let mut round = setup_round(n);
        // A client masks once per round: time each survivor's masking, report the median.
        let mut times = Vec::new();
        let mut masked: Vec<MaskedInput> = Vec::new();
        for client in &mut round.clients[dropped..] {
            let start = Instant::now();
            masked.push(
                client
                    .mask(&fixed, update)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            times.push(start.elapsed());
        }
        times.sort();
        let t_mask = times[times.len() / 2];
        let survivors: BTreeSet<ClientId> = masked.iter().map(|m| m.from).collect();
        let reveals: Vec<Reveal> = round.clients[dropped..]
            .iter_mut()
            .map(|c| c.reveal(&survivors).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let t_unmask = median_time(3, || {
            std::hint::black_box(unmask_sum(&round.roster, &masked, &reveals).ok());
        });
        println!(
            "secagg n={n} d={dim} dropped={dropped}: mask {:>7.1} ms/client, unmask {:>8.1} ms",
            t_mask.as_secs_f64() * 1e3,
            t_unmask.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    bench_robust();
    bench_secagg(10, 100_000);
    bench_secagg(50, 100_000);
    let t = median_time(5, || {
        let mut accountant = RdpAccountant::new();
        accountant.compose(0.01, 1.1, 1000).ok();
        std::hint::black_box(accountant.epsilon(1e-5).ok());
    });
    println!(
        "rdp accountant q=0.01 sigma=1.1 (151 orders): {:.2} ms",
        t.as_secs_f64() * 1e3
    );
}
