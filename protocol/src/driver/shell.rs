//! The driver's stand-in for a training shell: a parameter vector, a gradient toward a per-peer
//! target, and a plain SGD step.

use std::sync::Arc;

use crate::ids::PeerId;
use crate::peer::Peer;
use crate::reduce::RoundResult;
use crate::wire::{StateSummary, f32_bytes};

const LEARNING_RATE: f32 = 0.5;

/// One peer of the in-memory mesh and its toy model.
#[derive(Debug)]
pub struct Node {
    /// Index in the driver.
    pub index: usize,
    /// Peer id.
    pub id: PeerId,
    pub(super) peer: Option<Peer>,
    params: Vec<f32>,
    target: Vec<f32>,
    weight: u32,
    /// Factor applied to the gradient it sends: 1 for an honest peer (see [`super::Attack`]).
    pub(super) scale: f32,
    pub(super) timer_epoch: u64,
    pub(super) gradient_epoch: u64,
}

/// The parameters every founder starts from.
#[must_use]
pub(crate) fn initial_params(len: usize) -> Vec<f32> {
    (0..len).map(|k| ((k as f32) * 0.37).cos()).collect()
}

/// Serialized parameters: little-endian `f32`s.
#[must_use]
pub(crate) fn params_bytes(params: &[f32]) -> Arc<[u8]> {
    Arc::from(f32_bytes(params).as_ref())
}

impl Node {
    pub(super) fn new(index: usize, peer: Peer, params: Vec<f32>, len: usize) -> Self {
        let target = (0..len)
            .map(|k| ((index * 7 + k) as f32 * 0.11).sin() * 2.0)
            .collect();
        Self {
            index,
            id: peer.id(),
            peer: Some(peer),
            params,
            target,
            weight: 16 + (index as u32 % 5) * 8,
            scale: 1.0,
            timer_epoch: 0,
            gradient_epoch: 0,
        }
    }

    pub(super) fn next_timer_epoch(&mut self) -> u64 {
        self.timer_epoch += 1;
        self.timer_epoch
    }

    pub(super) fn next_gradient_epoch(&mut self) -> u64 {
        self.gradient_epoch += 1;
        self.gradient_epoch
    }

    /// The gradient of `½‖params − target‖²` (times the attack scale, 1 when honest), and this
    /// peer's weight.
    pub(super) fn gradient(&self) -> (u32, Arc<[f32]>) {
        let g = self
            .params
            .iter()
            .zip(&self.target)
            .map(|(p, t)| (p - t) * self.scale)
            .collect();
        (self.weight, g)
    }

    /// One SGD step with the committed average; returns the new serialized state.
    pub(super) fn apply(&mut self, result: &RoundResult) -> Arc<[u8]> {
        for (p, g) in self.params.iter_mut().zip(result.data.iter()) {
            *p -= LEARNING_RATE * g;
        }
        params_bytes(&self.params)
    }

    pub(super) fn load(&mut self, bytes: &[u8]) {
        self.params = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
    }

    /// Whether the peer is running.
    #[must_use]
    pub const fn is_alive(&self) -> bool {
        self.peer.is_some()
    }

    /// The state the peer holds, if alive and holding one.
    #[must_use]
    pub fn state(&self) -> Option<StateSummary> {
        self.peer.as_ref().and_then(Peer::state)
    }

    /// Whether the peer is alive and still waiting for the mesh's state.
    #[must_use]
    pub fn is_joining(&self) -> bool {
        self.peer.as_ref().is_some_and(Peer::is_joining)
    }

    /// Current parameters.
    #[must_use]
    pub fn params(&self) -> &[f32] {
        &self.params
    }
}
