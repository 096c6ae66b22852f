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
use crate::mesh::stop::Interrupt;

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
    /// Δ: what the inner phase moved the local parameters by. The model runs with θ + Δ,
    /// held only in the trainer's own parameter buffer.
    delta: Vec<f32>,
    /// Outer steps applied to θ.
    rounds: u64,
    /// The inner phase under way, if one has begun.
    phase: Option<Phase>,
    /// Raised when the node stops: the phase under way ends at its next step.
    interrupt: Interrupt,
}

/// What an inner phase has done so far.
#[derive(Debug, Default)]
struct Phase {
    started: Option<Instant>,
    steps: u32,
    samples: usize,
    loss_sum: f64,
    /// Seconds inside inner steps (not waiting between them).
    seconds: f64,
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
            global,
            rounds: 0,
            phase: None,
            interrupt: Interrupt::default(),
        })
    }

    /// The flag that ends inner phases early when the node stops.
    pub(super) fn interrupt(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// Finishes the inner phase (H steps, or fewer when the time budget is spent) from θ + Δ and
    /// hands its message over, weighted by the samples behind it; Δ starts again from 0.
    pub(super) fn compute(
        &mut self,
        trainer: &mut Trainer,
        source: &mut Source,
        step: &mut u64,
    ) -> Result<Computed, WorkloadError> {
        while self.inner_step(trainer, source, step)? {}
        self.take_message(trainer)
    }

    /// One inner step, unless the phase is complete; whether one was taken. Between a message
    /// handed over and the round's outer step, steps taken here (overlap) move Δ from the old
    /// θ, and [`Outer::apply`] carries them over to the new θ: the one-step-delayed outer update
    /// of Streaming DiLoCo.
    pub(super) fn inner_step(
        &mut self,
        trainer: &mut Trainer,
        source: &mut Source,
        step: &mut u64,
    ) -> Result<bool, WorkloadError> {
        let phase = self.phase.get_or_insert_with(Phase::default);
        let started = *phase.started.get_or_insert_with(Instant::now);
        let spent =
            self.inner_time.is_some_and(|t| started.elapsed() >= t) || self.interrupt.raised();
        if phase.steps >= self.inner_steps || (phase.steps > 0 && spent) {
            return Ok(false);
        }
        let steps = phase.steps;
        let clock = Instant::now();
        let batch = source.batch(*step)?;
        *step += 1;
        let loss = trainer.compute_gradients(&batch)?;
        let (local, grad) = trainer.parameters_and_gradients_mut();
        self.strategy
            .correct_gradient(&self.global, &self.client, local, grad)?;
        if self.inner_decay > 0.0 {
            // AdamW's decoupled decay of the local parameters θ + Δ, written on Δ.
            let rate = self.inner_lr * self.inner_decay;
            for (d, &g) in self.delta.iter_mut().zip(&self.global) {
                *d -= rate * (g + *d);
            }
        }
        self.inner
            .step(&mut self.delta, trainer.gradients())
            .map_err(KernelError::from)?;
        self.refresh_local(trainer)?;
        let phase = self.phase.get_or_insert_with(Phase::default);
        phase.steps = steps + 1;
        phase.samples += batch.len();
        phase.loss_sum += f64::from(loss);
        phase.seconds += clock.elapsed().as_secs_f64();
        Ok(true)
    }

    /// The message of the phase so far; Δ and the phase start again from θ.
    fn take_message(&mut self, trainer: &mut Trainer) -> Result<Computed, WorkloadError> {
        let phase = self.phase.take().unwrap_or_default();
        let message = self.strategy.client_message(
            &mut self.client,
            &self.delta,
            phase.steps,
            self.inner_lr,
        )?;
        let weight = self.strategy.aggregation_weight(phase.samples).round();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // Clamped first.
        let weight = weight.clamp(1.0, f64::from(u32::MAX)) as u32;
        #[allow(clippy::cast_possible_truncation)] // A mean of f32 losses.
        let loss = (phase.loss_sum / f64::from(phase.steps.max(1))) as f32;
        self.delta.fill(0.0);
        self.refresh_local(trainer)?;
        Ok(Computed {
            weight,
            gradient: message.into(),
            loss,
            inner_steps: phase.steps,
            seconds: phase.seconds,
        })
    }

    /// The model runs with θ (to evaluate the global model).
    pub(super) fn show_global(&self, trainer: &mut Trainer) -> Result<(), WorkloadError> {
        Ok(trainer.set_parameters(&self.global)?)
    }

    /// The model runs with θ + Δ again.
    pub(super) fn show_local(&self, trainer: &mut Trainer) -> Result<(), WorkloadError> {
        self.refresh_local(trainer)
    }

    /// The model runs with θ + Δ.
    fn refresh_local(&self, trainer: &mut Trainer) -> Result<(), WorkloadError> {
        Ok(trainer.set_parameters_with(|local| {
            for ((l, &g), &d) in local.iter_mut().zip(&self.global).zip(&self.delta) {
                *l = g + d;
            }
        })?)
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
        // Inner steps taken since the message was handed over (overlap) carry over to the new θ.
        self.refresh_local(trainer)
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
        self.global = params;
        self.delta.fill(0.0);
        self.phase = None;
        self.rounds = step;
        self.refresh_local(trainer)
    }
}
