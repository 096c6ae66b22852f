//! [`LocalMesh`]: data-parallel training of one model by several simulated peers in one process,
//! with every step's gradient averaged through a codec the way the mesh averages it
//! ([`CompressedMean`]). It measures what a codec costs in accuracy (`examples/codec_accuracy.rs`)
//! with the real models, optimizers and codecs and without any network.

use crate::{
    OptimizerConfig,
    codec::{CodecKind, CompressedMean, even_spans},
    data::{Batch, BatchSampler, Dataset, to_i64},
    device::Device,
    error::{KernelError, Result},
    model::ModelKind,
    trainer::Trainer,
};

/// `peers` simulated peers, each training on its own contiguous shard of the training set with
/// `batch_per_peer` examples per step; their gradients are averaged with a codec and every peer
/// applies the same average. All peers start from the same seeded weights, so they stay
/// bit-identical ([`LocalMesh::is_in_lockstep`]).
#[derive(Debug)]
pub struct LocalMesh {
    peers: Vec<Trainer>,
    samplers: Vec<BatchSampler>,
    shard_starts: Vec<i64>,
    mean: CompressedMean,
    indices: Vec<i64>,
    step: u64,
}

impl LocalMesh {
    /// Builds the peers on the CPU. Peer `p`'s batches come from a [`BatchSampler`] over its shard
    /// seeded with `seed + p` (wrapping); weights and codec state derive from `seed` too, so a run is a
    /// function of its arguments.
    ///
    /// Errors if `peers` is 0, if a shard of `train_len / peers` examples is smaller than
    /// `batch_per_peer`, or if the codec cannot split the model's parameters into `peers` spans.
    pub fn new(
        model: ModelKind,
        optimizer: OptimizerConfig,
        codec: CodecKind,
        train_len: usize,
        peers: usize,
        batch_per_peer: usize,
        seed: u64,
    ) -> Result<Self> {
        if peers == 0 {
            return Err(KernelError::InvalidConfig(
                "a local mesh needs at least one peer",
            ));
        }
        let shards = even_spans(train_len, peers);
        let samplers = (0..peers as u64)
            .zip(&shards)
            .map(|(rank, shard)| {
                BatchSampler::new(shard.len(), batch_per_peer, seed.wrapping_add(rank))
            })
            .collect::<Result<Vec<_>>>()?;
        let trainers = (0..peers)
            .map(|_| Trainer::new(model, optimizer, Device::Cpu, seed))
            .collect::<Result<Vec<_>>>()?;
        let vector_len = trainers.first().map_or(0, |t| t.layout().len());
        Ok(Self {
            peers: trainers,
            samplers,
            shard_starts: shards.iter().map(|s| to_i64(s.start)).collect(),
            mean: CompressedMean::new(codec, vector_len, peers, seed)?,
            indices: Vec::with_capacity(batch_per_peer),
            step: 0,
        })
    }

    /// One data-parallel step: every peer computes the gradient of its next batch, the gradients
    /// are averaged through the codec, and every peer applies the average. Returns the peers'
    /// mean training loss on their batches (before the update).
    pub fn step(&mut self, data: &Dataset) -> Result<f32> {
        let mut loss_sum = 0.0;
        for ((peer, sampler), &start) in self
            .peers
            .iter_mut()
            .zip(&mut self.samplers)
            .zip(&self.shard_starts)
        {
            self.indices.clear();
            self.indices
                .extend(sampler.indices(self.step).iter().map(|i| start + i));
            loss_sum += peer.compute_gradients(&data.train_batch(&self.indices)?)?;
        }
        let mut gradients: Vec<&mut [f32]> =
            self.peers.iter_mut().map(Trainer::gradients_mut).collect();
        self.mean.reduce(&mut gradients)?;
        for peer in &mut self.peers {
            peer.apply_gradients()?;
        }
        self.step += 1;
        #[allow(clippy::cast_precision_loss)] // Peer counts are far below 2^24.
        Ok(loss_sum / self.peers.len() as f32)
    }

    /// Steps taken.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Accuracy of the (shared) model on `batch`, evaluated on peer 0.
    pub fn evaluate(&self, batch: &Batch) -> Result<f64> {
        match self.peers.first() {
            Some(peer) => peer.evaluate(batch),
            None => Err(KernelError::InvalidConfig(
                "a local mesh needs at least one peer",
            )),
        }
    }

    /// Whether every peer holds bit-identical parameters, as the mesh requires.
    #[must_use]
    pub fn is_in_lockstep(&self) -> bool {
        self.peers
            .windows(2)
            .all(|pair| pair[0].parameters() == pair[1].parameters())
    }

    /// The most bytes any peer sends per step (reduce-scatter plus all-gather).
    #[must_use]
    pub fn bytes_sent_per_step_max(&self) -> usize {
        (0..self.peers.len())
            .filter_map(|peer| self.mean.bytes_sent_per_step(peer))
            .max()
            .unwrap_or(0)
    }

    /// The codec the gradients go through.
    #[must_use]
    pub fn codec(&self) -> CodecKind {
        self.mean.kind()
    }
}
