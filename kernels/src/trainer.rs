//! [`Trainer`]: one model, its flat parameter and gradient buffers, and a flat-buffer optimizer.
//! This is the surface the node's trainer actor calls.

use std::sync::{Mutex, PoisonError};

use tch::{Kind, Reduction, Tensor, nn::VarStore};

use crate::{
    Optimizer, OptimizerConfig,
    checkpoint::{Checkpoint, MeshDigest},
    data::Batch,
    device::Device,
    error::Result,
    flat::{FlatLayout, FlatParams},
    model::{Loss, ModelKind, Network, ScriptNet, ScriptSpec},
    state::TrainingState,
};

/// `tch::manual_seed` sets a process-global generator: hold this while seeding and initializing so
/// two trainers built on different threads (tests, several local peers) cannot interleave draws.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// A model plus its training state. The flat `f32` parameter vector is the master copy: the
/// optimizer updates it in Rust and the model's tensors are overwritten from it, so peers that
/// apply the same averaged gradient hold bit-identical parameters.
#[derive(Debug)]
pub struct Trainer {
    net: Box<dyn Network>,
    loss: Loss,
    /// blake3 of the model file, for a user's TorchScript module.
    file_digest: Option<[u8; 32]>,
    flat: FlatParams,
    params: Vec<f32>,
    grads: Vec<f32>,
    optimizer: Optimizer,
    step: u64,
    device: Device,
    // Owns the variables the network and `flat` hold handles to; declared last so it drops last.
    _vars: VarStore,
}

impl Trainer {
    /// Builds `kind` with weights drawn from LibTorch's generator seeded with `seed` (always on the
    /// CPU, then moved, so a CUDA peer starts from the same weights as a CPU peer).
    pub fn new(
        kind: ModelKind,
        optimizer: OptimizerConfig,
        device: Device,
        seed: u64,
    ) -> Result<Self> {
        device.check_available()?;
        let (mut vars, net) = {
            let _lock = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            tch::manual_seed(i64::from_le_bytes(seed.to_le_bytes()));
            let vars = VarStore::new(tch::Device::Cpu);
            let net = kind.build(&vars.root());
            (vars, net)
        };
        vars.set_device(device.tch());
        let flat = FlatParams::new(&vars);
        Self::assemble(net, Loss::CrossEntropy, None, flat, optimizer, device, vars)
    }

    /// Loads a user's TorchScript module (see [`ScriptSpec`]): its weights are the file's, so
    /// every peer loading the same file starts from the same parameters.
    pub fn from_script(
        spec: &ScriptSpec,
        optimizer: OptimizerConfig,
        device: Device,
    ) -> Result<Self> {
        device.check_available()?;
        let loaded = ScriptNet::load(&spec.path, device.tch())?;
        let flat = FlatParams::from_named(loaded.parameters);
        let vars = VarStore::new(device.tch());
        Self::assemble(
            Box::new(loaded.net),
            spec.loss,
            Some(loaded.file_digest),
            flat,
            optimizer,
            device,
            vars,
        )
    }

    fn assemble(
        net: Box<dyn Network>,
        loss: Loss,
        file_digest: Option<[u8; 32]>,
        flat: FlatParams,
        optimizer: OptimizerConfig,
        device: Device,
        vars: VarStore,
    ) -> Result<Self> {
        let n = flat.layout().len();
        let mut params = vec![0.0; n];
        flat.gather_params(&mut params)?;
        let optimizer = Optimizer::new(optimizer, n);
        Ok(Self {
            net,
            loss,
            file_digest,
            flat,
            params,
            grads: vec![0.0; n],
            optimizer,
            step: 0,
            device,
            _vars: vars,
        })
    }

    /// blake3 of the TorchScript file this model was loaded from (`None` for built-in models).
    #[must_use]
    pub fn file_digest(&self) -> Option<[u8; 32]> {
        self.file_digest
    }

    /// The loss this model trains on.
    #[must_use]
    pub fn loss_kind(&self) -> Loss {
        self.loss
    }

    /// Order and shapes of the flat buffers.
    #[must_use]
    pub fn layout(&self) -> &FlatLayout {
        self.flat.layout()
    }

    /// The device the model runs on.
    #[must_use]
    pub fn device(&self) -> Device {
        self.device
    }

    /// Optimizer steps applied so far.
    #[must_use]
    pub fn step(&self) -> u64 {
        self.step
    }

    fn loss_tensor(&self, batch: &Batch) -> Result<Tensor> {
        if self.loss == Loss::Module {
            return self.net.module_loss(&batch.x, &batch.y);
        }
        let output = self.net.forward(&batch.x)?;
        let refused = |e: tch::TchError| crate::KernelError::refused(&e);
        if self.loss == Loss::Mse {
            let targets = batch.y.f_to_kind(output.kind())?;
            return output
                .f_mse_loss(&targets, Reduction::Mean)
                .map_err(refused);
        }
        let classes = output.size().last().copied().unwrap_or(1);
        // Same op as `torch.nn.functional.cross_entropy` on the flattened logits and targets
        // (mean over examples, no ignored index).
        let targets = batch.y.f_reshape([-1])?;
        output
            .f_reshape([-1, classes])
            .and_then(|logits| {
                logits.f_cross_entropy_loss(&targets, None::<Tensor>, Reduction::Mean, -100, 0.0)
            })
            .map_err(refused)
    }

    /// Forward and backward on `batch`; the mean cross-entropy's gradient lands in
    /// [`Trainer::gradients`]. Returns the loss. Parameters do not change.
    pub fn compute_gradients(&mut self, batch: &Batch) -> Result<f32> {
        self.net.set_training(true)?;
        self.flat.zero_grads();
        let loss = self.loss_tensor(batch)?;
        loss.f_backward()?;
        self.flat.gather_grads(&mut self.grads)?;
        #[allow(clippy::cast_possible_truncation)] // The loss is an f32 tensor read as f64.
        Ok(loss.f_double_value(&[])? as f32)
    }

    /// The flat gradient of the last [`Trainer::compute_gradients`].
    #[must_use]
    pub fn gradients(&self) -> &[f32] {
        &self.grads
    }

    /// The flat gradient, to be replaced in place by the mesh average before
    /// [`Trainer::apply_gradients`].
    pub fn gradients_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// Writes the flat gradient into the parameters' `.grad()` tensors (for LibTorch-side
    /// consumers; our optimizers read the flat buffer directly).
    pub fn scatter_gradients(&mut self) -> Result<()> {
        self.flat.scatter_grads(&self.grads)
    }

    /// One optimizer update with the current flat gradient, then the model's tensors are
    /// refreshed from the updated flat parameters.
    pub fn apply_gradients(&mut self) -> Result<()> {
        self.optimizer.step(&mut self.params, &self.grads)?;
        self.flat.scatter_params(&self.params)?;
        self.step += 1;
        Ok(())
    }

    /// [`Trainer::compute_gradients`] then [`Trainer::apply_gradients`] (a single-peer step).
    pub fn train_step(&mut self, batch: &Batch) -> Result<f32> {
        let loss = self.compute_gradients(batch)?;
        self.apply_gradients()?;
        Ok(loss)
    }

    /// Mean cross-entropy on `batch` without touching gradients.
    pub fn loss(&self, batch: &Batch) -> Result<f32> {
        self.net.set_training(false)?;
        let _guard = tch::no_grad_guard();
        #[allow(clippy::cast_possible_truncation)]
        Ok(self.loss_tensor(batch)?.f_double_value(&[])? as f32)
    }

    /// Fraction of examples (or tokens) whose arg-max prediction equals the target.
    pub fn evaluate(&self, batch: &Batch) -> Result<f64> {
        self.net.set_training(false)?;
        let _guard = tch::no_grad_guard();
        let predicted = self.net.forward(&batch.x)?.f_argmax(-1, false)?;
        let correct = predicted
            .f_eq_tensor(&batch.y)?
            .f_to_kind(Kind::Float)?
            .f_mean(Kind::Float)?;
        Ok(correct.f_double_value(&[])?)
    }

    /// The flat parameters (master copy).
    #[must_use]
    pub fn parameters(&self) -> &[f32] {
        &self.params
    }

    /// Replaces the parameters (a DiLoCo round start, or a synced state).
    pub fn set_parameters(&mut self, params: &[f32]) -> Result<()> {
        self.flat.layout().check("parameters", params.len())?;
        self.params.copy_from_slice(params);
        self.flat.scatter_params(&self.params)
    }

    /// Rewrites the parameters in place with `fill` (which sees the current ones), then refreshes
    /// the model's tensors: no second parameter buffer for callers that derive them (DiLoCo's
    /// θ + Δ).
    pub fn set_parameters_with(&mut self, fill: impl FnOnce(&mut [f32])) -> Result<()> {
        fill(&mut self.params);
        self.flat.scatter_params(&self.params)
    }

    /// The parameters and, to correct in place, the last gradient.
    pub fn parameters_and_gradients_mut(&mut self) -> (&[f32], &mut [f32]) {
        (&self.params, &mut self.grads)
    }

    /// The optimizer (its config and flat state).
    #[must_use]
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// A copy of parameters, optimizer state and step.
    #[must_use]
    pub fn training_state(&self) -> TrainingState {
        TrainingState {
            step: self.step,
            params: self.params.clone(),
            optimizer: self.optimizer.state().clone(),
        }
    }

    /// Restores parameters, optimizer state and step; nothing changes if a length is wrong.
    pub fn restore(&mut self, state: TrainingState) -> Result<()> {
        self.flat.layout().check("parameters", state.params.len())?;
        self.optimizer
            .set_state(state.optimizer, state.params.len())?;
        self.step = state.step;
        self.set_parameters(&state.params)
    }

    /// [`Trainer::training_state`] encoded for state sync (deterministic bytes).
    #[must_use]
    pub fn state_bytes(&self) -> Vec<u8> {
        self.training_state().to_bytes()
    }

    /// Restores from [`Trainer::state_bytes`] of a peer running the same model and optimizer.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let n = self.params.len();
        let state = TrainingState::from_bytes(bytes, n, self.optimizer.config().state_len(n))?;
        self.restore(state)
    }

    /// The state as a checkpoint for `round` of the mesh with digest `mesh_digest` (with an
    /// empty committee; the node fills in the round's contributors).
    #[must_use]
    pub fn checkpoint(&self, round: u64, mesh_digest: MeshDigest) -> Checkpoint {
        Checkpoint {
            round,
            mesh_digest,
            state: self.training_state(),
            committee: Vec::new(),
            local: None,
        }
    }
}

/// Sets LibTorch's intra-op thread count (process-global). Tests and benchmarks pin it so results
/// and timings do not depend on the machine's core count.
pub fn set_torch_threads(threads: usize) {
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX).max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainer_can_move_to_a_worker_thread() {
        // The node runs LibTorch work on a SyncArbiter thread, so the trainer must be Send.
        fn assert_send<T: Send>() {}
        assert_send::<Trainer>();
    }
}
