//! DiLoCo's outer loop: each peer runs `H` inner AdamW steps from the shared start, the
//! pseudo-gradient `start − end` is averaged across peers, and an outer Nesterov-momentum SGD step
//! on the start parameters gives the next round's start. Inner optimizer state stays local.

use crate::optim::{OptimError, Optimizer, OptimizerConfig, OptimizerState};

type Result<T, E = OptimError> = std::result::Result<T, E>;

/// Validated DiLoCo hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DilocoConfig {
    inner_steps: u32,
    outer: OptimizerConfig,
}

impl DilocoConfig {
    /// `inner_steps` (H ≥ 1) local steps per round; outer Nesterov SGD with `outer_lr` and
    /// `outer_momentum` (the paper uses 0.7 and 0.9). A momentum of 0 gives plain outer SGD.
    pub fn new(inner_steps: u32, outer_lr: f32, outer_momentum: f32) -> Result<Self> {
        if inner_steps == 0 {
            return Err(OptimError::InvalidConfig(
                "diloco: inner_steps must be >= 1",
            ));
        }
        let nesterov = outer_momentum > 0.0;
        let outer = OptimizerConfig::sgd(outer_lr, outer_momentum, nesterov, 0.0)?;
        Ok(Self { inner_steps, outer })
    }

    /// Inner steps per round (H).
    #[must_use]
    pub fn inner_steps(&self) -> u32 {
        self.inner_steps
    }
}

/// The outer optimizer: round-start parameters, the pseudo-gradient buffer and outer momentum.
#[derive(Debug, Clone)]
pub struct OuterOptimizer {
    config: DilocoConfig,
    start: Vec<f32>,
    pseudo_gradient: Vec<f32>,
    optimizer: Optimizer,
}

impl OuterOptimizer {
    /// Starts round 0 from `start` (the shared initial parameters).
    #[must_use]
    pub fn new(config: DilocoConfig, start: &[f32]) -> Self {
        Self {
            config,
            start: start.to_vec(),
            pseudo_gradient: vec![0.0; start.len()],
            optimizer: Optimizer::new(config.outer, start.len()),
        }
    }

    /// The hyper-parameters.
    #[must_use]
    pub fn config(&self) -> &DilocoConfig {
        &self.config
    }

    /// This round's start parameters.
    #[must_use]
    pub fn start(&self) -> &[f32] {
        &self.start
    }

    /// Writes `start − end` into the pseudo-gradient buffer and returns it for the all-reduce:
    /// the caller replaces it in place with the (sample-weighted) mean over peers.
    pub fn pseudo_gradient(&mut self, end: &[f32]) -> Result<&mut [f32]> {
        if end.len() != self.start.len() {
            return Err(OptimError::LengthMismatch {
                what: "diloco end parameters",
                expected: self.start.len(),
                found: end.len(),
            });
        }
        for ((pg, &s), &e) in self.pseudo_gradient.iter_mut().zip(&self.start).zip(end) {
            *pg = s - e;
        }
        Ok(&mut self.pseudo_gradient)
    }

    /// The outer step with the (averaged) pseudo-gradient; returns the next round's start, which
    /// every peer loads into its model with `Trainer::set_parameters`.
    pub fn apply(&mut self) -> Result<&[f32]> {
        self.optimizer
            .step(&mut self.start, &self.pseudo_gradient)?;
        Ok(&self.start)
    }

    /// Outer momentum and step count, for checkpoints and state sync.
    #[must_use]
    pub fn state(&self) -> &OptimizerState {
        self.optimizer.state()
    }

    /// Restores a synced round: its start parameters and outer optimizer state.
    pub fn restore(&mut self, start: &[f32], state: OptimizerState) -> Result<()> {
        if start.len() != self.start.len() {
            return Err(OptimError::LengthMismatch {
                what: "diloco start parameters",
                expected: self.start.len(),
                found: start.len(),
            });
        }
        self.optimizer.set_state(state, start.len())?;
        self.start.copy_from_slice(start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_nesterov_step_by_hand() {
        let config = DilocoConfig::new(4, 0.5, 0.9).unwrap();
        let mut outer = OuterOptimizer::new(config, &[1.0, 2.0]);
        let pg = outer.pseudo_gradient(&[0.0, 2.0]).unwrap();
        assert_eq!(pg, &[1.0, 0.0]);
        // buf = g = 1; update = g + 0.9·buf = 1.9; start = 1 − 0.5·1.9.
        let next = outer.apply().unwrap().to_vec();
        assert!((next[0] - 0.05).abs() < 1e-6 && next[1] == 2.0, "{next:?}");
        assert!(outer.pseudo_gradient(&[0.0]).is_err());
        assert!(DilocoConfig::new(0, 0.7, 0.9).is_err());
    }
}
