//! Local training of the virtual clients, time-multiplexed on one LibTorch MLP: each client loads
//! the round's model, runs its local SGD steps on its own samples (with the strategy's gradient
//! hook between backward and the step), and hands back the strategy's message.

use gradmesh_federated::strategy::{ClientState, Strategy, StrategyError};
use gradmesh_kernels::{Dataset, Device, KernelError, ModelKind, OptimizerConfig, Trainer};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use thiserror::Error;

/// A training failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    /// LibTorch, data or optimizer error.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The strategy refused a buffer.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
}

/// One MLP shared by every virtual client, plus the digits data.
#[derive(Debug)]
pub(crate) struct LocalTrainer {
    trainer: Trainer,
    data: Dataset,
    batch_size: usize,
    lr: f32,
}

/// Test-set figures of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Evaluation {
    pub(crate) accuracy: f64,
    pub(crate) loss: f32,
}

impl LocalTrainer {
    /// The MLP (64→128→10) with weights from `seed`; plain SGD of rate `lr` (no momentum, so
    /// no optimizer state passes from one virtual client to the next).
    pub(crate) fn new(
        data: &Path,
        seed: u64,
        batch_size: usize,
        lr: f32,
    ) -> Result<Self, TrainError> {
        let device = Device::Cpu;
        let data = Dataset::load_digits(data, device)?;
        let sgd = OptimizerConfig::sgd(lr, 0.0, false, 0.0).map_err(KernelError::from)?;
        let trainer = Trainer::new(ModelKind::Mlp, sgd, device, seed)?;
        Ok(Self {
            trainer,
            data,
            batch_size,
            lr,
        })
    }

    /// The initial model.
    pub(crate) fn parameters(&self) -> &[f32] {
        self.trainer.parameters()
    }

    /// Trains one client for `steps` steps from `global` on `indices` and returns its message.
    /// Mini-batches walk a fresh shuffle of the client's samples each epoch.
    pub(crate) fn train_client(
        &mut self,
        strategy: &dyn Strategy,
        global: &[f32],
        state: &mut ClientState,
        indices: &[usize],
        steps: u32,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f32>, TrainError> {
        self.trainer.set_parameters(global)?;
        let mut order: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let batch = self.batch_size.min(order.len()).max(1);
        let mut pos = order.len();
        let mut local = vec![0.0_f32; global.len()];
        for _ in 0..steps {
            if pos + batch > order.len() {
                shuffle(&mut order, rng);
                pos = 0;
            }
            let b = self.data.train_batch(&order[pos..pos + batch])?;
            pos += batch;
            self.trainer.compute_gradients(&b)?;
            local.copy_from_slice(self.trainer.parameters());
            strategy.correct_gradient(global, state, &local, self.trainer.gradients_mut())?;
            self.trainer.apply_gradients()?;
        }
        let delta = gradmesh_federated::strategy::delta(global, self.trainer.parameters())?;
        Ok(strategy.client_message(state, &delta, steps, self.lr)?)
    }

    /// Test accuracy and mean loss of `params`.
    pub(crate) fn evaluate(&mut self, params: &[f32]) -> Result<Evaluation, TrainError> {
        self.trainer.set_parameters(params)?;
        let test = self.data.test()?;
        Ok(Evaluation {
            accuracy: self.trainer.evaluate(&test)?,
            loss: self.trainer.loss(&test)?,
        })
    }
}

fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}

/// Reads the digits training labels (int64) for the partitioner.
pub(crate) fn read_train_labels(path: &Path) -> Result<Vec<u32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let y = file
        .tensor("train_y")
        .map_err(|e| format!("{}: train_y: {e}", path.display()))?;
    if y.dtype() != safetensors::Dtype::I64 {
        return Err(format!(
            "{}: train_y is {:?}, expected I64",
            path.display(),
            y.dtype()
        ));
    }
    y.data()
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0_u8; 8];
            b.copy_from_slice(c);
            u32::try_from(i64::from_le_bytes(b))
                .map_err(|_| format!("{}: negative label", path.display()))
        })
        .collect()
}
