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

/// Earlier state buffers the synthetic workload tracks for reuse (the protocol retains 3
/// snapshots).
const STATE_POOL_MAX: usize = 6;

/// The synthetic workload: parameters and a fixed direction, built once so that computing a
/// "gradient" costs nothing and a benchmark measures the all-reduce alone.
#[derive(Debug)]
pub struct Synthetic {
    /// The newest state (little-endian f32 bytes, as snapshots take them).
    newest: Arc<[u8]>,
    /// Earlier states' buffers, written again once the node has let go of them; more than
    /// [`STATE_POOL_MAX`] and the ones still held are dropped from the list.
    spare: Vec<Arc<[u8]>>,
    floats: usize,
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
            Self::Synthetic(s) => Arc::clone(s.state()),
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
        let optimizer =
            OptimizerConfig::sgd(spec.learning_rate, 0.9, false, 0.0).map_err(KernelError::from)?;
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
            newest: Arc::from(vec![0u8; floats * 4]),
            spare: Vec::new(),
            floats,
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

    fn state(&self) -> &Arc<[u8]> {
        &self.newest
    }

    /// One SGD step (rate 0.01) from the newest state into an earlier state's buffer the node
    /// no longer holds (the protocol keeps the last few snapshots), so that in steady state a
    /// round allocates nothing: a fresh 64 MiB buffer per round costs its page faults and
    /// zeroing every time.
    fn apply(&mut self, average: &[f32]) -> Result<Arc<[u8]>, WorkloadError> {
        if average.len() != self.floats {
            return Err(WorkloadError::WrongSize {
                what: "committed average",
                expected: self.floats,
                got: average.len(),
            });
        }
        let mut next = match self.spare.iter().position(|s| Arc::strong_count(s) == 1) {
            Some(i) => self.spare.swap_remove(i),
            None => std::iter::repeat_n(0, self.floats * 4).collect(),
        };
        let out = Arc::get_mut(&mut next)
            .map(|b| &mut b[..])
            .unwrap_or_default();
        sgd_step(&self.newest, out, average);
        self.spare.push(std::mem::replace(&mut self.newest, next));
        if self.spare.len() > STATE_POOL_MAX {
            // Buffers held elsewhere are the holders' to free: stop tracking them.
            self.spare.retain(|s| Arc::strong_count(s) == 1);
        }
        Ok(Arc::clone(&self.newest))
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), WorkloadError> {
        if bytes.len() != self.floats * 4 {
            return Err(WorkloadError::WrongSize {
                what: "synced state",
                expected: self.floats * 4,
                got: bytes.len(),
            });
        }
        self.newest = Arc::from(bytes);
        Ok(())
    }
}

/// `out = prev − 0.01 · average` over little-endian `f32` bytes: as floats in place where the
/// machine is little-endian and both buffers are 4-aligned (`Arc` buffers are), else bytewise.
fn sgd_step(prev: &[u8], out: &mut [u8], average: &[f32]) {
    let aligned = |b: &[u8]| bytemuck::try_cast_slice::<u8, f32>(b).is_ok();
    if cfg!(target_endian = "little") && aligned(prev) && aligned(out) {
        let prev: &[f32] = bytemuck::cast_slice(prev);
        let out: &mut [f32] = bytemuck::cast_slice_mut(out);
        for ((o, p), g) in out.iter_mut().zip(prev).zip(average) {
            *o = p - 0.01 * g;
        }
        return;
    }
    for ((o, p), g) in out
        .chunks_exact_mut(4)
        .zip(prev.chunks_exact(4))
        .zip(average)
    {
        let p = f32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        o.copy_from_slice(&(p - 0.01 * g).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn synthetic_steps_reuse_the_released_buffer_and_keep_held_states_intact() {
        let mut w = Synthetic::new(3);
        let first = w.apply(&[1.0, 2.0, -4.0]).expect("right size");
        assert_eq!(floats(&first), [-0.01, -0.02, 0.04]);
        // `first` is still held (a snapshot): the next step must not write into it.
        let second = w.apply(&[1.0, 0.0, 0.0]).expect("right size");
        assert_eq!(floats(&first), [-0.01, -0.02, 0.04]);
        assert_eq!(floats(&second), [-0.02, -0.02, 0.04]);
        drop(first);
        let before = Arc::as_ptr(w.state());
        let third = w.apply(&[0.0, 0.0, 1.0]).expect("right size");
        assert_eq!(floats(&third), [-0.02, -0.02, 0.03]);
        assert_ne!(Arc::as_ptr(&third), before, "written into the other buffer");
        assert!(w.apply(&[1.0]).is_err());
        w.load(&second).expect("right size");
        assert_eq!(floats(w.state()), [-0.02, -0.02, 0.04]);
    }
}
