//! Server-side adaptive optimizers of Reddi et al. 2021 ("Adaptive Federated Optimization",
//! Algorithm 2): FedAdagrad, FedAdam, FedYogi.
//!
//! With Δ the aggregated client delta: `m ← β₁m + (1−β₁)Δ`, then
//! - Adagrad: `v ← v + Δ²`
//! - Adam:    `v ← β₂v + (1−β₂)Δ²`
//! - Yogi:    `v ← v − (1−β₂)·Δ²·sign(v − Δ²)`
//!
//! and `x ← x + η·m/(√v + τ)`. As in the paper, `m` starts at 0, `v` at τ², and there is no bias
//! correction (Flower's FedAdam adds one; we follow the paper). Every operation is element-wise
//! `f32` in index order, so every peer applying the same Δ gets bit-identical models.
//!
//! Server state (what a joining peer syncs): `[m, v]`, 2·params values, plus the step count.

use super::{ServerState, Strategy, StrategyError, check_server_state, same_len};

/// Which second-moment rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FedOptRule {
    /// FedAdagrad.
    Adagrad,
    /// FedAdam.
    Adam,
    /// FedYogi.
    Yogi,
}

/// FedAdagrad / FedAdam / FedYogi: the state is two flat vectors (m, v).
#[derive(Debug, Clone)]
pub struct FedOpt {
    rule: FedOptRule,
    server_lr: f32,
    beta1: f32,
    beta2: f32,
    tau: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Server steps since m and v were last sized (no bias correction reads it; synced so a
    /// joiner reports the same state as the peer it synced from).
    step: u64,
}

impl FedOpt {
    /// `server_lr` > 0, β₁ and β₂ in [0, 1), τ > 0 (the paper tunes η in 10^{-3..0} and uses
    /// β₁ = 0.9, β₂ = 0.99, τ = 10^{-3}).
    pub fn new(
        rule: FedOptRule,
        server_lr: f32,
        beta1: f32,
        beta2: f32,
        tau: f32,
    ) -> Result<Self, StrategyError> {
        let ok = server_lr > 0.0
            && server_lr.is_finite()
            && (0.0..1.0).contains(&beta1)
            && (0.0..1.0).contains(&beta2)
            && tau > 0.0
            && tau.is_finite();
        if !ok {
            return Err(StrategyError::InvalidConfig(
                "fedopt: needs server_lr > 0, beta1 and beta2 in [0, 1), tau > 0",
            ));
        }
        Ok(Self {
            rule,
            server_lr,
            beta1,
            beta2,
            tau,
            m: Vec::new(),
            v: Vec::new(),
            step: 0,
        })
    }

    /// First and second moments (empty before the first step).
    #[must_use]
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    fn second_moment(&self, v: f32, d2: f32) -> f32 {
        match self.rule {
            FedOptRule::Adagrad => v + d2,
            FedOptRule::Adam => self.beta2 * v + (1.0 - self.beta2) * d2,
            FedOptRule::Yogi => {
                let sign = if v > d2 {
                    1.0
                } else if v < d2 {
                    -1.0
                } else {
                    0.0
                };
                v - (1.0 - self.beta2) * d2 * sign
            }
        }
    }
}

impl Strategy for FedOpt {
    fn name(&self) -> &'static str {
        match self.rule {
            FedOptRule::Adagrad => "fedadagrad",
            FedOptRule::Adam => "fedadam",
            FedOptRule::Yogi => "fedyogi",
        }
    }

    fn server_step(
        &mut self,
        global: &mut [f32],
        aggregate: &[f32],
        _: f64,
    ) -> Result<(), StrategyError> {
        let n = global.len();
        same_len("aggregate", n, aggregate.len())?;
        if self.m.len() != n {
            self.m = vec![0.0; n];
            self.v = vec![self.tau * self.tau; n];
            self.step = 0;
        }
        self.step += 1;
        for j in 0..n {
            let d = aggregate[j];
            let m = self.beta1 * self.m[j] + (1.0 - self.beta1) * d;
            let v = self.second_moment(self.v[j], d * d);
            self.m[j] = m;
            self.v[j] = v;
            global[j] += self.server_lr * m / (v.sqrt() + self.tau);
        }
        Ok(())
    }

    fn server_state_len(&self, params: usize) -> usize {
        2 * params
    }

    /// `[m, v]`; before the first step at this size, the paper's start m = 0, v = τ².
    fn server_state(&self, params: usize) -> ServerState {
        if self.m.len() != params {
            let mut values = vec![0.0; params];
            values.resize(2 * params, self.tau * self.tau);
            return ServerState { step: 0, values };
        }
        let mut values = Vec::with_capacity(2 * params);
        values.extend_from_slice(&self.m);
        values.extend_from_slice(&self.v);
        ServerState {
            step: self.step,
            values,
        }
    }

    fn load_server_state(
        &mut self,
        global: &[f32],
        state: ServerState,
    ) -> Result<(), StrategyError> {
        let n = global.len();
        check_server_state(self.server_state_len(n), &state)?;
        let (m, v) = state.values.split_at(n);
        self.m = m.to_vec();
        self.v = v.to_vec();
        self.step = state.step;
        Ok(())
    }
}
