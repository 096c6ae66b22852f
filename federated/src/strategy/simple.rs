//! FedAvg, FedAvgM, FedProx, SCAFFOLD and DiLoCo.
//!
//! Server state (what a joining peer syncs): FedAvg and FedProx have none; FedAvgM and DiLoCo
//! ship their ground-crate optimizer's state (momentum buffer, `params` values with momentum,
//! none without); SCAFFOLD ships its control variate c (`params` values).

use super::{ClientState, ServerState, Strategy, StrategyError, check_server_state, same_len};
use gradmesh_math::{DilocoConfig, Optimizer, OptimizerConfig, OptimizerState, OuterOptimizer};

fn positive(x: f32, reason: &'static str) -> Result<f32, StrategyError> {
    if x > 0.0 && x.is_finite() {
        Ok(x)
    } else {
        Err(StrategyError::InvalidConfig(reason))
    }
}

/// The state before any server step: `len` zeros.
fn fresh_state(len: usize) -> ServerState {
    ServerState {
        step: 0,
        values: vec![0.0; len],
    }
}

fn from_optimizer(state: &OptimizerState) -> ServerState {
    ServerState {
        step: state.step,
        values: state.values.clone(),
    }
}

fn to_optimizer(state: ServerState) -> OptimizerState {
    OptimizerState {
        step: state.step,
        values: state.values,
    }
}

/// `global += lr · aggregate`, element by element.
fn apply_scaled(global: &mut [f32], aggregate: &[f32], lr: f32) -> Result<(), StrategyError> {
    same_len("aggregate", global.len(), aggregate.len())?;
    for (x, &d) in global.iter_mut().zip(aggregate) {
        *x += lr * d;
    }
    Ok(())
}

/// FedAvg (McMahan et al. 2017): `x ← x + η·Δ`; η = 1 is plain weighted model averaging.
#[derive(Debug, Clone)]
pub struct FedAvg {
    server_lr: f32,
}

impl FedAvg {
    /// `server_lr` > 0 (1 for the paper's algorithm).
    pub fn new(server_lr: f32) -> Result<Self, StrategyError> {
        Ok(Self {
            server_lr: positive(server_lr, "fedavg: server_lr must be > 0")?,
        })
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn server_step(
        &mut self,
        global: &mut [f32],
        aggregate: &[f32],
        _: f64,
    ) -> Result<(), StrategyError> {
        apply_scaled(global, aggregate, self.server_lr)
    }
}

/// FedAvg with server momentum (Hsu et al. 2019): pseudo-gradient g = −Δ, `v ← βv + g`,
/// `x ← x − η·v` — the ground crate's flat-buffer SGD (heavy-ball, as `torch.optim.SGD`) on the server.
#[derive(Debug, Clone)]
pub struct FedAvgM {
    config: OptimizerConfig,
    optimizer: Option<Optimizer>,
    pseudo_gradient: Vec<f32>,
}

impl FedAvgM {
    /// `server_lr` > 0, `momentum` in [0, 1).
    pub fn new(server_lr: f32, momentum: f32) -> Result<Self, StrategyError> {
        Ok(Self {
            config: OptimizerConfig::sgd(server_lr, momentum, false, 0.0)?,
            optimizer: None,
            pseudo_gradient: Vec::new(),
        })
    }
}

impl Strategy for FedAvgM {
    fn name(&self) -> &'static str {
        "fedavgm"
    }

    fn server_step(
        &mut self,
        global: &mut [f32],
        aggregate: &[f32],
        _: f64,
    ) -> Result<(), StrategyError> {
        same_len("aggregate", global.len(), aggregate.len())?;
        let config = self.config;
        let optimizer = self
            .optimizer
            .get_or_insert_with(|| Optimizer::new(config, global.len()));
        self.pseudo_gradient.clear();
        self.pseudo_gradient.extend(aggregate.iter().map(|&d| -d));
        optimizer.step(global, &self.pseudo_gradient)?;
        Ok(())
    }

    fn server_state_len(&self, params: usize) -> usize {
        self.config.state_len(params)
    }

    fn server_state(&self, params: usize) -> ServerState {
        let len = self.server_state_len(params);
        match &self.optimizer {
            Some(optimizer) if optimizer.state().values.len() == len => {
                from_optimizer(optimizer.state())
            }
            _ => fresh_state(len),
        }
    }

    fn load_server_state(
        &mut self,
        global: &[f32],
        state: ServerState,
    ) -> Result<(), StrategyError> {
        let n = global.len();
        check_server_state(self.server_state_len(n), &state)?;
        let mut optimizer = Optimizer::new(self.config, n);
        optimizer.set_state(to_optimizer(state), n)?;
        self.optimizer = Some(optimizer);
        Ok(())
    }
}

/// FedProx (Li et al. 2020): every local gradient gets `μ·(w − w_global)`, which keeps local
/// models near the round's model on heterogeneous data; aggregation is FedAvg's.
#[derive(Debug, Clone)]
pub struct FedProx {
    mu: f32,
}

impl FedProx {
    /// `mu` ≥ 0 (0 is FedAvg exactly).
    pub fn new(mu: f32) -> Result<Self, StrategyError> {
        if mu >= 0.0 && mu.is_finite() {
            Ok(Self { mu })
        } else {
            Err(StrategyError::InvalidConfig("fedprox: mu must be >= 0"))
        }
    }
}

impl Strategy for FedProx {
    fn name(&self) -> &'static str {
        "fedprox"
    }

    fn correct_gradient(
        &self,
        global: &[f32],
        _: &ClientState,
        local: &[f32],
        grad: &mut [f32],
    ) -> Result<(), StrategyError> {
        same_len("local model", global.len(), local.len())?;
        same_len("gradient", global.len(), grad.len())?;
        for ((g, &w), &w0) in grad.iter_mut().zip(local).zip(global) {
            *g += self.mu * (w - w0);
        }
        Ok(())
    }

    fn server_step(
        &mut self,
        global: &mut [f32],
        aggregate: &[f32],
        _: f64,
    ) -> Result<(), StrategyError> {
        apply_scaled(global, aggregate, 1.0)
    }
}

/// SCAFFOLD (Karimireddy et al. 2020) with option II control variates.
///
/// Client: every local gradient becomes `g + c − cᵢ`; after K steps of rate η_l the client sets
/// `cᵢ⁺ = cᵢ − c + (x − yᵢ)/(K·η_l)` and sends `[yᵢ − x, cᵢ⁺ − cᵢ]` (twice the model's size).
/// Server, with the uniform mean of the messages: `x ← x + η_g·mean(Δy)`,
/// `c ← c + (|S|/N)·mean(Δc)`.
#[derive(Debug, Clone)]
pub struct Scaffold {
    server_lr: f32,
    control: Vec<f32>,
    /// Server steps since c was last sized (synced with c; no update reads it).
    step: u64,
}

impl Scaffold {
    /// `server_lr` (η_g) > 0.
    pub fn new(server_lr: f32) -> Result<Self, StrategyError> {
        Ok(Self {
            server_lr: positive(server_lr, "scaffold: server_lr must be > 0")?,
            control: Vec::new(),
            step: 0,
        })
    }

    /// The server control variate c (empty before the first round).
    #[must_use]
    pub fn control(&self) -> &[f32] {
        &self.control
    }

    /// `c` and `cᵢ` for a model of `n` values (zeros until first set).
    fn controls<'a>(
        &'a self,
        client: &'a ClientState,
        n: usize,
    ) -> (Option<&'a [f32]>, Option<&'a [f32]>) {
        let c = (self.control.len() == n).then_some(self.control.as_slice());
        let ci = (client.control.len() == n).then_some(client.control.as_slice());
        (c, ci)
    }
}

impl Strategy for Scaffold {
    fn name(&self) -> &'static str {
        "scaffold"
    }

    fn message_len(&self, params: usize) -> usize {
        2 * params
    }

    fn aggregation_weight(&self, _: usize) -> f64 {
        1.0
    }

    fn correct_gradient(
        &self,
        global: &[f32],
        client: &ClientState,
        _: &[f32],
        grad: &mut [f32],
    ) -> Result<(), StrategyError> {
        same_len("gradient", global.len(), grad.len())?;
        let (c, ci) = self.controls(client, grad.len());
        for (j, g) in grad.iter_mut().enumerate() {
            let cj = c.map_or(0.0, |c| c[j]);
            let cij = ci.map_or(0.0, |ci| ci[j]);
            *g += cj - cij;
        }
        Ok(())
    }

    fn client_message(
        &self,
        client: &mut ClientState,
        delta: &[f32],
        local_steps: u32,
        local_lr: f32,
    ) -> Result<Vec<f32>, StrategyError> {
        let n = delta.len();
        let dy = delta.to_vec();
        if local_steps == 0 || local_lr.is_nan() || local_lr <= 0.0 {
            return Err(StrategyError::InvalidConfig(
                "scaffold: needs >= 1 local step with lr > 0",
            ));
        }
        let k_lr = local_steps as f32 * local_lr;
        let mut message = dy;
        message.reserve(n);
        let (c, ci) = self.controls(client, n);
        let mut next = Vec::with_capacity(n);
        for j in 0..n {
            let cj = c.map_or(0.0, |c| c[j]);
            let cij = ci.map_or(0.0, |ci| ci[j]);
            // (x − y)/(Kη) = −Δy/(Kη).
            let updated = cij - cj + (-message[j]) / k_lr;
            message.push(updated - cij);
            next.push(updated);
        }
        client.control = next;
        Ok(message)
    }

    fn server_step(
        &mut self,
        global: &mut [f32],
        aggregate: &[f32],
        sampled_fraction: f64,
    ) -> Result<(), StrategyError> {
        let n = global.len();
        same_len("scaffold aggregate", 2 * n, aggregate.len())?;
        let (dy, dc) = aggregate.split_at(n);
        apply_scaled(global, dy, self.server_lr)?;
        if self.control.len() != n {
            self.control = vec![0.0; n];
            self.step = 0;
        }
        self.step += 1;
        let share = sampled_fraction as f32;
        for (c, &d) in self.control.iter_mut().zip(dc) {
            *c += share * d;
        }
        Ok(())
    }

    fn server_state_len(&self, params: usize) -> usize {
        params
    }

    /// The control variate c (zeros before the first step at this size, as the clients read it).
    fn server_state(&self, params: usize) -> ServerState {
        if self.control.len() != params {
            return fresh_state(params);
        }
        ServerState {
            step: self.step,
            values: self.control.clone(),
        }
    }

    fn load_server_state(
        &mut self,
        global: &[f32],
        state: ServerState,
    ) -> Result<(), StrategyError> {
        check_server_state(self.server_state_len(global.len()), &state)?;
        self.control = state.values;
        self.step = state.step;
        Ok(())
    }
}

/// DiLoCo's outer step (Douillard et al. 2023), reusing the ground crate's [`OuterOptimizer`]: the
/// pseudo-gradient −Δ drives Nesterov-momentum SGD on the round's start parameters. Clients run
/// their H inner steps exactly as under FedAvg.
#[derive(Debug, Clone)]
pub struct Diloco {
    config: DilocoConfig,
    outer: Option<OuterOptimizer>,
    /// Outer-optimizer state values per parameter (1 with momentum, 0 without), read off a
    /// one-parameter `OuterOptimizer` because `DilocoConfig` keeps its optimizer config private;
    /// it lets `server_state_len` answer before the lazy optimizer exists.
    state_per_param: usize,
}

impl Diloco {
    /// Outer learning rate and Nesterov momentum (the paper: 0.7 and 0.9).
    pub fn new(outer_lr: f32, outer_momentum: f32) -> Result<Self, StrategyError> {
        // `inner_steps` is the clients' business here; the outer optimizer never reads it.
        let config = DilocoConfig::new(1, outer_lr, outer_momentum)?;
        Ok(Self {
            config,
            outer: None,
            state_per_param: OuterOptimizer::new(config, &[0.0]).state().values.len(),
        })
    }
}

impl Strategy for Diloco {
    fn name(&self) -> &'static str {
        "diloco"
    }

    fn server_step(
        &mut self,
        global: &mut [f32],
        aggregate: &[f32],
        _: f64,
    ) -> Result<(), StrategyError> {
        same_len("aggregate", global.len(), aggregate.len())?;
        let config = self.config;
        let outer = self
            .outer
            .get_or_insert_with(|| OuterOptimizer::new(config, global));
        same_len("diloco start", outer.start().len(), global.len())?;
        // The buffer is the caller's to fill with the averaged pseudo-gradient: −Δ exactly,
        // rather than start − (start + Δ) with its extra rounding.
        let pseudo_gradient = outer.pseudo_gradient(global)?;
        for (p, &d) in pseudo_gradient.iter_mut().zip(aggregate) {
            *p = -d;
        }
        global.copy_from_slice(outer.apply()?);
        Ok(())
    }

    fn server_state_len(&self, params: usize) -> usize {
        self.state_per_param * params
    }

    /// The outer momentum; the start parameters are not in it: after every step they equal the
    /// global model, which is synced beside this state.
    fn server_state(&self, params: usize) -> ServerState {
        match &self.outer {
            Some(outer) if outer.start().len() == params => from_optimizer(outer.state()),
            _ => fresh_state(self.server_state_len(params)),
        }
    }

    fn load_server_state(
        &mut self,
        global: &[f32],
        state: ServerState,
    ) -> Result<(), StrategyError> {
        check_server_state(self.server_state_len(global.len()), &state)?;
        let mut outer = OuterOptimizer::new(self.config, global);
        outer.restore(global, to_optimizer(state))?;
        self.outer = Some(outer);
        Ok(())
    }
}
