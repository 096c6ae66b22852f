//! What a node trains: the digits model through LibTorch, or a synthetic vector for all-reduce
//! benchmarks. Both expose the same four operations the protocol asks of a shell: compute a
//! gradient on the current state, apply a committed average, load a synced state, serialize the
//! state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gradmesh_kernels::{
    BatchSampler, Checkpoint, Dataset, Device, FlatLayout, KernelError, MeshDigest, ModelKind,
    OptimizerConfig, Trainer,
};
use gradmesh_protocol::wire::f32_bytes;

/// Why a workload operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// LibTorch, data or checkpoint trouble.
    #[error(transparent)]
    Kernel(#[from] KernelError),
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
}

/// How to build a workload.
#[derive(Debug, Clone)]
pub enum WorkloadSpec {
    /// Train a digits model on one shard of `data/digits.safetensors`.
    Digits(DigitsSpec),
    /// A vector of `floats` values with a deterministic pseudo-gradient: the all-reduce benchmark.
    Synthetic {
        /// Vector length.
        floats: usize,
    },
}

/// The digits workload's parameters.
#[derive(Debug, Clone)]
pub struct DigitsSpec {
    /// The safetensors file with `train_x/train_y/test_x/test_y`.
    pub data: PathBuf,
    /// MLP or CNN.
    pub model: ModelKind,
    /// LibTorch device.
    pub device: Device,
    /// Examples per local step (the gradient's weight).
    pub batch_size: usize,
    /// `(index, count)`: this node trains on examples `index, index + count, …`.
    pub shard: (usize, usize),
    /// SGD learning rate (momentum 0.9).
    pub learning_rate: f32,
    /// Seed of the initial weights: every node of a mesh must use the same one.
    pub model_seed: u64,
    /// Seed of this node's batch order.
    pub data_seed: u64,
}

/// A computed gradient.
#[derive(Debug, Clone)]
pub struct Computed {
    /// Samples behind it.
    pub weight: u32,
    /// The flat gradient.
    pub gradient: Arc<[f32]>,
    /// Training loss of the batch (0 for the synthetic workload).
    pub loss: f32,
}

/// Test-set figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Fraction of test examples classified correctly.
    pub accuracy: f64,
    /// Mean test cross-entropy.
    pub loss: f32,
}

/// A built workload.
#[derive(Debug)]
pub enum Workload {
    /// Digits through LibTorch.
    Digits(Box<Digits>),
    /// Synthetic vector.
    Synthetic(Synthetic),
}

/// The digits model, its shard and batch order.
#[derive(Debug)]
pub struct Digits {
    trainer: Trainer,
    data: Dataset,
    shard: Vec<i64>,
    sampler: BatchSampler,
    batch: Vec<i64>,
    step: u64,
}

/// The synthetic workload: parameters and a fixed direction, built once so that computing a
/// "gradient" costs nothing and a benchmark measures the all-reduce alone.
#[derive(Debug)]
pub struct Synthetic {
    params: Vec<f32>,
    direction: Arc<[f32]>,
}

impl Workload {
    /// Builds the workload (loads data, initializes the model from its seed).
    ///
    /// # Errors
    /// [`WorkloadError`] for unreadable data, an unavailable device or a bad shard.
    pub fn build(spec: &WorkloadSpec) -> Result<Self, WorkloadError> {
        match spec {
            WorkloadSpec::Digits(d) => Ok(Self::Digits(Box::new(Digits::build(d)?))),
            WorkloadSpec::Synthetic { floats } => Ok(Self::Synthetic(Synthetic::new(*floats))),
        }
    }

    /// The gradient of one local batch on the current state.
    ///
    /// # Errors
    /// LibTorch failures.
    pub fn compute(&mut self) -> Result<Computed, WorkloadError> {
        match self {
            Self::Digits(d) => d.compute(),
            Self::Synthetic(s) => Ok(s.compute()),
        }
    }

    /// Applies a committed average (one optimizer step) and returns the new serialized state.
    ///
    /// # Errors
    /// [`WorkloadError::WrongSize`] if the average does not fit the model.
    pub fn apply(&mut self, average: &[f32]) -> Result<Arc<[u8]>, WorkloadError> {
        match self {
            Self::Digits(d) => d.apply(average),
            Self::Synthetic(s) => s.apply(average),
        }
    }

    /// Replaces the state with a synced one.
    ///
    /// # Errors
    /// A state of the wrong size or format.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), WorkloadError> {
        match self {
            Self::Digits(d) => Ok(d.trainer.restore_bytes(bytes)?),
            Self::Synthetic(s) => s.load(bytes),
        }
    }

    /// The serialized state.
    #[must_use]
    pub fn state_bytes(&self) -> Arc<[u8]> {
        match self {
            Self::Digits(d) => Arc::from(d.trainer.state_bytes()),
            Self::Synthetic(s) => Arc::from(f32_bytes(&s.params).as_ref()),
        }
    }

    /// Accuracy and loss on the test set (`None` for the synthetic workload).
    ///
    /// # Errors
    /// LibTorch failures.
    pub fn evaluate(&self) -> Result<Option<Evaluation>, WorkloadError> {
        match self {
            Self::Digits(d) => {
                let test = d.data.test()?;
                Ok(Some(Evaluation {
                    accuracy: d.trainer.evaluate(&test)?,
                    loss: d.trainer.loss(&test)?,
                }))
            }
            Self::Synthetic(_) => Ok(None),
        }
    }

    /// The state as a checkpoint (digits only) and the layout to write it with.
    #[must_use]
    pub fn checkpoint(&self, round: u64, digest: [u8; 32]) -> Option<(Checkpoint, FlatLayout)> {
        match self {
            Self::Digits(d) => Some((
                d.trainer.checkpoint(round, MeshDigest(digest)),
                d.trainer.layout().clone(),
            )),
            Self::Synthetic(_) => None,
        }
    }

    /// Loads the checkpoint at `path` (digits only), restores it and returns it.
    ///
    /// # Errors
    /// An unreadable or foreign checkpoint.
    pub fn resume(&mut self, path: &Path) -> Result<Option<Checkpoint>, WorkloadError> {
        match self {
            Self::Digits(d) => {
                let checkpoint = gradmesh_kernels::load_checkpoint(path, d.trainer.layout())?;
                d.trainer.restore(checkpoint.state.clone())?;
                Ok(Some(checkpoint))
            }
            Self::Synthetic(_) => Ok(None),
        }
    }
}

impl Digits {
    fn build(spec: &DigitsSpec) -> Result<Self, WorkloadError> {
        let (index, count) = spec.shard;
        if count == 0 || index >= count {
            return Err(WorkloadError::BadShard { index, count });
        }
        let optimizer = OptimizerConfig::sgd(spec.learning_rate, 0.9, false, 0.0)?;
        let trainer = Trainer::new(spec.model, optimizer, spec.device, spec.model_seed)?;
        let data = Dataset::load_digits(&spec.data, spec.device)?;
        let shard: Vec<i64> = (index..data.train_len())
            .step_by(count)
            .filter_map(|i| i64::try_from(i).ok())
            .collect();
        let batch_size = spec.batch_size.min(shard.len());
        let sampler = BatchSampler::new(shard.len(), batch_size, spec.data_seed)?;
        Ok(Self {
            trainer,
            data,
            shard,
            sampler,
            batch: Vec::with_capacity(batch_size),
            step: 0,
        })
    }

    fn compute(&mut self) -> Result<Computed, WorkloadError> {
        self.batch.clear();
        let shard = &self.shard;
        self.batch.extend(
            self.sampler
                .indices(self.step)
                .iter()
                .filter_map(|&i| usize::try_from(i).ok().and_then(|i| shard.get(i))),
        );
        self.step += 1;
        let batch = self.data.train_batch(&self.batch)?;
        let loss = self.trainer.compute_gradients(&batch)?;
        Ok(Computed {
            weight: u32::try_from(self.batch.len()).unwrap_or(u32::MAX),
            gradient: Arc::from(self.trainer.gradients()),
            loss,
        })
    }

    fn apply(&mut self, average: &[f32]) -> Result<Arc<[u8]>, WorkloadError> {
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

impl Synthetic {
    fn new(floats: usize) -> Self {
        #[allow(clippy::cast_precision_loss)] // Values only need to vary, not be exact.
        let direction = (0..floats)
            .map(|k| ((k % 1024) as f32 * 0.01).sin())
            .collect();
        Self {
            params: vec![0.0; floats],
            direction,
        }
    }

    fn compute(&self) -> Computed {
        Computed {
            weight: 1,
            gradient: Arc::clone(&self.direction),
            loss: 0.0,
        }
    }

    fn apply(&mut self, average: &[f32]) -> Result<Arc<[u8]>, WorkloadError> {
        if average.len() != self.params.len() {
            return Err(WorkloadError::WrongSize {
                what: "committed average",
                expected: self.params.len(),
                got: average.len(),
            });
        }
        // The state is written block by block right after the update, from cache, into one
        // allocation (`repeat_n` has an exact length).
        const BLOCK: usize = 16 * 1024;
        let mut state: Arc<[u8]> = std::iter::repeat_n(0, self.params.len() * 4).collect();
        let out = Arc::get_mut(&mut state)
            .map(|s| &mut s[..])
            .unwrap_or_default();
        let blocks = self.params.chunks_mut(BLOCK).zip(average.chunks(BLOCK));
        for ((params, average), out) in blocks.zip(out.chunks_mut(4 * BLOCK)) {
            for (p, g) in params.iter_mut().zip(average) {
                *p -= 0.01 * g;
            }
            out.copy_from_slice(&f32_bytes(params));
        }
        Ok(state)
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), WorkloadError> {
        if bytes.len() != self.params.len() * 4 {
            return Err(WorkloadError::WrongSize {
                what: "synced state",
                expected: self.params.len() * 4,
                got: bytes.len(),
            });
        }
        for (p, c) in self.params.iter_mut().zip(bytes.chunks_exact(4)) {
            *p = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }
}
