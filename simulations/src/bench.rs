//! Scale benchmark: many homogeneous peers, several rounds of a large all-reduce, as a global
//! recursive halving/doubling butterfly or as Moshpit group averaging for several group sizes.
//!
//! A global all-to-all among N = 10,000 peers is N(N−1) ≈ 10^8 flows per phase; group averaging
//! replaces it by N(g−1) flows per phase and needs ⌈log_g N⌉ rounds to reach the global mean.

use crate::collective::Algorithm;
use crate::net::RecomputeScope;
use crate::runner::{self, RunSummary, grid_dims};
use crate::scenario::{RawClass, RawScenario, Scenario, ScenarioError};

/// What the benchmark simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BenchShape {
    /// One global recursive halving/doubling all-reduce per round.
    Butterfly,
    /// All-to-all inside Moshpit grid groups of this size.
    Moshpit(u32),
}

impl BenchShape {
    /// Label for tables.
    #[must_use]
    pub fn label(self) -> String {
        match self {
            Self::Butterfly => "butterfly (global)".to_owned(),
            Self::Moshpit(g) => format!("moshpit g={g}"),
        }
    }
}

/// Benchmark parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchConfig {
    /// Peers.
    pub peers: u32,
    /// Rounds.
    pub rounds: u32,
    /// Bytes all-reduced per round.
    pub bytes: u64,
    /// Access-link bandwidth per direction, Mbit/s.
    pub mbit_s: f64,
    /// Per-endpoint latency share, milliseconds (one-way latency is twice this).
    pub latency_ms: f64,
    /// Compute step time in seconds (0: communication only).
    pub step_s: f64,
    /// Master seed.
    pub seed: u64,
    /// Max-min recomputation scope (component by default; global to measure the saving).
    pub scope: RecomputeScope,
}

/// What one benchmark shape produced (wall time and memory are measured by the caller).
#[derive(Debug, Clone)]
pub struct BenchOutcome {
    /// The shape.
    pub shape: BenchShape,
    /// The run.
    pub summary: RunSummary,
    /// Mean simulated seconds per round.
    pub round_s_mean: f64,
    /// Rounds of group averaging needed to reach the global mean (1 for a global all-reduce).
    pub rounds_to_global_mean: u32,
    /// Mean bytes a peer sends per round.
    pub bytes_per_peer_mean: f64,
}

impl BenchOutcome {
    /// Bytes each peer sends until every peer holds the global mean.
    #[must_use]
    pub fn bytes_to_global_mean(&self) -> f64 {
        f64::from(self.rounds_to_global_mean) * self.bytes_per_peer_mean
    }

    /// Simulated seconds until every peer holds the global mean.
    #[must_use]
    pub fn time_to_global_mean_s(&self) -> f64 {
        self.round_s_mean * f64::from(self.rounds_to_global_mean)
    }
}

/// The scenario the benchmark runs for `shape`.
pub fn scenario(cfg: &BenchConfig, shape: BenchShape) -> Result<Scenario, ScenarioError> {
    let (algorithm, group_size) = match shape {
        BenchShape::Butterfly => ("butterfly", None),
        BenchShape::Moshpit(g) => ("moshpit", Some(g)),
    };
    let class = RawClass {
        name: "bench".to_owned(),
        fraction: 1.0,
        step_time_mean_s: cfg.step_s.max(1e-6),
        step_time_sigma: 0.0,
        up_mbit_s: cfg.mbit_s,
        down_mbit_s: cfg.mbit_s,
        latency_ms: cfg.latency_ms,
        site: None,
    };
    Scenario::try_from(RawScenario {
        name: format!("bench-{}", shape.label()),
        peers: cfg.peers,
        rounds: cfg.rounds,
        gradient_bytes: Some(cfg.bytes),
        state_bytes: 0,
        algorithm: algorithm.to_owned(),
        group_size,
        spans_by_bandwidth: false,
        max_sim_time_s: None,
        attempt_timeout_s: None,
        classes: vec![class],
        sites: Vec::new(),
        stragglers: None,
        churn: None,
        loss: None,
        partitions: Vec::new(),
        protocol: None,
    })
}

/// Runs one shape.
pub fn run(cfg: &BenchConfig, shape: BenchShape) -> Result<BenchOutcome, ScenarioError> {
    let scenario = scenario(cfg, shape)?;
    let summary = runner::run_with_scope(&scenario, cfg.seed, cfg.scope, |_| {});
    let n = summary.records.len().max(1) as f64;
    let round_s_mean = summary
        .records
        .iter()
        .map(runner::RoundRecord::seconds)
        .sum::<f64>()
        / n;
    let bytes_per_peer_mean = summary
        .records
        .iter()
        .map(|r| r.bytes_per_peer as f64)
        .sum::<f64>()
        / n;
    let rounds_to_global_mean = match shape {
        BenchShape::Butterfly => 1,
        BenchShape::Moshpit(g) => grid_dims(cfg.peers as usize, g as usize),
    };
    Ok(BenchOutcome {
        shape,
        summary,
        round_s_mean,
        rounds_to_global_mean,
        bytes_per_peer_mean,
    })
}

/// The α-β time of one global all-to-all (hivemind butterfly) among `cfg.peers`, and its flows
/// per round: what the benchmark does not simulate at 10,000 peers.
#[must_use]
pub fn global_all_to_all_estimate(cfg: &BenchConfig) -> (f64, u64) {
    let p = cfg.peers as usize;
    let beta = 8.0 / (cfg.mbit_s * 1e6);
    let alpha = 2.0 * cfg.latency_ms / 1e3;
    let secs = Algorithm::AllToAll.closed_form_secs(p, cfg.bytes, alpha, beta);
    let flows = 2 * u64::from(cfg.peers) * u64::from(cfg.peers.saturating_sub(1));
    (secs, flows)
}
