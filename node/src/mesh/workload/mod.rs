//! What a node trains: a model through LibTorch (the digits MLP or CNN, the byte-level
//! transformer on a text corpus, or a user's TorchScript module on the user's tensors), or a
//! synthetic vector for all-reduce benchmarks. Each exposes
//! the operations the protocol asks of a shell: compute a contribution on the current state, apply
//! a committed average, load a synced state, serialize the state.
//!
//! A model trains one of two ways:
//! - **synchronously**: a contribution is one batch's gradient, and every peer applies SGD
//!   (momentum 0.9) to the mesh's mean gradient;
//! - **with local steps** ([`OuterSpec`]: DiLoCo and the federated strategies): a contribution is
//!   what H inner steps moved the parameters by, and every peer applies the strategy's outer step
//!   to the mesh's mean (see [`outer`]).

mod outer;
mod source;
mod synthetic;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gradmesh_federated::strategy::StrategyError;
use gradmesh_kernels::{
    Checkpoint, Device, FlatLayout, KernelError, MeshDigest, ModelKind, OptimizerConfig,
    ScriptSpec, Trainer,
};

pub use outer::{InnerOptimizer, OuterSpec};

use outer::Outer;

use super::stop::Interrupt;
use source::Source;
use synthetic::Synthetic;

/// Why a workload operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// LibTorch, data or checkpoint trouble.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The outer strategy refused a step or a state.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// A state or average of the wrong size for this model.
    #[error("{what} has {got} values, the model has {expected}")]
    WrongSize {
        /// Which input.
        what: &'static str,
        /// Model size.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// `--shard` names no shard of the training set.
    #[error("shard {index} of {count} does not exist (need index < count, count ≥ 1)")]
    BadShard {
        /// Index.
        index: usize,
        /// Count.
        count: usize,
    },
    /// A setting out of range; the message names the flag and its rule.
    #[error("{0}")]
    Config(&'static str),
    /// A user's model failed on its data at start-up.
    #[error("the model does not take this data ({data}): {reason}")]
    DataMismatch {
        /// The data's example shapes.
        data: String,
        /// LibTorch's first line.
        reason: String,
    },
}

/// How to build a workload.
#[derive(Debug, Clone)]
pub enum WorkloadSpec {
    /// Train a model on one shard of its data.
    Model(ModelSpec),
    /// A vector of `floats` values with a deterministic pseudo-gradient: the all-reduce benchmark.
    Synthetic {
        /// Vector length.
        floats: usize,
    },
}

/// Which model a node trains.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelChoice {
    /// One of the kernels' networks, initialized from the seed.
    Builtin(ModelKind),
    /// A user's TorchScript module, with its weights.
    Script {
        /// The file and the loss.
        spec: ScriptSpec,
        /// Tokens per window when the data is a token stream.
        context: Option<usize>,
    },
}

impl From<ModelKind> for ModelChoice {
    fn from(kind: ModelKind) -> Self {
        Self::Builtin(kind)
    }
}

/// A model workload's parameters.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// MLP or CNN (digits), a transformer (text), or a user's module.
    pub model: ModelChoice,
    /// The digits safetensors file (`train_x/train_y/test_x/test_y`), for a transformer a UTF-8
    /// file or directory (its last 10 % is validation), for a user's module a safetensors file
    /// of examples or of tokens (`train_tokens/test_tokens`).
    pub data: PathBuf,
    /// LibTorch device.
    pub device: Device,
    /// Examples (or windows) per local step.
    pub batch_size: usize,
    /// `(index, count)`: this node trains on shard `index` of `count`.
    pub shard: (usize, usize),
    /// Seed of the initial weights: every node of a mesh must use the same one.
    pub model_seed: u64,
    /// Seed of this node's batch order.
    pub data_seed: u64,
    /// Synchronous SGD or local steps.
    pub training: Training,
}

/// How a model trains across the mesh.
#[derive(Debug, Clone)]
pub enum Training {
    /// One all-reduce per step; every peer applies SGD (momentum 0.9) at this rate.
    Sync {
        /// SGD learning rate.
        learning_rate: f32,
        /// Wall-clock budget of one contribution: the node accumulates the gradients of batch
        /// after batch until it is spent (at least one batch) and contributes their mean,
        /// weighted by the examples behind it. A slow node then contributes fewer examples
        /// every round instead of missing rounds. `None`: one batch.
        compute_time: Option<std::time::Duration>,
    },
    /// Local steps between synchronisations (DiLoCo, federated strategies).
    Outer(OuterSpec),
}

/// A computed contribution.
#[derive(Debug, Clone)]
pub struct Computed {
    /// Its weight in the mesh's mean (samples behind it, or the strategy's weight).
    pub weight: u32,
    /// The flat gradient, or an outer strategy's message.
    pub gradient: Arc<[f32]>,
    /// Mean training loss of the batches behind it (0 for the synthetic workload).
    pub loss: f32,
    /// Local optimizer steps behind it (0 when synchronous: the mesh takes the step).
    pub inner_steps: u32,
    /// Seconds it took to compute.
    pub seconds: f64,
}

/// Held-out figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Fraction of test examples (or validation tokens) predicted correctly; `None` for a
    /// regression (mean squared error) model.
    pub accuracy: Option<f64>,
    /// Mean cross-entropy (nats per example, or per token).
    pub loss: f32,
}

/// A built workload.
#[derive(Debug)]
pub enum Workload {
    /// A model through LibTorch.
    Model(Box<ModelWorkload>),
    /// Synthetic vector.
    Synthetic(Synthetic),
}

/// A model, its shard and batch order, and how it trains.
#[derive(Debug)]
pub struct ModelWorkload {
    trainer: Trainer,
    source: Source,
    /// What peers must share beyond their flags (a user's module only; see
    /// [`Workload::identity`]).
    identity: Vec<(&'static str, String)>,
    /// Local batches drawn so far (the samplers' step).
    step: u64,
    outer: Option<Outer>,
    /// Synchronous training's budget per contribution ([`Training::Sync`]).
    compute_time: Option<std::time::Duration>,
}

impl Workload {
    /// Builds the workload (loads data, initializes the model from its seed).
    ///
    /// # Errors
    /// [`WorkloadError`] for unreadable data, an unavailable device, a bad shard or setting.
    pub fn build(spec: &WorkloadSpec) -> Result<Self, WorkloadError> {
        match spec {
            WorkloadSpec::Model(m) => Ok(Self::Model(Box::new(ModelWorkload::build(m)?))),
            WorkloadSpec::Synthetic { floats } => Ok(Self::Synthetic(Synthetic::new(*floats))),
        }
    }

    /// A contribution on the current state: one batch's gradient, or an inner phase's message.
    ///
    /// # Errors
    /// LibTorch failures.
    pub fn compute(&mut self) -> Result<Computed, WorkloadError> {
        match self {
            Self::Model(m) => m.compute(),
            Self::Synthetic(s) => Ok(s.compute()),
        }
    }

    /// The flag that ends an inner phase at its next step when the node stops (a fresh,
    /// unused one for workloads without inner phases).
    #[must_use]
    pub fn interrupt(&self) -> Interrupt {
        match self {
            Self::Model(m) => m.outer.as_ref().map(Outer::interrupt).unwrap_or_default(),
            Self::Synthetic(_) => Interrupt::default(),
        }
    }

    /// One inner step of the next phase while the mesh reduces the last message (overlap):
    /// whether one was taken. `false` once the phase is complete, and always for synchronous
    /// and synthetic workloads, which have no inner phase.
    ///
    /// # Errors
    /// LibTorch failures.
    pub fn inner_step(&mut self) -> Result<bool, WorkloadError> {
        match self {
            Self::Model(m) => match &mut m.outer {
                Some(outer) => outer.inner_step(&mut m.trainer, &mut m.source, &mut m.step),
                None => Ok(false),
            },
            Self::Synthetic(_) => Ok(false),
        }
    }

    /// Applies a committed average (an optimizer or outer step) and returns the new serialized
    /// state.
    ///
    /// # Errors
    /// [`WorkloadError::WrongSize`] if the average does not fit the model.
    pub fn apply(&mut self, average: &[f32]) -> Result<Arc<[u8]>, WorkloadError> {
        match self {
            Self::Model(m) => m.apply(average),
            Self::Synthetic(s) => s.apply(average),
        }
    }

    /// Replaces the state with a synced one.
    ///
    /// # Errors
    /// A state of the wrong size or format; nothing changes then.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), WorkloadError> {
        match self {
            Self::Model(m) => match &mut m.outer {
                Some(outer) => outer.load(&mut m.trainer, bytes),
                None => Ok(m.trainer.restore_bytes(bytes)?),
            },
            Self::Synthetic(s) => s.load(bytes),
        }
    }

    /// The serialized state.
    #[must_use]
    pub fn state_bytes(&self) -> Arc<[u8]> {
        match self {
            Self::Model(m) => Arc::from(match &m.outer {
                Some(outer) => outer.training_state().to_bytes(),
                None => m.trainer.state_bytes(),
            }),
            Self::Synthetic(s) => Arc::clone(s.state()),
        }
    }

    /// Accuracy and loss on held-out data (`None` for the synthetic workload).
    ///
    /// # Errors
    /// LibTorch failures.
    pub fn evaluate(&mut self) -> Result<Option<Evaluation>, WorkloadError> {
        match self {
            Self::Model(m) => match &mut m.outer {
                // The global model, not this node's local one (they differ while an inner
                // phase runs ahead).
                Some(outer) => {
                    outer.show_global(&mut m.trainer)?;
                    let evaluation = m.source.evaluate(&m.trainer);
                    outer.show_local(&mut m.trainer)?;
                    Ok(Some(evaluation?))
                }
                None => Ok(Some(m.source.evaluate(&m.trainer)?)),
            },
            Self::Synthetic(_) => Ok(None),
        }
    }

    /// What every peer of a mesh must share and no flag says, as descriptor words: for a user's
    /// module its architecture (`model=torchscript:<digest of names and shapes>`), initial
    /// `weights`, `data` shapes and `loss`. Empty for built-in models and the synthetic vector,
    /// which their flags describe.
    #[must_use]
    pub fn identity(&self) -> &[(&'static str, String)] {
        match self {
            Self::Model(m) => &m.identity,
            Self::Synthetic(_) => &[],
        }
    }

    /// blake3 of the TorchScript file the model came from (hex), for a user's module.
    #[must_use]
    pub fn model_file_digest(&self) -> Option<String> {
        match self {
            Self::Model(m) => m
                .trainer
                .file_digest()
                .map(|d| blake3::Hash::from(d).to_hex().to_string()),
            Self::Synthetic(_) => None,
        }
    }

    /// The state as a checkpoint (models only) and the layout to write it with.
    #[must_use]
    pub fn checkpoint(&self, round: u64, digest: [u8; 32]) -> Option<(Checkpoint, FlatLayout)> {
        let Self::Model(m) = self else {
            return None;
        };
        let mut checkpoint = m.trainer.checkpoint(round, MeshDigest(digest));
        if let Some(outer) = &m.outer {
            checkpoint.state = outer.training_state();
            checkpoint.local = Some(outer.local_state());
        }
        Some((checkpoint, m.trainer.layout().clone()))
    }

    /// Loads the checkpoint at `path` (models only), restores it and returns it.
    ///
    /// # Errors
    /// An unreadable or foreign checkpoint.
    pub fn resume(&mut self, path: &Path) -> Result<Option<Checkpoint>, WorkloadError> {
        let Self::Model(m) = self else {
            return Ok(None);
        };
        let checkpoint = gradmesh_kernels::load_checkpoint(path, m.trainer.layout())?;
        match &mut m.outer {
            Some(outer) => outer.resume(&mut m.trainer, &checkpoint)?,
            None => m.trainer.restore(checkpoint.state.clone())?,
        }
        Ok(Some(checkpoint))
    }
}

impl ModelWorkload {
    fn build(spec: &ModelSpec) -> Result<Self, WorkloadError> {
        let (index, count) = spec.shard;
        if count == 0 || index >= count {
            return Err(WorkloadError::BadShard { index, count });
        }
        if spec.batch_size == 0 {
            return Err(WorkloadError::Config("--batch-size must be ≥ 1"));
        }
        // Synchronous training steps with the trainer's own optimizer; under local steps the
        // outer loop steps Δ with its own and the trainer's stays unused.
        let optimizer = match &spec.training {
            Training::Sync { learning_rate, .. } => {
                OptimizerConfig::sgd(*learning_rate, 0.9, false, 0.0)
            }
            Training::Outer(_) => OptimizerConfig::sgd(1.0, 0.0, false, 0.0),
        }
        .map_err(KernelError::from)?;
        let (trainer, source) = Self::model_and_data(spec, optimizer)?;
        let outer = match &spec.training {
            Training::Sync { .. } => None,
            Training::Outer(outer) => Some(Outer::new(outer, &trainer)?),
        };
        let identity = match &spec.model {
            ModelChoice::Builtin(_) => Vec::new(),
            ModelChoice::Script { spec: script, .. } => script_identity(script, &trainer, &source),
        };
        let compute_time = match &spec.training {
            Training::Sync { compute_time, .. } => *compute_time,
            Training::Outer(_) => None,
        };
        Ok(Self {
            trainer,
            source,
            identity,
            step: 0,
            outer,
            compute_time,
        })
    }

    /// The model and this node's shard of its data; a user's module must take that data.
    fn model_and_data(
        spec: &ModelSpec,
        optimizer: OptimizerConfig,
    ) -> Result<(Trainer, Source), WorkloadError> {
        Ok(match &spec.model {
            ModelChoice::Builtin(kind) => {
                let trainer = Trainer::new(*kind, optimizer, spec.device, spec.model_seed)?;
                let source = match kind {
                    ModelKind::Transformer(shape) => Source::text(
                        &spec.data,
                        spec.device,
                        spec.shard,
                        spec.batch_size,
                        shape.context(),
                        spec.data_seed,
                    )?,
                    _ => Source::digits(
                        &spec.data,
                        spec.device,
                        spec.shard,
                        spec.batch_size,
                        spec.data_seed,
                    )?,
                };
                (trainer, source)
            }
            ModelChoice::Script {
                spec: script,
                context,
            } => {
                let trainer = Trainer::from_script(script, optimizer, spec.device)?;
                let source = Source::tensors(
                    &spec.data,
                    spec.device,
                    spec.shard,
                    spec.batch_size,
                    *context,
                    spec.data_seed,
                )?;
                // A model that does not take this data fails here, in one line, rather than at
                // its first step in the mesh.
                if let Err(e) = source.evaluate(&trainer) {
                    return Err(match e {
                        WorkloadError::Kernel(KernelError::ModelRefused(reason)) => {
                            WorkloadError::DataMismatch {
                                data: source.describe(),
                                reason,
                            }
                        }
                        other => other,
                    });
                }
                (trainer, source)
            }
        })
    }

    fn compute(&mut self) -> Result<Computed, WorkloadError> {
        if let Some(outer) = &mut self.outer {
            return outer.compute(&mut self.trainer, &mut self.source, &mut self.step);
        }
        let started = std::time::Instant::now();
        let batch = self.source.batch(self.step)?;
        self.step += 1;
        let loss = self.trainer.compute_gradients(&batch)?;
        let mut examples = batch.len();
        let spent = |budget: std::time::Duration| started.elapsed() >= budget;
        if self.compute_time.is_none_or(spent) {
            return Ok(Computed {
                weight: u32::try_from(examples).unwrap_or(u32::MAX),
                gradient: Arc::from(self.trainer.gradients()),
                loss,
                inner_steps: 0,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        // More batches while the budget lasts: sums weighted by examples, then their mean.
        #[allow(clippy::cast_precision_loss)] // Batch sizes are far below 2^24.
        let weigh = |n: usize| n as f32;
        let mut sum: Vec<f32> = self
            .trainer
            .gradients()
            .iter()
            .map(|g| g * weigh(examples))
            .collect();
        let mut loss_sum = loss * weigh(examples);
        while !self.compute_time.is_none_or(spent) {
            let batch = self.source.batch(self.step)?;
            self.step += 1;
            let loss = self.trainer.compute_gradients(&batch)?;
            let n = weigh(batch.len());
            for (s, g) in sum.iter_mut().zip(self.trainer.gradients()) {
                *s += g * n;
            }
            loss_sum += loss * n;
            examples += batch.len();
        }
        let total = weigh(examples);
        for s in &mut sum {
            *s /= total;
        }
        Ok(Computed {
            weight: u32::try_from(examples).unwrap_or(u32::MAX),
            gradient: Arc::from(sum),
            loss: loss_sum / total,
            inner_steps: 0,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    fn apply(&mut self, average: &[f32]) -> Result<Arc<[u8]>, WorkloadError> {
        if let Some(outer) = &mut self.outer {
            outer.apply(&mut self.trainer, average)?;
            return Ok(Arc::from(outer.training_state().to_bytes()));
        }
        let grads = self.trainer.gradients_mut();
        if grads.len() != average.len() {
            return Err(WorkloadError::WrongSize {
                what: "committed average",
                expected: grads.len(),
                got: average.len(),
            });
        }
        grads.copy_from_slice(average);
        self.trainer.apply_gradients()?;
        Ok(Arc::from(self.trainer.state_bytes()))
    }
}

/// A user's module's descriptor words (see [`Workload::identity`]).
fn script_identity(
    script: &ScriptSpec,
    trainer: &Trainer,
    source: &Source,
) -> Vec<(&'static str, String)> {
    let weights: Vec<u8> = trainer
        .parameters()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    vec![
        (
            "model",
            format!("torchscript:{}", short_hex(&trainer.layout().digest())),
        ),
        ("weights", short_hex(blake3::hash(&weights).as_bytes())),
        ("data", source.describe()),
        ("loss", script.loss.to_string()),
    ]
}

/// The first 16 hex digits of a digest: enough to tell two models apart in a one-line error.
fn short_hex(digest: &[u8; 32]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
