//! Federated strategies over flat `f32` buffers: one [`Strategy`] trait, small implementations.
//!
//! A round has two sides, and the trait keeps them apart:
//! - **client hooks** run on the device that trains: [`Strategy::correct_gradient`] adjusts each
//!   local gradient before the local optimizer step (FedProx's proximal term, SCAFFOLD's control
//!   variates), and [`Strategy::client_message`] says what the client sends after local training
//!   (`local − global`, plus SCAFFOLD's control-variate delta);
//! - the **aggregate step** [`Strategy::server_step`] turns the agreed aggregate of those messages
//!   (a weighted mean, or a robust rule) into the next global model. In the mesh there is no
//!   server: every peer applies it to the same aggregate, so it must be deterministic — the loops
//!   here are element-wise, in index order, with only `+ − × ÷ sqrt` in `f32` (Rust never fuses
//!   them into FMAs), so equal inputs give bit-identical outputs on every peer.
//!
//! Message convention (Reddi et al. 2021): a client sends Δᵢ = yᵢ − x (its trained model minus the
//! round's global model); the aggregate is Δ = Σ wᵢΔᵢ / Σ wᵢ with `wᵢ =`
//! [`Strategy::aggregation_weight`]. The pseudo-gradient of FedAvgM and DiLoCo is −Δ.

mod fedopt;
mod simple;

pub use fedopt::{FedOpt, FedOptRule};
pub use simple::{Diloco, FedAvg, FedAvgM, FedProx, Scaffold};

use core::fmt;
use core::str::FromStr;
use gradmesh_math::OptimError;
use thiserror::Error;

/// A strategy step that could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// A buffer's length does not match the model (or the message layout).
    #[error("{what}: expected {expected} values, got {found}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        found: usize,
    },
    /// A hyper-parameter is out of range.
    #[error("invalid strategy config: {0}")]
    InvalidConfig(&'static str),
    /// The ground crate's flat-buffer optimizer refused a step.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// A strategy name other than the known ones.
    #[error(
        "unknown strategy {0:?} (fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, scaffold, diloco)"
    )]
    UnknownName(String),
}

/// What a client keeps between the rounds it takes part in (SCAFFOLD's control variate cᵢ;
/// empty for the other strategies).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientState {
    control: Vec<f32>,
}

impl ClientState {
    /// A client holding SCAFFOLD's control variate cᵢ = `control`, as restored from the client's
    /// checkpoint. Its length must be the model's: SCAFFOLD treats a cᵢ of any other length as
    /// zero (as for a client that never trained) and replaces it after the next local round.
    #[must_use]
    pub fn with_control(control: Vec<f32>) -> Self {
        Self { control }
    }

    /// SCAFFOLD's client control variate (empty until the client first trains under SCAFFOLD).
    #[must_use]
    pub fn control(&self) -> &[f32] {
        &self.control
    }
}

/// The part of a strategy's state that every peer applies identically (outer momentum, FedOpt's
/// moments, SCAFFOLD's global control variate): synced and digested with the global model.
///
/// The layout is fixed by the strategy and the model size alone ([`Strategy::server_state_len`]),
/// so a fresh peer and a trained one encode the same number of values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerState {
    /// Server steps taken (0 for stateless strategies, which keep no count).
    pub step: u64,
    /// Flat values, `server_state_len(params)` of them.
    pub values: Vec<f32>,
}

/// One federated strategy. Object safe, so a node or simulator can hold `Box<dyn Strategy>`.
pub trait Strategy: fmt::Debug + Send {
    /// A short name (`fedavg`, `scaffold`, ...).
    fn name(&self) -> &'static str;

    /// Length of one client message for a model of `params` values (SCAFFOLD sends two vectors).
    fn message_len(&self, params: usize) -> usize {
        params
    }

    /// The weight of a client that trained on `samples` samples in the aggregate mean (FedAvg:
    /// the sample count; SCAFFOLD: 1, as in the paper).
    fn aggregation_weight(&self, samples: usize) -> f64 {
        samples as f64
    }

    /// Client hook: corrects a local gradient `grad` at local parameters `local`, before the local
    /// optimizer step. `global` is the round's starting model. Default: no correction.
    fn correct_gradient(
        &self,
        global: &[f32],
        client: &ClientState,
        local: &[f32],
        grad: &mut [f32],
    ) -> Result<(), StrategyError> {
        let _ = (global, client, local, grad);
        Ok(())
    }

    /// Client hook after `local_steps` local SGD steps of rate `local_lr` moved the model by
    /// `delta` (= local − global, see [`delta`]): the message to aggregate. Updates the client's
    /// own state. It takes Δ rather than both models so that a client that tracks Δ itself (the
    /// node's inner loop) sends exactly what its optimizer moved, without a subtraction's rounding.
    fn client_message(
        &self,
        client: &mut ClientState,
        delta: &[f32],
        local_steps: u32,
        local_lr: f32,
    ) -> Result<Vec<f32>, StrategyError> {
        let _ = (client, local_steps, local_lr);
        Ok(delta.to_vec())
    }

    /// The aggregate step: applies the aggregated message to `global` in place.
    /// `sampled_fraction` = clients aggregated / all clients (SCAFFOLD's |S|/N).
    fn server_step(
        &mut self,
        global: &mut [f32],
        aggregate: &[f32],
        sampled_fraction: f64,
    ) -> Result<(), StrategyError>;

    /// Length of [`Strategy::server_state`] for a model of `params` values (0 for stateless
    /// strategies).
    fn server_state_len(&self, params: usize) -> usize {
        let _ = params;
        0
    }

    /// The server state for a model of `params` values: always exactly
    /// `server_state_len(params)` values, so a fresh peer and a trained one encode the same
    /// layout. Before the first server step at this size it is the state that step starts from:
    /// zeros, except FedOpt's second moment v, which starts at τ² as in the paper.
    fn server_state(&self, params: usize) -> ServerState {
        let _ = params;
        ServerState::default()
    }

    /// Replaces the server state with a synced one, `global` being the synced global model it
    /// goes with (DiLoCo's outer optimizer keeps its own copy of the start parameters and is
    /// reset to it). Errors with [`StrategyError::LengthMismatch`] if `state.values.len() !=
    /// server_state_len(global.len())`; nothing changes on error. Default (stateless
    /// strategies): accepts only empty values, and keeps no step count.
    fn load_server_state(
        &mut self,
        global: &[f32],
        state: ServerState,
    ) -> Result<(), StrategyError> {
        check_server_state(self.server_state_len(global.len()), &state)
    }
}

/// Refuses a synced server state whose length is not `expected`.
pub(crate) fn check_server_state(
    expected: usize,
    state: &ServerState,
) -> Result<(), StrategyError> {
    same_len("server state", expected, state.values.len())
}

/// `local − global`: a client's Δ, for [`Strategy::client_message`].
///
/// # Errors
/// [`StrategyError::LengthMismatch`] if the models differ in length.
pub fn delta(global: &[f32], local: &[f32]) -> Result<Vec<f32>, StrategyError> {
    same_len("local model", global.len(), local.len())?;
    Ok(local.iter().zip(global).map(|(&y, &x)| y - x).collect())
}

pub(crate) fn same_len(
    what: &'static str,
    expected: usize,
    found: usize,
) -> Result<(), StrategyError> {
    if expected == found {
        Ok(())
    } else {
        Err(StrategyError::LengthMismatch {
            what,
            expected,
            found,
        })
    }
}

/// The sample- (or strategy-) weighted mean of client messages, summed in the given order, in
/// `f64` and rounded once, so the result does not depend on how the sum is split up front.
/// (Robust rules replace this; see the crate's robust module.)
pub fn weighted_mean(messages: &[(Vec<f32>, f64)]) -> Result<Vec<f32>, StrategyError> {
    let Some((first, _)) = messages.first() else {
        return Err(StrategyError::InvalidConfig("weighted_mean: no messages"));
    };
    let total: f64 = messages.iter().map(|(_, w)| w).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(StrategyError::InvalidConfig(
            "weighted_mean: weights must sum to > 0",
        ));
    }
    let mut acc = vec![0.0_f64; first.len()];
    for (m, w) in messages {
        same_len("client message", acc.len(), m.len())?;
        for (a, &v) in acc.iter_mut().zip(m) {
            *a += w * f64::from(v);
        }
    }
    Ok(acc.into_iter().map(|a| (a / total) as f32).collect())
}

/// A strategy choice with its hyper-parameters (what `--strategy` and scenario files select).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum StrategyConfig {
    /// FedAvg with server learning rate (1 = plain model averaging).
    FedAvg {
        /// Server learning rate η (default 1).
        server_lr: f32,
    },
    /// FedAvg with server momentum (Hsu et al. 2019).
    FedAvgM {
        /// Server learning rate (default 1).
        server_lr: f32,
        /// Server momentum β (default 0.9).
        momentum: f32,
    },
    /// FedProx (Li et al. 2020): proximal term μ(w − w_global) on every local gradient.
    FedProx {
        /// μ ≥ 0 (default 0.01).
        mu: f32,
    },
    /// FedAdam / FedYogi / FedAdagrad (Reddi et al. 2021).
    FedOpt {
        /// Which second-moment rule.
        rule: FedOptRule,
        /// Server learning rate η (default 0.01).
        server_lr: f32,
        /// β₁ (default 0.9).
        beta1: f32,
        /// β₂ (default 0.99).
        beta2: f32,
        /// Adaptivity τ (default 1e-3).
        tau: f32,
    },
    /// SCAFFOLD (Karimireddy et al. 2020), option II control variates.
    Scaffold {
        /// Global learning rate η_g (default 1).
        server_lr: f32,
    },
    /// DiLoCo (Douillard et al. 2023): outer Nesterov SGD on the pseudo-gradient.
    Diloco {
        /// Outer learning rate (default 0.7).
        outer_lr: f32,
        /// Outer Nesterov momentum (default 0.9).
        outer_momentum: f32,
    },
}

impl StrategyConfig {
    /// Builds the strategy, validating every hyper-parameter.
    pub fn build(self) -> Result<Box<dyn Strategy>, StrategyError> {
        Ok(match self {
            Self::FedAvg { server_lr } => Box::new(FedAvg::new(server_lr)?),
            Self::FedAvgM {
                server_lr,
                momentum,
            } => Box::new(FedAvgM::new(server_lr, momentum)?),
            Self::FedProx { mu } => Box::new(FedProx::new(mu)?),
            Self::FedOpt {
                rule,
                server_lr,
                beta1,
                beta2,
                tau,
            } => Box::new(FedOpt::new(rule, server_lr, beta1, beta2, tau)?),
            Self::Scaffold { server_lr } => Box::new(Scaffold::new(server_lr)?),
            Self::Diloco {
                outer_lr,
                outer_momentum,
            } => Box::new(Diloco::new(outer_lr, outer_momentum)?),
        })
    }
}

/// The name `FromStr` takes and every hyper-parameter of the server step, e.g.
/// `diloco:lr=0.7,momentum=0.9` (what nodes of a mesh compare to find a peer that differs).
impl fmt::Display for StrategyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FedAvg { server_lr } => write!(f, "fedavg:lr={server_lr}"),
            Self::FedAvgM {
                server_lr,
                momentum,
            } => write!(f, "fedavgm:lr={server_lr},momentum={momentum}"),
            Self::FedProx { mu } => write!(f, "fedprox:mu={mu}"),
            Self::FedOpt {
                rule,
                server_lr,
                beta1,
                beta2,
                tau,
            } => {
                let name = match rule {
                    FedOptRule::Adam => "fedadam",
                    FedOptRule::Yogi => "fedyogi",
                    FedOptRule::Adagrad => "fedadagrad",
                };
                write!(
                    f,
                    "{name}:lr={server_lr},beta1={beta1},beta2={beta2},tau={tau}"
                )
            }
            Self::Scaffold { server_lr } => write!(f, "scaffold:lr={server_lr}"),
            Self::Diloco {
                outer_lr,
                outer_momentum,
            } => write!(f, "diloco:lr={outer_lr},momentum={outer_momentum}"),
        }
    }
}

impl FromStr for StrategyConfig {
    type Err = StrategyError;

    /// A name with the documented defaults: `fedavg`, `fedavgm`, `fedprox`, `fedadam`, `fedyogi`,
    /// `fedadagrad`, `scaffold`, `diloco`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fedopt = |rule| Self::FedOpt {
            rule,
            server_lr: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        };
        Ok(match s {
            "fedavg" => Self::FedAvg { server_lr: 1.0 },
            "fedavgm" => Self::FedAvgM {
                server_lr: 1.0,
                momentum: 0.9,
            },
            "fedprox" => Self::FedProx { mu: 0.01 },
            "fedadam" => fedopt(FedOptRule::Adam),
            "fedyogi" => fedopt(FedOptRule::Yogi),
            "fedadagrad" => fedopt(FedOptRule::Adagrad),
            "scaffold" => Self::Scaffold { server_lr: 1.0 },
            "diloco" => Self::Diloco {
                outer_lr: 0.7,
                outer_momentum: 0.9,
            },
            other => return Err(StrategyError::UnknownName(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests;
