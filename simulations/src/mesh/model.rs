//! The synthetic model each simulated peer trains: a parameter vector, a gradient toward a
//! per-peer target, and a plain SGD step with the committed average (the same toy as the
//! protocol driver's shell), so committed rounds are real weighted means of real gradients.

use gradmesh_protocol::reduce::RoundResult;
use gradmesh_protocol::wire::f32_bytes;
use std::sync::Arc;

const LEARNING_RATE: f32 = 0.5;

/// One peer's parameters and the target its gradients pull toward.
#[derive(Debug, Clone)]
pub(crate) struct ToyModel {
    params: Vec<f32>,
    target: Vec<f32>,
    weight: u32,
}

/// The parameters every founder starts from.
pub(crate) fn initial_params(len: usize) -> Vec<f32> {
    (0..len).map(|k| ((k as f32) * 0.37).cos()).collect()
}

/// Serialized parameters: little-endian `f32`s.
pub(crate) fn params_bytes(params: &[f32]) -> Arc<[u8]> {
    Arc::from(f32_bytes(params).as_ref())
}

impl ToyModel {
    /// Node `index`'s model holding `params` (empty for a joiner until it loads a state).
    pub(crate) fn new(index: usize, params: Vec<f32>, len: usize) -> Self {
        let target = (0..len)
            .map(|k| ((index * 7 + k) as f32 * 0.11).sin() * 2.0)
            .collect();
        Self {
            params,
            target,
            weight: 16 + (index as u32 % 5) * 8,
        }
    }

    /// Samples behind each gradient (its weight in the mean).
    pub(crate) const fn weight(&self) -> u32 {
        self.weight
    }

    /// The gradient of `½‖params − target‖²`.
    pub(crate) fn gradient(&self) -> Arc<[f32]> {
        self.params
            .iter()
            .zip(&self.target)
            .map(|(p, t)| p - t)
            .collect()
    }

    /// One SGD step with the committed average; returns the new serialized state.
    pub(crate) fn apply(&mut self, result: &RoundResult) -> Arc<[u8]> {
        for (p, g) in self.params.iter_mut().zip(result.data.iter()) {
            *p -= LEARNING_RATE * g;
        }
        params_bytes(&self.params)
    }

    /// Replaces the parameters with a loaded state.
    pub(crate) fn load(&mut self, bytes: &[u8]) {
        self.params = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
    }

    /// Current parameters.
    pub(crate) fn params(&self) -> &[f32] {
        &self.params
    }
}
