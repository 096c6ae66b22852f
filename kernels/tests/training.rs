//! Training behaviour: data-parallel equivalence, accuracy on digits, the transformer, DiLoCo,
//! state sync and CUDA (skipped with a reason when no GPU is visible).

mod common;

use common::{data_file, digits, digits_batch, relative_error, seed};
use gradmesh_kernels::{
    BatchSampler, CharCorpus, Device, DilocoConfig, ModelKind, OptimizerConfig, OuterOptimizer,
    Trainer, TransformerConfig, set_torch_threads,
};

fn sgd() -> OptimizerConfig {
    OptimizerConfig::sgd(0.1, 0.9, false, 0.0).unwrap()
}

fn adamw(lr: f32) -> OptimizerConfig {
    OptimizerConfig::adamw(lr, 0.9, 0.999, 1e-8, 0.01).unwrap()
}

#[test]
fn averaged_worker_gradients_equal_one_big_batch() {
    let batch = digits_batch(64);
    let mut single = Trainer::new(ModelKind::Mlp, sgd(), Device::Cpu, seed()).unwrap();
    let loss_full = single.compute_gradients(&batch).unwrap();

    // Four workers with unequal shards; the mesh average is weighted by examples per worker.
    let shards = [(0, 7), (7, 20), (27, 13), (40, 24)];
    let mut workers: Vec<Trainer> = shards
        .iter()
        .map(|_| Trainer::new(ModelKind::Mlp, sgd(), Device::Cpu, seed()).unwrap())
        .collect();
    let mut average = vec![0.0_f32; single.layout().len()];
    let mut loss_avg = 0.0;
    for (worker, &(start, len)) in workers.iter_mut().zip(&shards) {
        let loss = worker
            .compute_gradients(&batch.narrow(start, len).unwrap())
            .unwrap();
        let weight = len as f32 / 64.0;
        loss_avg += weight * loss;
        for (a, g) in average.iter_mut().zip(worker.gradients()) {
            *a += weight * g;
        }
    }
    let error = relative_error(&average, single.gradients());
    println!("loss {loss_full} vs {loss_avg}; gradient relative error {error:e}");
    assert!(error <= 1e-5 && (loss_full - loss_avg).abs() <= 1e-5 * loss_full);

    // Every worker applies the same average and ends bit-identical; the single worker is close.
    for worker in &mut workers {
        worker.gradients_mut().copy_from_slice(&average);
        worker.apply_gradients().unwrap();
    }
    single.apply_gradients().unwrap();
    assert!(
        workers
            .iter()
            .all(|w| w.parameters() == workers[0].parameters())
    );
    assert!(relative_error(workers[0].parameters(), single.parameters()) <= 1e-5);
}

fn train_digits(kind: ModelKind, config: OptimizerConfig, steps: u64) -> f64 {
    let data = digits();
    let mut trainer = Trainer::new(kind, config, Device::Cpu, seed()).unwrap();
    let mut sampler = BatchSampler::new(data.train_len(), 64, seed()).unwrap();
    for step in 0..steps {
        let batch = data.train_batch(sampler.indices(step)).unwrap();
        trainer.train_step(&batch).unwrap();
    }
    trainer.evaluate(&data.test().unwrap()).unwrap()
}

#[test]
fn mlp_learns_digits() {
    let accuracy = train_digits(ModelKind::Mlp, sgd(), 600);
    println!(
        "MLP, SGD momentum 0.9 lr 0.1, batch 64, 600 steps: test accuracy {:.2}%",
        100.0 * accuracy
    );
    // Measured 2026-12-04 on an Intel Xeon, seeds 1..=10 and the default: 96.11–96.94 %.
    assert!(accuracy >= 0.93, "accuracy {accuracy}");
}

#[test]
fn cnn_learns_digits() {
    let accuracy = train_digits(ModelKind::Cnn, adamw(3e-3), 300);
    println!(
        "CNN, AdamW lr 3e-3, batch 64, 300 steps: test accuracy {:.2}%",
        100.0 * accuracy
    );
    // Measured 2026-12-04 on an Intel Xeon, seeds 1..=10 and the default: 97.22–98.33 %.
    assert!(accuracy >= 0.94, "accuracy {accuracy}");
}

#[test]
fn transformer_loss_falls_on_the_corpus() {
    set_torch_threads(1);
    let config = TransformerConfig::new(32, 64, 4, 2).unwrap();
    let corpus = CharCorpus::load(&data_file("corpus.txt"), Device::Cpu).unwrap();
    let mut trainer = Trainer::new(
        ModelKind::Transformer(config),
        adamw(3e-3),
        Device::Cpu,
        seed(),
    )
    .unwrap();
    let valid = corpus.valid_batch(32, config.context()).unwrap();
    let before = trainer.loss(&valid).unwrap();
    for step in 0..150 {
        trainer
            .train_step(
                &corpus
                    .train_batch(step, 16, config.context(), seed())
                    .unwrap(),
            )
            .unwrap();
    }
    let after = trainer.loss(&valid).unwrap();
    let accuracy = trainer.evaluate(&valid).unwrap();
    println!(
        "transformer ({} params): validation loss {before:.3} -> {after:.3}, next-byte accuracy {:.1}%",
        trainer.layout().len(),
        100.0 * accuracy
    );
    // Measured 2026-12-05 on an Intel Xeon, seeds 1..=10 and the default (batches that can end
    // on the split's last window): to 2.54–2.62 nats (2026-12-04, before: 2.53–2.60).
    assert!(
        after < before - 2.5 && after < 2.9,
        "loss {before} -> {after}"
    );
}

#[test]
fn diloco_peers_stay_identical_and_learn() {
    let data = digits();
    let config = DilocoConfig::new(10, 0.7, 0.9).unwrap();
    let mut peers: Vec<Trainer> = (0..2)
        .map(|_| Trainer::new(ModelKind::Mlp, adamw(3e-3), Device::Cpu, seed()).unwrap())
        .collect();
    let mut samplers: Vec<BatchSampler> = (0..2)
        .map(|rank| BatchSampler::new(data.train_len(), 64, seed() + rank).unwrap())
        .collect();
    let mut outers: Vec<OuterOptimizer> = peers
        .iter()
        .map(|p| OuterOptimizer::new(config, p.parameters()))
        .collect();
    for round in 0..15_u64 {
        let mut pseudo = Vec::new();
        for ((peer, sampler), outer) in peers.iter_mut().zip(&mut samplers).zip(&mut outers) {
            for h in 0..u64::from(config.inner_steps()) {
                let step = round * u64::from(config.inner_steps()) + h;
                peer.train_step(&data.train_batch(sampler.indices(step)).unwrap())
                    .unwrap();
            }
            pseudo.push(outer.pseudo_gradient(peer.parameters()).unwrap().to_vec());
        }
        let mean: Vec<f32> = pseudo[0]
            .iter()
            .zip(&pseudo[1])
            .map(|(a, b)| 0.5 * a + 0.5 * b)
            .collect();
        for (peer, outer) in peers.iter_mut().zip(&mut outers) {
            outer
                .pseudo_gradient(peer.parameters())
                .unwrap()
                .copy_from_slice(&mean);
            let next = outer.apply().unwrap().to_vec();
            peer.set_parameters(&next).unwrap();
        }
        assert_eq!(
            peers[0].parameters(),
            peers[1].parameters(),
            "round {round}"
        );
    }
    let accuracy = peers[0].evaluate(&data.test().unwrap()).unwrap();
    println!(
        "DiLoCo 2 peers, H=10, 15 rounds: test accuracy {:.2}%",
        100.0 * accuracy
    );
    // Measured 2026-12-04 on an Intel Xeon, seeds 1..=10 and the default: 93.61–95.28 %.
    assert!(accuracy >= 0.90, "accuracy {accuracy}");
}

#[test]
fn diloco_with_unit_outer_sgd_is_plain_inner_training() {
    let batch = digits_batch(64);
    let mut plain = Trainer::new(ModelKind::Mlp, adamw(1e-3), Device::Cpu, seed()).unwrap();
    let mut peer = Trainer::new(ModelKind::Mlp, adamw(1e-3), Device::Cpu, seed()).unwrap();
    let mut outer = OuterOptimizer::new(DilocoConfig::new(5, 1.0, 0.0).unwrap(), peer.parameters());
    for _ in 0..5 {
        plain.train_step(&batch).unwrap();
        peer.train_step(&batch).unwrap();
    }
    let _ = outer.pseudo_gradient(peer.parameters()).unwrap();
    let next = outer.apply().unwrap().to_vec();
    assert!(relative_error(&next, plain.parameters()) <= 1e-6);
}

#[test]
fn state_bytes_resume_bit_identically() {
    let data = digits();
    let mut sampler = BatchSampler::new(data.train_len(), 32, seed()).unwrap();
    let mut a = Trainer::new(ModelKind::Cnn, adamw(1e-3), Device::Cpu, seed()).unwrap();
    for step in 0..5 {
        a.train_step(&data.train_batch(sampler.indices(step)).unwrap())
            .unwrap();
    }
    // A joining peer with other initial weights takes the state and continues in lockstep.
    let mut b = Trainer::new(ModelKind::Cnn, adamw(1e-3), Device::Cpu, seed() + 1).unwrap();
    let bytes = a.state_bytes();
    b.restore_bytes(&bytes).unwrap();
    assert_eq!(b.state_bytes(), bytes);
    for step in 5..10 {
        let batch = data.train_batch(sampler.indices(step)).unwrap();
        a.train_step(&batch).unwrap();
        b.train_step(&batch).unwrap();
    }
    assert_eq!(a.parameters(), b.parameters());
    assert_eq!(a.training_state(), b.training_state());
    let mut mlp = Trainer::new(ModelKind::Mlp, adamw(1e-3), Device::Cpu, seed()).unwrap();
    assert!(
        mlp.restore_bytes(&bytes).is_err(),
        "a CNN state must not load into an MLP"
    );
}

#[test]
fn cuda_matches_cpu() {
    let cuda = Device::Cuda(0);
    if !cuda.is_available() {
        println!(
            "skipped: CUDA is not available (tch::Cuda::is_available() is false on this machine)"
        );
        return;
    }
    let data = digits();
    let batch = digits_batch(64);
    let mut cpu = Trainer::new(ModelKind::Mlp, sgd(), Device::Cpu, seed()).unwrap();
    let mut gpu = Trainer::new(ModelKind::Mlp, sgd(), cuda, seed()).unwrap();
    assert_eq!(
        cpu.parameters(),
        gpu.parameters(),
        "same seed, same initial weights on any device"
    );
    cpu.compute_gradients(&batch).unwrap();
    let gpu_batch = gradmesh_kernels::Batch::images(
        &common::digits_rows(64).0,
        &common::digits_rows(64).1,
        cuda,
    )
    .unwrap();
    gpu.compute_gradients(&gpu_batch).unwrap();
    let error = relative_error(gpu.gradients(), cpu.gradients());
    println!("CUDA vs CPU gradient relative error {error:e}");
    assert!(error <= 1e-4);
    let gpu_data =
        gradmesh_kernels::Dataset::load_digits(&data_file("digits.safetensors"), cuda).unwrap();
    let mut sampler = BatchSampler::new(data.train_len(), 64, seed()).unwrap();
    for step in 0..600 {
        gpu.train_step(&gpu_data.train_batch(sampler.indices(step)).unwrap())
            .unwrap();
    }
    let accuracy = gpu.evaluate(&gpu_data.test().unwrap()).unwrap();
    println!(
        "MLP on CUDA, 600 steps: test accuracy {:.2}%",
        100.0 * accuracy
    );
    // The same run as `mlp_learns_digits` (96.11–96.94 % over 11 seeds on CPU); on an H200 it
    // gave 96.67 % on the default seed (2026-12-04). The margin covers other GPU kernels.
    assert!(accuracy >= 0.90, "accuracy {accuracy}");
}
