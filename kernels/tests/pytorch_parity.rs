//! Our MLP step, SGD and AdamW against PyTorch eager (`scripts/mlp_step.py`) on the same weights
//! and batch, passed through a safetensors file; and checkpoints read by `safetensors.torch`.

mod common;

use std::{collections::BTreeMap, process::Command};

use common::{digits_batch, digits_rows, f32_bytes, python, relative_error, repo_root};
use gradmesh_kernels::{Device, MeshDigest, ModelKind, OptimizerConfig, Trainer, write_checkpoint};
use safetensors::{Dtype, tensor::TensorView};

const BATCH: usize = 64;
const STEPS: usize = 3;

fn sgd() -> OptimizerConfig {
    OptimizerConfig::sgd(0.1, 0.9, true, 1e-4).unwrap()
}

fn adamw() -> OptimizerConfig {
    OptimizerConfig::adamw(1e-2, 0.9, 0.999, 1e-8, 0.01).unwrap()
}

/// Writes the trainer's weights and the batch for the Python side.
fn write_inputs(trainer: &Trainer, path: &std::path::Path) {
    let (x, y) = digits_rows(BATCH);
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = trainer
        .layout()
        .spans()
        .iter()
        .map(|s| {
            let shape = s.shape.iter().map(|&d| d as usize).collect();
            (
                s.name.clone(),
                Dtype::F32,
                shape,
                f32_bytes(&trainer.parameters()[s.range()]),
            )
        })
        .collect();
    owned.push(("x".into(), Dtype::F32, vec![BATCH, 64], f32_bytes(&x)));
    owned.push((
        "y".into(),
        Dtype::I64,
        vec![BATCH],
        y.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    let views = owned
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()));
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn read_outputs(path: &std::path::Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()));
            (name, values.collect())
        })
        .collect()
}

#[test]
fn mlp_step_and_optimizers_match_pytorch() {
    let batch = digits_batch(BATCH);
    let mut trainer = Trainer::new(ModelKind::Mlp, sgd(), Device::Cpu, 11).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (inputs, outputs) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    write_inputs(&trainer, &inputs);
    let status = Command::new(python())
        .arg(repo_root().join("scripts/mlp_step.py"))
        .args([&inputs, &outputs])
        .arg(STEPS.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/mlp_step.py failed");
    let torch = read_outputs(&outputs);

    let loss = trainer.compute_gradients(&batch).unwrap();
    let loss_error = relative_error(&[loss], &torch["loss"]);
    println!(
        "loss ours {loss} torch {} (relative error {loss_error:e})",
        torch["loss"][0]
    );
    assert!(loss_error <= 1e-5);
    for span in trainer.layout().spans() {
        let error = relative_error(
            &trainer.gradients()[span.range()],
            &torch[&format!("grad.{}", span.name)],
        );
        println!("grad {:<10} relative error {error:e}", span.name);
        assert!(error <= 1e-5, "gradient of {}", span.name);
    }

    for (name, config) in [("sgd", sgd()), ("adamw", adamw())] {
        let mut trainer = Trainer::new(ModelKind::Mlp, config, Device::Cpu, 11).unwrap();
        for _ in 0..STEPS {
            trainer.train_step(&batch).unwrap();
        }
        for span in trainer.layout().spans() {
            let expected = &torch[&format!("{name}.{}", span.name)];
            let error = relative_error(&trainer.parameters()[span.range()], expected);
            println!(
                "{name} {STEPS} steps {:<10} relative error {error:e}",
                span.name
            );
            assert!(error <= 1e-5, "{name}: {}", span.name);
        }
    }
}

#[test]
fn checkpoint_loads_in_pytorch_with_the_same_values() {
    let mut trainer = Trainer::new(ModelKind::Mlp, adamw(), Device::Cpu, 5).unwrap();
    trainer.train_step(&digits_batch(32)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let digest = MeshDigest(std::array::from_fn(|i| i as u8 * 3));
    write_checkpoint(&path, &trainer.checkpoint(9, digest), trainer.layout()).unwrap();

    // Expected values, written independently of the checkpoint encoder: raw little-endian f32s of
    // the flat parameters and optimizer state, plus a manifest of names, offsets and scalars.
    let state = trainer.training_state();
    std::fs::write(dir.path().join("params.bin"), f32_bytes(&state.params)).unwrap();
    std::fs::write(
        dir.path().join("optimizer.bin"),
        f32_bytes(&state.optimizer.values),
    )
    .unwrap();
    let mut manifest = String::new();
    for span in trainer.layout().spans() {
        manifest += &format!(
            "param {} {} {} {:?}\n",
            span.name, span.offset, span.len, span.shape
        );
    }
    let hex: String = digest.0.iter().map(|b| format!("{b:02x}")).collect();
    manifest += &format!(
        "round 9\nstep {}\noptimizer_step {}\nmesh_digest {hex}\n",
        state.step, state.optimizer.step
    );
    std::fs::write(dir.path().join("expected.txt"), manifest).unwrap();

    let output = Command::new(python())
        .arg(repo_root().join("scripts/check_checkpoint.py"))
        .arg(&path)
        .output()
        .unwrap();
    println!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "scripts/check_checkpoint.py rejected the checkpoint"
    );
}
