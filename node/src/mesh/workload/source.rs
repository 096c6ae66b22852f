//! Where a node's batches come from: its shard of the digits, or its shard of a text corpus. Both
//! are functions of `(seed, step)`, so a node restarted at the same step draws the same batches.

use std::path::Path;

use gradmesh_kernels::{Batch, BatchSampler, CharCorpus, Dataset, Device, Trainer};

use super::{Evaluation, WorkloadError};

/// Validation windows a text evaluation reads at most (fewer when the split is short, or when
/// they would hold more than [`VALID_TOKENS`]): the same windows on every node, so their losses
/// compare.
const VALID_WINDOWS: usize = 64;

/// Validation tokens an evaluation reads at most, so a long context does not make every
/// commit's evaluation a long pass (the `base` model's context of 512 reads 16 windows).
const VALID_TOKENS: usize = 8192;

/// A node's training shard and the held-out data it evaluates on.
#[derive(Debug)]
pub(super) enum Source {
    /// Digits: this shard's example indices, drawn in a seeded order.
    Digits {
        data: Dataset,
        shard: Vec<i64>,
        sampler: BatchSampler,
        batch: Vec<i64>,
    },
    /// Text: random windows of this shard of the corpus's training split.
    Text {
        corpus: CharCorpus,
        batch_size: usize,
        context: usize,
        seed: u64,
    },
}

impl Source {
    /// Shard `index` of `count` of the digits in `path`, `batch_size` examples per batch.
    pub(super) fn digits(
        path: &Path,
        device: Device,
        (index, count): (usize, usize),
        batch_size: usize,
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        let data = Dataset::load_digits(path, device)?;
        let shard: Vec<i64> = (index..data.train_len())
            .step_by(count)
            .filter_map(|i| i64::try_from(i).ok())
            .collect();
        let batch_size = batch_size.min(shard.len());
        let sampler = BatchSampler::new(shard.len(), batch_size, seed)?;
        Ok(Self::Digits {
            data,
            shard,
            sampler,
            batch: Vec::with_capacity(batch_size),
        })
    }

    /// Shard `index` of `count` of the text at `path` (a file or a directory), windows of
    /// `context` tokens.
    pub(super) fn text(
        path: &Path,
        device: Device,
        (index, count): (usize, usize),
        batch_size: usize,
        context: usize,
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        let corpus = CharCorpus::load(path, device)?.shard(index, count, context)?;
        // The evaluation must find at least one validation window.
        corpus.valid_batch(1, context)?;
        Ok(Self::Text {
            corpus,
            batch_size,
            context,
            seed,
        })
    }

    /// The batch of local step `step`.
    pub(super) fn batch(&mut self, step: u64) -> Result<Batch, WorkloadError> {
        match self {
            Self::Digits {
                data,
                shard,
                sampler,
                batch,
            } => {
                batch.clear();
                batch.extend(
                    sampler
                        .indices(step)
                        .iter()
                        .filter_map(|&i| usize::try_from(i).ok().and_then(|i| shard.get(i))),
                );
                Ok(data.train_batch(batch)?)
            }
            Self::Text {
                corpus,
                batch_size,
                context,
                seed,
            } => Ok(corpus.train_batch(step, *batch_size, *context, *seed)?),
        }
    }

    /// Accuracy (per example, or per next token) and mean cross-entropy on the held-out data.
    pub(super) fn evaluate(&self, trainer: &Trainer) -> Result<Evaluation, WorkloadError> {
        let held_out = match self {
            Self::Digits { data, .. } => data.test()?,
            Self::Text {
                corpus, context, ..
            } => {
                let windows = (corpus.valid_len() / (context + 1))
                    .saturating_sub(1)
                    .min(VALID_TOKENS / context)
                    .min(VALID_WINDOWS);
                corpus.valid_batch(windows.max(1), *context)?
            }
        };
        Ok(Evaluation {
            accuracy: trainer.evaluate(&held_out)?,
            loss: trainer.loss(&held_out)?,
        })
    }
}
