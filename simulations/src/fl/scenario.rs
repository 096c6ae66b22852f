//! Federated scenarios: the TOML file as written ([`RawFlScenario`]) and the validated
//! [`FlScenario`], one [`FlScenarioError`] variant per rule.

use crate::churn::ChurnSpec;
use crate::compute::StepTime;
use crate::net::{LossModel, NetConfig, NetConfigError, PeerLink};
use crate::scenario::{RawChurn, ScenarioError, churn_spec};
use gradmesh_federated::attack::Attack;
use gradmesh_federated::dp::{DpError, GaussianMechanism};
use gradmesh_federated::partition::PartitionScheme;
use gradmesh_federated::robust::{Aggregation, ParseAggregationError};
use gradmesh_federated::strategy::{StrategyConfig, StrategyError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

const MBIT_BYTES: f64 = 1e6 / 8.0;

/// A federated scenario as written in TOML. Defaults are given per field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlScenario {
    /// A short name for reports.
    pub name: String,
    /// Virtual clients (> 0).
    pub clients: u32,
    /// Rounds (> 0).
    pub rounds: u32,
    /// Clients sampled per round among those up and holding data (> 0).
    pub clients_per_round: u32,
    /// Local epochs per round over the client's own samples (> 0). Default: 1. Ignored when
    /// `local_steps` is set.
    pub local_epochs: Option<u32>,
    /// A fixed number of local steps per round instead of epochs.
    pub local_steps: Option<u32>,
    /// Local mini-batch size (> 0).
    pub batch_size: u32,
    /// Local SGD learning rate (> 0, no momentum: client optimizer state never leaks between
    /// the virtual clients that share one process).
    pub local_lr: f32,
    /// Clients whose upload has not arrived this many simulated seconds after the round started
    /// are dropped (stragglers). Default: none.
    pub round_deadline_s: Option<f64>,
    /// How the training set is split.
    pub partition: RawPartitionScheme,
    /// The strategy and its hyper-parameters.
    pub strategy: RawStrategy,
    /// Client devices and access links.
    pub client_link: RawLink,
    /// The aggregator's link (in the mesh: the span owners that reduce; here one node).
    pub server_link: RawServerLink,
    /// Client availability. Default: always up.
    pub churn: Option<RawChurn>,
    /// A robust rule instead of the strategy's weighted mean: `median`, `trimmed-mean:<beta>`,
    /// `multi-krum:<f>:<m>`, `centered-clipping:<tau>:<iterations>`, `mean`. Default: none.
    pub aggregation: Option<String>,
    /// Byzantine clients. Default: none.
    pub attack: Option<RawAttack>,
    /// Central DP-FedAvg (clip, noise, RDP accountant). Default: none.
    pub dp: Option<RawDp>,
}

/// Byzantine clients: a seeded `fraction` of all clients rewrite every message they send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttack {
    /// Fraction of clients in [0, 1].
    pub fraction: f64,
    /// `sign-flip`, `scaled` or `gaussian-noise`.
    pub kind: String,
    /// Scale for sign-flip and scaled. Default: 1 (sign-flip), 10 (scaled).
    pub lambda: Option<f32>,
    /// Noise σ for gaussian-noise. Default: 1.
    pub sigma: Option<f32>,
}

/// Central DP-FedAvg (McMahan et al. 2018).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDp {
    /// L2 clip bound C of each client message (> 0).
    pub clip: f64,
    /// Noise multiplier σ (noise std σ·C on the sum, ≥ 0).
    pub noise_multiplier: f64,
    /// δ for the reported ε (in (0, 1)).
    pub delta: f64,
}

/// Validated attack settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlAttack {
    /// Fraction of clients that attack.
    pub fraction: f64,
    /// What they do to their message.
    pub kind: Attack,
}

/// Validated DP settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlDp {
    /// Clip and noise.
    pub mechanism: GaussianMechanism,
    /// δ of the reported ε.
    pub delta: f64,
}

/// The partition scheme.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RawPartitionScheme {
    /// Uniform.
    Iid,
    /// Label skew with concentration `alpha`.
    Dirichlet {
        /// α > 0.
        alpha: f64,
    },
    /// `classes_per_client` single-label shards per client.
    Shards {
        /// k ≥ 1.
        classes_per_client: usize,
    },
    /// Quantity skew with concentration `alpha`.
    Quantity {
        /// α > 0.
        alpha: f64,
    },
}

/// The strategy: `name` plus optional hyper-parameters (defaults from
/// `gradmesh_federated::strategy::StrategyConfig`'s names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStrategy {
    /// fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, scaffold, diloco.
    pub name: String,
    /// Server learning rate (fedavg, fedavgm, fedopt, scaffold) or outer lr (diloco).
    pub server_lr: Option<f32>,
    /// Server momentum (fedavgm) or outer Nesterov momentum (diloco).
    pub momentum: Option<f32>,
    /// FedProx μ.
    pub mu: Option<f32>,
    /// FedOpt β₁.
    pub beta1: Option<f32>,
    /// FedOpt β₂.
    pub beta2: Option<f32>,
    /// FedOpt τ.
    pub tau: Option<f32>,
}

/// Client devices and access links (all clients alike).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// Uplink in Mbit/s.
    pub up_mbit_s: f64,
    /// Downlink in Mbit/s.
    pub down_mbit_s: f64,
    /// Per-endpoint one-way latency share in milliseconds.
    pub latency_ms: f64,
    /// Mean time of one local training step in seconds (> 0).
    pub step_time_mean_s: f64,
    /// Lognormal σ of the step time. Default: 0.
    #[serde(default)]
    pub step_time_sigma: f64,
}

/// The aggregator's access link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerLink {
    /// Uplink in Mbit/s.
    pub up_mbit_s: f64,
    /// Downlink in Mbit/s.
    pub down_mbit_s: f64,
    /// Per-endpoint one-way latency share in milliseconds.
    pub latency_ms: f64,
}

/// A federated scenario that breaks a rule.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FlScenarioError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/missing field.
    #[error("toml: {0}")]
    Toml(#[from] toml::de::Error),
    /// clients, rounds, clients_per_round, batch_size, local epochs/steps must be > 0.
    #[error("{0} must be > 0")]
    Zero(&'static str),
    /// More clients per round than clients.
    #[error("clients_per_round {per_round} exceeds clients {clients}")]
    PerRound {
        /// Per round.
        per_round: u32,
        /// All clients.
        clients: u32,
    },
    /// The local learning rate must be positive and finite.
    #[error("local_lr must be > 0")]
    LocalLr,
    /// The round deadline must be positive.
    #[error("round_deadline_s must be > 0")]
    Deadline,
    /// Step time mean must be > 0 and σ ≥ 0.
    #[error("client_link: step_time_mean_s must be > 0 and step_time_sigma >= 0")]
    StepTime,
    /// A Dirichlet α must be positive and finite; shards need k ≥ 1.
    #[error("partition: {0}")]
    Partition(&'static str),
    /// An unknown strategy name or a bad hyper-parameter.
    #[error("strategy: {0}")]
    Strategy(#[from] StrategyError),
    /// An aggregation name that does not parse.
    #[error(transparent)]
    Aggregation(#[from] ParseAggregationError),
    /// An attack fraction outside [0, 1] or an unknown kind.
    #[error("attack: fraction must be in [0, 1] and kind sign-flip, scaled or gaussian-noise")]
    Attack,
    /// Bad DP parameters.
    #[error("dp: {0}")]
    Dp(#[from] DpError),
    /// δ must be in (0, 1).
    #[error("dp: delta must be in (0, 1)")]
    Delta,
    /// A link is invalid.
    #[error(transparent)]
    Net(#[from] NetConfigError),
    /// The churn section is invalid.
    #[error("churn: {0}")]
    Churn(#[from] ScenarioError),
}

/// A validated federated scenario.
#[derive(Debug, Clone)]
pub struct FlScenario {
    pub(crate) name: String,
    pub(crate) clients: u32,
    pub(crate) rounds: u32,
    pub(crate) clients_per_round: u32,
    pub(crate) local_work: LocalWork,
    pub(crate) batch_size: u32,
    pub(crate) local_lr: f32,
    pub(crate) round_deadline_s: Option<f64>,
    pub(crate) partition: PartitionScheme,
    pub(crate) strategy: StrategyConfig,
    /// Peer 0 is the aggregator, peer i + 1 is client i.
    pub(crate) net: NetConfig,
    pub(crate) step_time: StepTime,
    /// Indexed by simulator peer (the aggregator's entry is never used).
    pub(crate) churn: ChurnSpec,
    pub(crate) aggregation: Option<Aggregation>,
    pub(crate) attack: Option<FlAttack>,
    pub(crate) dp: Option<FlDp>,
}

/// How much a client trains per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalWork {
    /// Epochs over the client's samples: `epochs · ⌈n/B⌉` steps.
    Epochs(u32),
    /// A fixed step count.
    Steps(u32),
}

impl FlScenario {
    /// Reads and validates a scenario file; a churn trace path is taken relative to the file.
    pub fn from_file(path: &Path) -> Result<Self, FlScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| FlScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut raw: RawFlScenario = toml::from_str(&text)?;
        if let Some(RawChurn::Trace { path: trace }) = &mut raw.churn
            && trace.is_relative()
        {
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            *trace = base.join(&*trace);
        }
        Self::try_from(raw)
    }

    /// Parses and validates TOML (a relative trace path stays relative to the working directory).
    pub fn from_toml(text: &str) -> Result<Self, FlScenarioError> {
        Self::try_from(toml::from_str::<RawFlScenario>(text)?)
    }

    /// The scenario's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rounds to run.
    #[must_use]
    pub const fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Virtual clients.
    #[must_use]
    pub const fn clients(&self) -> u32 {
        self.clients
    }

    /// The strategy choice.
    #[must_use]
    pub const fn strategy(&self) -> StrategyConfig {
        self.strategy
    }
}

impl TryFrom<RawFlScenario> for FlScenario {
    type Error = FlScenarioError;

    fn try_from(raw: RawFlScenario) -> Result<Self, Self::Error> {
        check_counts(&raw)?;
        if !(raw.local_lr > 0.0 && raw.local_lr.is_finite()) {
            return Err(FlScenarioError::LocalLr);
        }
        if raw
            .round_deadline_s
            .is_some_and(|d| !(d > 0.0 && d.is_finite()))
        {
            return Err(FlScenarioError::Deadline);
        }
        let link = &raw.client_link;
        let step_ok = link.step_time_mean_s > 0.0
            && link.step_time_mean_s.is_finite()
            && link.step_time_sigma >= 0.0
            && link.step_time_sigma.is_finite();
        if !step_ok {
            return Err(FlScenarioError::StepTime);
        }
        check_partition(&raw.partition)?;
        let strategy = strategy_config(&raw.strategy)?;
        strategy.build()?;
        let local_work = match (raw.local_steps, raw.local_epochs) {
            (Some(s), _) => LocalWork::Steps(s),
            (None, e) => LocalWork::Epochs(e.unwrap_or(1)),
        };
        let peers = raw.clients as usize + 1;
        let aggregation = raw.aggregation.as_deref().map(str::parse).transpose()?;
        let attack = raw.attack.as_ref().map(attack).transpose()?;
        let dp = raw.dp.as_ref().map(dp).transpose()?;
        Ok(Self {
            aggregation,
            attack,
            dp,
            net: net_config(&raw)?,
            churn: churn_spec(raw.churn.as_ref(), peers)?,
            step_time: StepTime {
                mean_s: link.step_time_mean_s,
                sigma: link.step_time_sigma,
            },
            partition: partition_scheme(&raw.partition),
            strategy,
            local_work,
            name: raw.name,
            clients: raw.clients,
            rounds: raw.rounds,
            clients_per_round: raw.clients_per_round,
            batch_size: raw.batch_size,
            local_lr: raw.local_lr,
            round_deadline_s: raw.round_deadline_s,
        })
    }
}

fn check_counts(raw: &RawFlScenario) -> Result<(), FlScenarioError> {
    let counts = [
        ("clients", raw.clients),
        ("rounds", raw.rounds),
        ("clients_per_round", raw.clients_per_round),
        ("batch_size", raw.batch_size),
        ("local_epochs", raw.local_epochs.unwrap_or(1)),
        ("local_steps", raw.local_steps.unwrap_or(1)),
    ];
    if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
        return Err(FlScenarioError::Zero(name));
    }
    if raw.clients_per_round > raw.clients {
        return Err(FlScenarioError::PerRound {
            per_round: raw.clients_per_round,
            clients: raw.clients,
        });
    }
    Ok(())
}

fn attack(raw: &RawAttack) -> Result<FlAttack, FlScenarioError> {
    if !(0.0..=1.0).contains(&raw.fraction) {
        return Err(FlScenarioError::Attack);
    }
    let kind = match raw.kind.as_str() {
        "sign-flip" => Attack::SignFlip {
            lambda: raw.lambda.unwrap_or(1.0),
        },
        "scaled" => Attack::Scaled {
            lambda: raw.lambda.unwrap_or(10.0),
        },
        "gaussian-noise" => Attack::GaussianNoise {
            sigma: raw.sigma.unwrap_or(1.0),
        },
        _ => return Err(FlScenarioError::Attack),
    };
    Ok(FlAttack {
        fraction: raw.fraction,
        kind,
    })
}

fn dp(raw: &RawDp) -> Result<FlDp, FlScenarioError> {
    if !(raw.delta > 0.0 && raw.delta < 1.0) {
        return Err(FlScenarioError::Delta);
    }
    Ok(FlDp {
        mechanism: GaussianMechanism::new(raw.clip, raw.noise_multiplier)?,
        delta: raw.delta,
    })
}

fn check_partition(raw: &RawPartitionScheme) -> Result<(), FlScenarioError> {
    match *raw {
        RawPartitionScheme::Dirichlet { alpha } | RawPartitionScheme::Quantity { alpha }
            if !(alpha > 0.0 && alpha.is_finite()) =>
        {
            Err(FlScenarioError::Partition(
                "alpha must be positive and finite",
            ))
        }
        RawPartitionScheme::Shards {
            classes_per_client: 0,
        } => Err(FlScenarioError::Partition(
            "classes_per_client must be >= 1",
        )),
        _ => Ok(()),
    }
}

fn net_config(raw: &RawFlScenario) -> Result<NetConfig, NetConfigError> {
    let us = |ms: f64| (ms * 1000.0).round().max(0.0) as u64;
    let server = PeerLink {
        up_bytes_per_s: raw.server_link.up_mbit_s * MBIT_BYTES,
        down_bytes_per_s: raw.server_link.down_mbit_s * MBIT_BYTES,
        latency_us: us(raw.server_link.latency_ms),
        site: None,
    };
    let client = PeerLink {
        up_bytes_per_s: raw.client_link.up_mbit_s * MBIT_BYTES,
        down_bytes_per_s: raw.client_link.down_mbit_s * MBIT_BYTES,
        latency_us: us(raw.client_link.latency_ms),
        site: None,
    };
    let mut peers = vec![server];
    peers.extend(std::iter::repeat_n(client, raw.clients as usize));
    NetConfig::new(peers, Vec::new(), LossModel::None)
}

fn partition_scheme(raw: &RawPartitionScheme) -> PartitionScheme {
    match *raw {
        RawPartitionScheme::Iid => PartitionScheme::Iid,
        RawPartitionScheme::Dirichlet { alpha } => PartitionScheme::Dirichlet { alpha },
        RawPartitionScheme::Shards { classes_per_client } => {
            PartitionScheme::Shards { classes_per_client }
        }
        RawPartitionScheme::Quantity { alpha } => PartitionScheme::Quantity { alpha },
    }
}

/// The named strategy with the scenario's overrides on its defaults.
fn strategy_config(raw: &RawStrategy) -> Result<StrategyConfig, StrategyError> {
    let base: StrategyConfig = raw.name.parse()?;
    Ok(match base {
        StrategyConfig::FedAvg { server_lr } => StrategyConfig::FedAvg {
            server_lr: raw.server_lr.unwrap_or(server_lr),
        },
        StrategyConfig::FedAvgM {
            server_lr,
            momentum,
        } => StrategyConfig::FedAvgM {
            server_lr: raw.server_lr.unwrap_or(server_lr),
            momentum: raw.momentum.unwrap_or(momentum),
        },
        StrategyConfig::FedProx { mu } => StrategyConfig::FedProx {
            mu: raw.mu.unwrap_or(mu),
        },
        StrategyConfig::FedOpt {
            rule,
            server_lr,
            beta1,
            beta2,
            tau,
        } => StrategyConfig::FedOpt {
            rule,
            server_lr: raw.server_lr.unwrap_or(server_lr),
            beta1: raw.beta1.unwrap_or(beta1),
            beta2: raw.beta2.unwrap_or(beta2),
            tau: raw.tau.unwrap_or(tau),
        },
        StrategyConfig::Scaffold { server_lr } => StrategyConfig::Scaffold {
            server_lr: raw.server_lr.unwrap_or(server_lr),
        },
        StrategyConfig::Diloco {
            outer_lr,
            outer_momentum,
        } => StrategyConfig::Diloco {
            outer_lr: raw.server_lr.unwrap_or(outer_lr),
            outer_momentum: raw.momentum.unwrap_or(outer_momentum),
        },
        other => other,
    })
}

/// Where the digits set lives by default (relative to the working directory).
#[must_use]
pub fn default_data_path() -> PathBuf {
    PathBuf::from("data/digits.safetensors")
}
