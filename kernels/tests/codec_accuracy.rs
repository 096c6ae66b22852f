//! The codec accuracy claim of docs/benchmarks.md at a reduced scale: 4 simulated peers train
//! the digits MLP data-parallel with gradients averaged through a codec (as the mesh averages
//! them), and top-k(1 %) with error feedback and PowerSGD end close to uncompressed training over
//! the same steps — on average over several seeds, not on one seed: LibTorch picks other kernels
//! on other CPUs, so one seed's curve on one machine is not a property of the codec (a one-seed
//! "within a point" passed on an Intel Xeon and failed on an AMD EPYC). The full table (1500
//! steps, every codec) comes from
//! `cargo run --release -p gradmesh-kernels --example codec_accuracy`.

mod common;

use common::{digits, seeds};
use gradmesh_kernels::{LocalMesh, ModelKind, OptimizerConfig, codec::CodecKind};

struct Outcome {
    accuracy: f64,
    last_loss: f32,
    bytes_per_step: usize,
}

fn train(codec: &str, steps: u64, seed: u64) -> Outcome {
    let data = digits();
    let codec: CodecKind = codec.parse().unwrap();
    let optimizer = OptimizerConfig::sgd(0.1, 0.9, false, 0.0).unwrap();
    let mut mesh = LocalMesh::new(
        ModelKind::Mlp,
        optimizer,
        codec,
        data.train_len(),
        4,
        16,
        seed,
    )
    .unwrap();
    let mut last_loss = f32::NAN;
    for _ in 0..steps {
        last_loss = mesh.step(&data).unwrap();
    }
    assert!(mesh.is_in_lockstep(), "{codec}: peers diverged");
    let accuracy = mesh.evaluate(&data.test().unwrap()).unwrap();
    println!(
        "seed {seed}, {codec}: {steps} steps, test accuracy {:.2}%, last loss {last_loss:.4}",
        100.0 * accuracy
    );
    Outcome {
        accuracy,
        last_loss,
        bytes_per_step: mesh.bytes_sent_per_step_max(),
    }
}

/// How far below uncompressed training a codec may end, in accuracy points (1 point = 0.01).
struct Margin {
    /// Over the seeds, on average.
    mean: f64,
    /// On any one seed.
    worst: f64,
}

/// Each codec compresses at least its ratio, really changes the training (another loss), and
/// ends at most `margin` below uncompressed training over the same steps and seeds.
fn assert_close_to_uncompressed(codecs: &[(&str, usize)], steps: u64, margin: &Margin) {
    let seeds = seeds();
    let none: Vec<Outcome> = seeds.iter().map(|&s| train("none", steps, s)).collect();
    for (seed, outcome) in seeds.iter().zip(&none) {
        assert!(
            outcome.accuracy >= 0.93,
            "seed {seed}: uncompressed baseline {}",
            outcome.accuracy
        );
    }
    for &(codec, ratio_min) in codecs {
        let mut gaps = Vec::new();
        for (&seed, none) in seeds.iter().zip(&none) {
            let compressed = train(codec, steps, seed);
            assert!(compressed.bytes_per_step * ratio_min <= none.bytes_per_step);
            assert_ne!(
                compressed.last_loss, none.last_loss,
                "{codec} changed nothing"
            );
            gaps.push(compressed.accuracy - none.accuracy);
        }
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let worst = gaps.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{codec}, {steps} steps, seeds {seeds:?}: accuracy minus uncompressed, mean {:+.2} \
             points, worst seed {:+.2}",
            100.0 * mean,
            100.0 * worst
        );
        assert!(
            mean >= -margin.mean,
            "{codec}: mean gap {mean} over {gaps:?}"
        );
        assert!(
            worst >= -margin.worst,
            "{codec}: worst gap {worst} over {gaps:?}"
        );
    }
}

/// Measured 2026-12-04 on an Intel Xeon (2 cores), seeds 1..=10 one at a time, gap to
/// uncompressed after 400 steps: top-k(1 %) mean -0.11 points (worst seed -1.67), PowerSGD rank 4
/// mean +0.5 (worst -0.28). The assertion: within a point on average over the seeds, no seed
/// more than 4 points behind.
#[test]
fn topk_one_percent_and_powersgd_rank_4_are_within_a_point_on_average() {
    let margin = Margin {
        mean: 0.01,
        worst: 0.04,
    };
    assert_close_to_uncompressed(&[("topk:0.01", 40), ("powersgd:4", 5)], 400, &margin);
}

/// Rank 2 costs about a point. Measured 2026-12-04 on an Intel Xeon, seeds 1..=10 one at a time,
/// after 800 steps: mean -0.81 points, from +1.11 to -2.78 (an AMD EPYC gave -2.22 on the
/// default seed). The assertion: at most 2 points behind on average, no seed more than 5.
#[test]
fn powersgd_rank_2_costs_at_most_two_points_on_average_after_800_steps() {
    let margin = Margin {
        mean: 0.02,
        worst: 0.05,
    };
    assert_close_to_uncompressed(&[("powersgd:2", 10)], 800, &margin);
}
