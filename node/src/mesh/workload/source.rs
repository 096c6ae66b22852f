//! Where a node's batches come from: its shard of examples (the digits, or a user's tensors), or
//! its shard of a token stream (a text corpus's bytes, or a user's token ids). Both are functions
//! of `(seed, step)`, so a node restarted at the same step draws the same batches.

use std::path::Path;

use gradmesh_kernels::{
    Batch, BatchSampler, CharCorpus, Dataset, Device, Loss, TensorData, TokenWindows, Trainer,
};

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
    /// Examples: this shard's example indices, drawn in a seeded order.
    Examples {
        data: Dataset,
        shard: Vec<i64>,
        sampler: BatchSampler,
        batch: Vec<i64>,
    },
    /// Tokens: random windows of this shard of the stream's training split.
    Tokens {
        corpus: Box<dyn TokenWindows>,
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
        Self::examples(
            Dataset::load_digits(path, device)?,
            (index, count),
            batch_size,
            seed,
        )
    }

    /// Shard `index` of `count` of a user's safetensors file: examples, or a token stream in
    /// windows of `context` tokens.
    pub(super) fn tensors(
        path: &Path,
        device: Device,
        shard: (usize, usize),
        batch_size: usize,
        context: Option<usize>,
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        match TensorData::load(path, device)? {
            TensorData::Examples(data) => Self::examples(data, shard, batch_size, seed),
            TensorData::Tokens(corpus) => {
                let context = context.ok_or(WorkloadError::Config(
                    "a token-stream data file (train_tokens, test_tokens) needs --context, the \
                     tokens per training window",
                ))?;
                let corpus = corpus.shard(shard.0, shard.1, context)?;
                Self::windows(Box::new(corpus), batch_size, context, seed)
            }
        }
    }

    fn examples(
        data: Dataset,
        (index, count): (usize, usize),
        batch_size: usize,
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        let shard: Vec<i64> = (index..data.train_len())
            .step_by(count)
            .filter_map(|i| i64::try_from(i).ok())
            .collect();
        let batch_size = batch_size.min(shard.len());
        let sampler = BatchSampler::new(shard.len(), batch_size, seed)?;
        Ok(Self::Examples {
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
        Self::windows(Box::new(corpus), batch_size, context, seed)
    }

    fn windows(
        corpus: Box<dyn TokenWindows>,
        batch_size: usize,
        context: usize,
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        // The evaluation must find at least one validation window.
        corpus.valid_batch(1, context)?;
        Ok(Self::Tokens {
            corpus,
            batch_size,
            context,
            seed,
        })
    }

    /// What one example looks like, as peers compare it: `x f32[1,8,8], y i64[]`, or
    /// `tokens, context 64`.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Examples { data, .. } => data.example_shapes(),
            Self::Tokens { context, .. } => format!("tokens, context {context}"),
        }
    }

    /// The batch of local step `step`.
    pub(super) fn batch(&mut self, step: u64) -> Result<Batch, WorkloadError> {
        match self {
            Self::Examples {
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
            Self::Tokens {
                corpus,
                batch_size,
                context,
                seed,
            } => Ok(corpus.train_batch(step, *batch_size, *context, *seed)?),
        }
    }

    /// Accuracy (per example, or per next token; none for a regression) and mean loss on the
    /// held-out data.
    pub(super) fn evaluate(&self, trainer: &Trainer) -> Result<Evaluation, WorkloadError> {
        let held_out = match self {
            Self::Examples { data, .. } => data.test()?,
            Self::Tokens {
                corpus, context, ..
            } => {
                let windows = (corpus.valid_len() / (context + 1))
                    .saturating_sub(1)
                    .min(VALID_TOKENS / context)
                    .min(VALID_WINDOWS);
                corpus.valid_batch(windows.max(1), *context)?
            }
        };
        let accuracy = match trainer.loss_kind() {
            Loss::Mse => None,
            Loss::CrossEntropy => Some(trainer.evaluate(&held_out)?),
            // A module with a loss of its own may not return class scores: its accuracy is the
            // arg-max's when its output compares with the targets, and none otherwise.
            Loss::Module => trainer.evaluate(&held_out).ok(),
        };
        Ok(Evaluation {
            accuracy,
            loss: trainer.loss(&held_out)?,
        })
    }
}
