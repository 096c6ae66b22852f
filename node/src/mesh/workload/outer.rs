//! Local steps between synchronisations: DiLoCo and the federated strategies as the mesh's outer
//! loop.
//!
//! A round's "gradient" is a client message: each peer runs an inner phase of up to H local
//! optimizer steps from the global parameters θ and sends what it moved, Δ = local − θ (SCAFFOLD
//! adds its control-variate delta). The mesh all-reduces the messages with the usual codecs and
//! digest vote, and every peer applies the same [`Strategy::server_step`] to the agreed mean, so θ
//! and the strategy's server state (outer momentum, FedOpt's moments, SCAFFOLD's global control
//! variate) stay bit-identical on every peer: they are the synced, digested state. The inner
//! optimizer and the client's own state stay on the peer and in its checkpoint.
//!
//! The inner optimizer steps Δ itself, not the local parameters, with the model's parameters
//! refreshed to θ + Δ before each forward pass: the message is then exactly what the optimizer
//! moved, not `(θ + Δ) − θ` with its extra rounding. So one inner SGD step of rate 1 sends exactly
//! −g, and with an outer SGD of rate η and momentum μ the mesh reproduces synchronous SGD (η, μ)
//! bit for bit (a test says so). AdamW's decoupled weight decay of the local parameters is applied
//! to θ + Δ by hand, the rest of AdamW by the ground crate's optimizer on Δ.

use std::time::{Duration, Instant};

use gradmesh_federated::strategy::{ClientState, ServerState, Strategy, StrategyConfig};
use gradmesh_kernels::{
    Checkpoint, KernelError, LocalState, Optimizer, OptimizerConfig, OptimizerState, Trainer,
    TrainingState,
};

use super::source::Source;
use super::{Computed, WorkloadError};

/// DiLoCo's inner AdamW β₁ and β₂ (as OpenDiLoCo and INTELLECT-1: 0.9, 0.95) and ε.
const ADAMW_BETAS: (f32, f32) = (0.9, 0.95);
const ADAMW_EPS: f32 = 1e-8;

/// How a peer trains between synchronisations.
#[derive(Debug, Clone)]
pub struct OuterSpec {
    /// Inner steps per round (H ≥ 1).
    pub inner_steps: u32,
    /// Wall-clock budget of an inner phase: a peer stops early when it is spent (after at least
    /// one step), so a slow peer takes fewer steps and weighs less in the mean.
    pub inner_time: Option<Duration>,
    /// The local optimizer.
    pub inner: InnerOptimizer,
    /// The outer step every peer applies to the mean message.
    pub strategy: StrategyConfig,
}

/// The inner (local) optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InnerOptimizer {
    /// AdamW (β 0.9/0.95, ε 1e-8), decoupled weight decay.
    AdamW {
        /// Learning rate.
        lr: f32,
        /// Decoupled weight decay.
        weight_decay: f32,
    },
    /// Plain SGD without momentum.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
}

impl InnerOptimizer {
    /// The ground crate's optimizer for Δ (weight decay 0: decay applies to θ + Δ, by hand),
    /// the learning rate, and the decoupled decay.
    fn parts(self) -> Result<(OptimizerConfig, f32, f32), WorkloadError> {
        let (config, lr, decay) = match self {
            Self::AdamW { lr, weight_decay } => (
                OptimizerConfig::adamw(lr, ADAMW_BETAS.0, ADAMW_BETAS.1, ADAMW_EPS, 0.0),
                lr,
                weight_decay,
            ),
            Self::Sgd { lr } => (OptimizerConfig::sgd(lr, 0.0, false, 0.0), lr, 0.0),
        };
        if !(decay >= 0.0 && decay.is_finite()) {
            return Err(WorkloadError::Config("the weight decay must be ≥ 0"));
        }
        Ok((config.map_err(KernelError::from)?, lr, decay))
    }
}

/// The outer loop's state on one peer.
#[derive(Debug)]
pub(super) struct Outer {
    inner_steps: u32,
    inner_time: Option<Duration>,
    inner: Optimizer,
    inner_lr: f32,
    inner_decay: f32,
    strategy: Box<dyn Strategy>,
    client: ClientState,
    /// θ: the global parameters every peer holds.
    global: Vec<f32>,
    /// Δ: what the inner phase moved the local parameters by.
    delta: Vec<f32>,
    /// θ + Δ, the parameters the model runs with.
    local: Vec<f32>,
    grad: Vec<f32>,
    /// Outer steps applied to θ.
    rounds: u64,
}

impl Outer {
    /// Starts from the trainer's (seeded) parameters as θ.
    pub(super) fn new(spec: &OuterSpec, trainer: &Trainer) -> Result<Self, WorkloadError> {
        if spec.inner_steps == 0 {
            return Err(WorkloadError::Config("--inner-steps must be ≥ 1"));
        }
        let (config, inner_lr, inner_decay) = spec.inner.parts()?;
        let global = trainer.parameters().to_vec();
        let n = global.len();
        Ok(Self {
            inner_steps: spec.inner_steps,
            inner_time: spec.inner_time,
            inner: Optimizer::new(config, n),
            inner_lr,
            inner_decay,
            strategy: spec.strategy.build()?,
            client: ClientState::default(),
            delta: vec![0.0; n],
            local: global.clone(),
            grad: vec![0.0; n],
            global,
            rounds: 0,
        })
    }

    /// One inner phase from θ; its message, weighted by the samples behind it.
    pub(super) fn compute(
        &mut self,
        trainer: &mut Trainer,
        source: &mut Source,
        step: &mut u64,
    ) -> Result<Computed, WorkloadError> {
        self.delta.fill(0.0);
        self.local.copy_from_slice(&self.global);
        trainer.set_parameters(&self.local)?;
        let started = Instant::now();
        let (mut steps, mut samples, mut loss_sum) = (0_u32, 0_usize, 0.0_f64);
        while steps < self.inner_steps
            && !(steps > 0 && self.inner_time.is_some_and(|t| started.elapsed() >= t))
        {
            let batch = source.batch(*step)?;
            *step += 1;
            loss_sum += f64::from(trainer.compute_gradients(&batch)?);
            self.grad.copy_from_slice(trainer.gradients());
            self.strategy.correct_gradient(
                &self.global,
                &self.client,
                &self.local,
                &mut self.grad,
            )?;
            if self.inner_decay > 0.0 {
                // AdamW's decoupled decay of the local parameters θ + Δ, written on Δ.
                let rate = self.inner_lr * self.inner_decay;
                for (d, &g) in self.delta.iter_mut().zip(&self.global) {
                    *d -= rate * (g + *d);
                }
            }
            self.inner
                .step(&mut self.delta, &self.grad)
                .map_err(KernelError::from)?;
            for ((l, &g), &d) in self.local.iter_mut().zip(&self.global).zip(&self.delta) {
                *l = g + d;
            }
            trainer.set_parameters(&self.local)?;
            steps += 1;
            samples += batch.len();
        }
        let message =
            self.strategy
                .client_message(&mut self.client, &self.delta, steps, self.inner_lr)?;
        let weight = self.strategy.aggregation_weight(samples).round();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // Clamped first.
        let weight = weight.clamp(1.0, f64::from(u32::MAX)) as u32;
        #[allow(clippy::cast_possible_truncation)] // A mean of f32 losses.
        let loss = (loss_sum / f64::from(steps.max(1))) as f32;
        Ok(Computed {
            weight,
            gradient: message.into(),
            loss,
            inner_steps: steps,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The outer step with the mesh's mean message; the model runs with the new θ.
    pub(super) fn apply(
        &mut self,
        trainer: &mut Trainer,
        average: &[f32],
    ) -> Result<(), WorkloadError> {
        let expected = self.strategy.message_len(self.global.len());
        if average.len() != expected {
            return Err(WorkloadError::WrongSize {
                what: "committed average",
                expected,
                got: average.len(),
            });
        }
        // Every peer that contributed is in the mean; the mesh has no notion of clients that
        // were not sampled, so SCAFFOLD's |S|/N is 1.
        self.strategy.server_step(&mut self.global, average, 1.0)?;
        self.rounds += 1;
        self.delta.fill(0.0);
        self.local.copy_from_slice(&self.global);
        Ok(trainer.set_parameters(&self.global)?)
    }

    /// θ and the strategy's server state: what the mesh syncs and digests.
    pub(super) fn training_state(&self) -> TrainingState {
        let ServerState { step, values } = self.strategy.server_state(self.global.len());
        TrainingState {
            step: self.rounds,
            params: self.global.clone(),
            optimizer: OptimizerState { step, values },
        }
    }

    /// What stays on this peer: the inner optimizer and the client's own state.
    pub(super) fn local_state(&self) -> LocalState {
        LocalState {
            inner: self.inner.state().clone(),
            client_control: self.client.control().to_vec(),
        }
    }

    /// Replaces θ and the server state with a synced state (bytes of
    /// [`TrainingState::to_bytes`]); the inner optimizer starts afresh. Nothing changes on error.
    pub(super) fn load(
        &mut self,
        trainer: &mut Trainer,
        bytes: &[u8],
    ) -> Result<(), WorkloadError> {
        let n = self.global.len();
        let state = TrainingState::from_bytes(bytes, n, self.strategy.server_state_len(n))?;
        self.restore(trainer, state)?;
        self.inner = Optimizer::new(*self.inner.config(), n);
        Ok(())
    }

    /// Restores a checkpoint: θ and the server state, and this peer's own state when it has it.
    pub(super) fn resume(
        &mut self,
        trainer: &mut Trainer,
        checkpoint: &Checkpoint,
    ) -> Result<(), WorkloadError> {
        let n = self.global.len();
        let server_len = self.strategy.server_state_len(n);
        if checkpoint.state.optimizer.values.len() != server_len {
            return Err(WorkloadError::WrongSize {
                what: "checkpoint's strategy state",
                expected: server_len,
                got: checkpoint.state.optimizer.values.len(),
            });
        }
        let mut inner = Optimizer::new(*self.inner.config(), n);
        let mut client = ClientState::default();
        if let Some(local) = &checkpoint.local {
            inner
                .set_state(local.inner.clone(), n)
                .map_err(KernelError::from)?;
            if !local.client_control.is_empty() {
                if local.client_control.len() != n {
                    return Err(WorkloadError::WrongSize {
                        what: "checkpoint's client control variate",
                        expected: n,
                        got: local.client_control.len(),
                    });
                }
                client = ClientState::with_control(local.client_control.clone());
            }
        }
        self.restore(trainer, checkpoint.state.clone())?;
        self.inner = inner;
        self.client = client;
        Ok(())
    }

    fn restore(
        &mut self,
        trainer: &mut Trainer,
        state: TrainingState,
    ) -> Result<(), WorkloadError> {
        let TrainingState {
            step,
            params,
            optimizer,
        } = state;
        self.strategy.load_server_state(
            &params,
            ServerState {
                step: optimizer.step,
                values: optimizer.values,
            },
        )?;
        trainer.set_parameters(&params)?;
        self.global = params;
        self.local.copy_from_slice(&self.global);
        self.delta.fill(0.0);
        self.rounds = step;
        Ok(())
    }
}
