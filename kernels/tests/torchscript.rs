//! A user's TorchScript modules (`scripts/export_model.py`: a small GPT and a small ResNet) train
//! in LibTorch through our trainer exactly as in PyTorch: the same loss and gradients on one
//! batch, the same parameters after 20 SGD steps, and a checkpoint that PyTorch loads into the
//! eager module with `load_state_dict(strict=True)` and that gives the same loss. Bad files are
//! refused with one-line errors.

mod common;

use std::{collections::HashMap, path::Path, process::Command};

use common::{python, relative_error, repo_root};
use gradmesh_kernels::{
    Batch, Device, KernelError, Loss, MeshDigest, OptimizerConfig, SCRIPT_BYTES_MAX, ScriptSpec,
    Trainer, set_torch_threads, write_checkpoint,
};
use tch::Tensor;

const STEPS: usize = 20;

fn export_model(args: &[&str]) {
    let status = Command::new(python())
        .arg(repo_root().join("scripts/export_model.py"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/export_model.py {args:?} failed");
}

/// Exports the example modules and data into `dir` (a short token stream: the test reads 20
/// batches of it).
fn export(dir: &Path) {
    let digits = repo_root().join("data/digits.safetensors");
    let corpus = repo_root().join("data/corpus.txt");
    export_model(&[
        "export",
        dir.to_str().unwrap(),
        "--digits",
        digits.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--corpus-bytes",
        "200000",
    ]);
}

fn reference(dir: &Path, model: &str, data: &str, loss: Loss) -> HashMap<String, Tensor> {
    let out = dir.join(format!("{model}_ref.safetensors"));
    export_model(&[
        "reference",
        dir.join(format!("{model}.pt")).to_str().unwrap(),
        dir.join(format!("{data}.safetensors")).to_str().unwrap(),
        out.to_str().unwrap(),
        "--steps",
        &STEPS.to_string(),
        "--loss",
        &loss.to_string(),
    ]);
    Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect()
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
}

fn batch(reference: &HashMap<String, Tensor>, i: usize) -> Batch {
    let x = reference[&format!("batch.{i}.x")].shallow_clone();
    let y = reference[&format!("batch.{i}.y")].shallow_clone();
    Batch::new(x, y).unwrap()
}

/// Trains `model` as the reference did and compares every figure; then round-trips a
/// checkpoint through the eager PyTorch module.
fn trains_like_pytorch(model: &str, data: &str, loss: Loss) {
    set_torch_threads(1);
    let dir = tempfile::tempdir().unwrap();
    export(dir.path());
    let torch = reference(dir.path(), model, data, loss);
    let spec = ScriptSpec {
        path: dir.path().join(format!("{model}.pt")),
        loss,
    };
    let sgd = OptimizerConfig::sgd(0.05, 0.9, false, 0.0).unwrap();
    let mut trainer = Trainer::from_script(&spec, sgd, Device::Cpu).unwrap();

    let ours = trainer.compute_gradients(&batch(&torch, 0)).unwrap();
    let error = relative_error(&[ours], &floats(&torch["loss.0"]));
    println!("{model}: loss {ours}, relative error {error:e}");
    assert!(error <= 1e-5, "{model}: loss of batch 0");
    for span in trainer.layout().spans() {
        let expected = floats(&torch[&format!("grad.{}", span.name)]);
        let error = relative_error(&trainer.gradients()[span.range()], &expected);
        assert!(
            error <= 1e-5,
            "{model}: gradient of {} ({error:e})",
            span.name
        );
    }

    trainer.apply_gradients().unwrap();
    for i in 1..STEPS {
        trainer.train_step(&batch(&torch, i)).unwrap();
    }
    let mut worst = 0.0f32;
    for span in trainer.layout().spans() {
        let expected = floats(&torch[&format!("param.{}", span.name)]);
        let error = relative_error(&trainer.parameters()[span.range()], &expected);
        assert!(
            error <= 1e-4,
            "{model}: {} after {STEPS} steps ({error:e})",
            span.name
        );
        worst = worst.max(error);
    }
    println!("{model}: parameters after {STEPS} steps, worst relative error {worst:e}");
    let eval = trainer.loss(&batch(&torch, 0)).unwrap();
    let error = relative_error(&[eval], &floats(&torch["eval_loss"]));
    assert!(error <= 1e-4, "{model}: evaluation loss ({error:e})");

    let loaded = pytorch_loss_of_checkpoint(&trainer, dir.path(), model, loss);
    let error = relative_error(&[loaded], &[eval]);
    println!("{model}: PyTorch loss of our checkpoint {loaded}, ours {eval}");
    assert!(
        error <= 1e-5,
        "{model}: checkpoint loss in PyTorch ({error:e})"
    );
}

/// Writes `trainer`'s checkpoint and returns the loss PyTorch's eager module computes on batch 0
/// after `load_state_dict(strict=True)` of it.
fn pytorch_loss_of_checkpoint(trainer: &Trainer, dir: &Path, model: &str, loss: Loss) -> f32 {
    let checkpoint = dir.join("checkpoint.safetensors");
    let digest = MeshDigest([7; 32]);
    write_checkpoint(
        &checkpoint,
        &trainer.checkpoint(1, digest),
        trainer.layout(),
    )
    .unwrap();
    let output = Command::new(python())
        .arg(repo_root().join("scripts/export_model.py"))
        .args(["check-checkpoint", model])
        .arg(&checkpoint)
        .arg(dir.join(format!("{model}_ref.safetensors")))
        .args(["--loss", &loss.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "check-checkpoint: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).unwrap();
    let loaded: f32 = line
        .trim()
        .strip_prefix("{\"loss\": ")
        .and_then(|s| s.strip_suffix('}'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {line:?}"));
    loaded
}

#[test]
fn a_scripted_gpt_with_its_own_loss_trains_like_pytorch() {
    trains_like_pytorch("gpt", "tokens", Loss::Module);
}

#[test]
fn a_scripted_resnet_trains_like_pytorch() {
    trains_like_pytorch("cnn", "digits", Loss::CrossEntropy);
}

#[test]
fn bad_model_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let sgd = OptimizerConfig::sgd(0.1, 0.0, false, 0.0).unwrap();
    let load = |path: &Path| {
        let spec = ScriptSpec {
            path: path.to_path_buf(),
            loss: Loss::CrossEntropy,
        };
        Trainer::from_script(&spec, sgd, Device::Cpu)
    };

    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"PK\x03\x04 not a zip archive at all").unwrap();
    let error = load(&junk).unwrap_err();
    assert!(matches!(error, KernelError::Script { .. }), "{error}");
    assert!(
        error.to_string().contains("not a TorchScript module"),
        "{error}"
    );
    assert!(!error.to_string().contains('\n'), "{error}");

    // Sparse: the size is refused from the file's metadata before a byte is read.
    let huge = dir.path().join("huge.pt");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(SCRIPT_BYTES_MAX + 1)
        .unwrap();
    let error = load(&huge).unwrap_err();
    assert!(
        error.to_string().contains("bound for model files"),
        "{error}"
    );

    let error = load(&dir.path().join("absent.pt")).unwrap_err();
    assert!(matches!(error, KernelError::Io { .. }), "{error}");
}

#[test]
fn a_batch_the_module_cannot_take_is_an_error_not_a_panic() {
    set_torch_threads(1);
    let dir = tempfile::tempdir().unwrap();
    export(dir.path());
    let spec = ScriptSpec {
        path: dir.path().join("cnn.pt"),
        loss: Loss::CrossEntropy,
    };
    let sgd = OptimizerConfig::sgd(0.1, 0.0, false, 0.0).unwrap();
    let mut trainer = Trainer::from_script(&spec, sgd, Device::Cpu).unwrap();
    // Token windows where the CNN wants images.
    let tokens = Batch::new(
        Tensor::zeros([4, 64], (tch::Kind::Int64, tch::Device::Cpu)),
        Tensor::zeros([4, 64], (tch::Kind::Int64, tch::Device::Cpu)),
    )
    .unwrap();
    let error = trainer.compute_gradients(&tokens).unwrap_err();
    assert!(matches!(error, KernelError::ModelRefused(_)), "{error}");
    assert!(!error.to_string().contains('\n'), "{error}");
    // The module's own loss method, which the CNN lacks.
    let spec = ScriptSpec {
        loss: Loss::Module,
        ..spec
    };
    let sgd = OptimizerConfig::sgd(0.1, 0.0, false, 0.0).unwrap();
    let mut trainer = Trainer::from_script(&spec, sgd, Device::Cpu).unwrap();
    let images = Batch::new(
        Tensor::zeros([4, 1, 8, 8], (tch::Kind::Float, tch::Device::Cpu)),
        Tensor::zeros([4], (tch::Kind::Int64, tch::Device::Cpu)),
    )
    .unwrap();
    let error = trainer.compute_gradients(&images).unwrap_err();
    assert!(matches!(error, KernelError::ModelRefused(_)), "{error}");
    println!("{error}");
}
