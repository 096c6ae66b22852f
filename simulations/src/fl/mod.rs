//! Federated learning on the simulator: thousands of virtual clients on the digits set, each
//! training on its own partition (time-multiplexed on one LibTorch MLP), with availability from
//! the churn model and simulated wall-clock from the flow network and the compute model.
//!
//! One round: sample `clients_per_round` of the clients that are up and hold data; the
//! aggregator (peer 0) sends each the model; each computes `steps × step time` and uploads its
//! message; clients that churn away or miss the deadline are dropped ([`timing`]). Then the
//! clients whose upload arrived train for real ([`train`]), their messages are averaged, the
//! strategy's aggregate step moves the global model, and the test set scores it.
//!
//! Everything derives from one seed: model weights, partition, sampling, batches, compute times,
//! churn. LibTorch runs on one thread, so the same seed gives byte-identical CSVs.

mod report;
mod scenario;
mod timing;
mod train;

pub use report::{CSV_HEADER, FlReportError, rounds_csv, write_all};
pub use scenario::{FlScenario, FlScenarioError, LocalWork, RawFlScenario, default_data_path};
pub use train::TrainError;

use crate::churn::ChurnProcess;
use crate::engine::Simulation;
use crate::net::Network;
use crate::rng::{Domain, SeedTree};
use crate::time::SimTime;
use gradmesh_federated::dp::DpError;
use gradmesh_federated::dp::rdp::RdpAccountant;
use gradmesh_federated::partition::{LabelHistogram, Partition, PartitionError};
use gradmesh_federated::robust::RobustError;
use gradmesh_federated::strategy::{ClientState, Strategy, StrategyError, weighted_mean};
use rand::RngCore as _;
pub use scenario::{FlAttack, FlDp};
use std::path::Path;
use thiserror::Error;
use timing::{FlTiming, Timer, TimingConfig, peer_of};
use train::LocalTrainer;

/// Digit classes.
const CLASSES: usize = 10;
/// Simulator events allowed per round before the run is declared stalled.
const EVENTS_PER_ROUND_MAX: u64 = 50_000_000;

/// A federated run that could not complete.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FlError {
    /// The data file is missing or malformed.
    #[error("data: {0}")]
    Data(String),
    /// Partitioning failed.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// A strategy step failed.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// A robust aggregation rule refused the messages.
    #[error(transparent)]
    Robust(#[from] RobustError),
    /// The DP mechanism or accountant refused its inputs.
    #[error(transparent)]
    Dp(#[from] DpError),
    /// Local training or evaluation failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A round did not close within the event bound.
    #[error("round {round} did not close within {events} simulator events")]
    Stalled {
        /// The round.
        round: u32,
        /// The bound.
        events: u64,
    },
}

/// One row of `fl_rounds.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct FlRecord {
    /// Round number (1-based).
    pub round: u32,
    /// Simulated time at the round's close, seconds.
    pub sim_time_s: f64,
    /// Simulated duration of the round, seconds.
    pub round_s: f64,
    /// Clients sampled.
    pub sampled: usize,
    /// Clients whose update was aggregated.
    pub completed: usize,
    /// Sampled clients that churned away or missed the deadline.
    pub dropped: usize,
    /// Clients up when the round closed.
    pub clients_up: usize,
    /// Samples processed by local SGD this round (steps × batch, completed clients).
    pub samples: u64,
    /// Test accuracy of the new global model.
    pub accuracy: f64,
    /// Mean test cross-entropy of the new global model.
    pub loss: f32,
    /// ε spent so far for the scenario's δ (DP runs only).
    pub epsilon: Option<f64>,
}

/// A finished run.
#[derive(Debug)]
pub struct FlSummary {
    /// One record per round.
    pub records: Vec<FlRecord>,
    /// Per-client label counts of the partition.
    pub histogram: LabelHistogram,
    /// Test accuracy of the initial model.
    pub initial_accuracy: f64,
    /// Simulator events processed.
    pub events: u64,
}

/// Runs `scenario` with master `seed` on the digits file at `data`; `on_round` sees each record.
pub fn run(
    scenario: &FlScenario,
    seed: u64,
    data: &Path,
    mut on_round: impl FnMut(&FlRecord),
) -> Result<FlSummary, FlError> {
    gradmesh_kernels::set_torch_threads(1);
    let seeds = SeedTree::new(seed);
    let labels = train::read_train_labels(data).map_err(FlError::Data)?;
    let partition_seed = seeds.rng(Domain::Topology, 0xFA).next_u64();
    let partition = Partition::new(
        &labels,
        CLASSES,
        scenario.clients as usize,
        scenario.partition,
        partition_seed,
    )?;
    let mut fl = Federation::new(scenario, seeds, data, partition)?;
    let initial_accuracy = fl.learner.evaluate(&fl.global)?.accuracy;
    let mut sim = timing_simulation(scenario, fl.timing_config(), seeds);
    let mut records = Vec::with_capacity(scenario.rounds as usize);
    for round in 1..=scenario.rounds {
        let now = sim.now();
        sim.schedule(now, Timer::StartRound { round });
        // Churn never stops, so the queue is never idle: the predicate or the bound ends this.
        let _ = sim.run_until(|app, _| app.closed(round).is_some(), EVENTS_PER_ROUND_MAX);
        let Some(timing) = sim.app().closed(round).cloned() else {
            return Err(FlError::Stalled {
                round,
                events: EVENTS_PER_ROUND_MAX,
            });
        };
        let samples = fl.learn(round, &timing.completed)?;
        let eval = fl.learner.evaluate(&fl.global)?;
        let record = FlRecord {
            round,
            sim_time_s: timing.end.as_secs_f64(),
            round_s: timing.end.as_secs_f64() - timing.start.as_secs_f64(),
            sampled: timing.sampled.len(),
            completed: timing.completed.len(),
            dropped: timing.sampled.len() - timing.completed.len(),
            clients_up: sim.app().up_count(),
            samples,
            accuracy: eval.accuracy,
            loss: eval.loss,
            epsilon: fl.epsilon()?,
        };
        on_round(&record);
        records.push(record);
    }
    Ok(FlSummary {
        records,
        histogram: fl.partition.histogram(&labels, CLASSES),
        initial_accuracy,
        events: sim.events(),
    })
}

/// The learning side of a run: the model, the strategy, every client's state and data.
struct Federation<'a> {
    scenario: &'a FlScenario,
    seeds: SeedTree,
    partition: Partition,
    strategy: Box<dyn Strategy>,
    learner: LocalTrainer,
    global: Vec<f32>,
    states: Vec<ClientState>,
    steps_of_client: Vec<u32>,
    /// `attacker[c]`: client c rewrites its messages with the scenario's attack.
    attacker: Vec<bool>,
    accountant: Option<RdpAccountant>,
}

impl<'a> Federation<'a> {
    fn new(
        scenario: &'a FlScenario,
        seeds: SeedTree,
        data: &Path,
        partition: Partition,
    ) -> Result<Self, FlError> {
        let model_seed = seeds.rng(Domain::Topology, 0xFB).next_u64();
        let learner = LocalTrainer::new(
            data,
            model_seed,
            scenario.batch_size as usize,
            scenario.local_lr,
        )?;
        let clients = scenario.clients as usize;
        Ok(Self {
            strategy: scenario.strategy.build()?,
            global: learner.parameters().to_vec(),
            steps_of_client: local_steps(scenario, &partition),
            states: vec![ClientState::default(); clients],
            attacker: attackers(scenario, clients, seeds),
            accountant: scenario.dp.map(|_| RdpAccountant::new()),
            scenario,
            seeds,
            partition,
            learner,
        })
    }

    fn timing_config(&self) -> TimingConfig {
        let message_bytes = 4 * self.strategy.message_len(self.global.len()) as u64;
        TimingConfig {
            clients_per_round: self.scenario.clients_per_round as usize,
            has_data: self
                .partition
                .clients()
                .iter()
                .map(|c| !c.is_empty())
                .collect(),
            steps_of_client: self.steps_of_client.clone(),
            download_bytes: message_bytes,
            upload_bytes: message_bytes,
            deadline_s: self.scenario.round_deadline_s,
            idle_retry_s: 10.0,
        }
    }

    /// Trains the clients whose update arrived, aggregates, and steps the global model.
    /// Returns the samples processed.
    fn learn(&mut self, round: u32, completed: &[usize]) -> Result<u64, FlError> {
        let mut messages = Vec::with_capacity(completed.len());
        let mut samples = 0_u64;
        let batch = self.scenario.batch_size as usize;
        for &c in completed {
            let indices = &self.partition.clients()[c];
            let stream = (u64::from(round) << 32) | c as u64;
            let mut rng = self.seeds.rng(Domain::Runner, stream);
            let steps = self.steps_of_client[c];
            let mut m = self.learner.train_client(
                self.strategy.as_ref(),
                &self.global,
                &mut self.states[c],
                indices,
                steps,
                &mut rng,
            )?;
            if let (true, Some(attack)) = (self.attacker[c], self.scenario.attack) {
                attack.kind.apply(&mut m, stream);
            }
            samples += u64::from(steps) * batch.min(indices.len()) as u64;
            messages.push((m, indices.len()));
        }
        if messages.is_empty() {
            return Ok(samples);
        }
        let aggregate = self.aggregate(round, &messages)?;
        let with_data = self
            .partition
            .clients()
            .iter()
            .filter(|c| !c.is_empty())
            .count();
        let fraction = messages.len() as f64 / with_data.max(1) as f64;
        self.strategy
            .server_step(&mut self.global, &aggregate, fraction)?;
        Ok(samples)
    }

    /// DP-FedAvg when the scenario has `[dp]`, else its robust rule, else the strategy's mean.
    fn aggregate(
        &mut self,
        round: u32,
        messages: &[(Vec<f32>, usize)],
    ) -> Result<Vec<f32>, FlError> {
        let views: Vec<&[f32]> = messages.iter().map(|(m, _)| m.as_slice()).collect();
        if let Some(dp) = self.scenario.dp {
            let mut out = vec![0.0; views[0].len()];
            let noise_seed = self.seeds.rng(Domain::Loss, u64::from(round)).next_u64();
            let denominator = f64::from(self.scenario.clients_per_round);
            dp.mechanism
                .aggregate(&views, denominator, noise_seed, &mut out)?;
            if let Some(acc) = &mut self.accountant {
                let q =
                    f64::from(self.scenario.clients_per_round) / f64::from(self.scenario.clients);
                acc.compose(q, dp.mechanism.noise_multiplier(), 1)?;
            }
            return Ok(out);
        }
        if let Some(rule) = self.scenario.aggregation {
            let weights: Vec<u32> = messages
                .iter()
                .map(|(_, n)| self.strategy.aggregation_weight(*n) as u32)
                .collect();
            return Ok(rule.apply(&views, &weights)?);
        }
        let weighted: Vec<(Vec<f32>, f64)> = messages
            .iter()
            .map(|(m, n)| (m.clone(), self.strategy.aggregation_weight(*n)))
            .collect();
        Ok(weighted_mean(&weighted)?)
    }

    /// ε spent so far (DP runs only).
    fn epsilon(&self) -> Result<Option<f64>, FlError> {
        match (&self.accountant, self.scenario.dp) {
            (Some(acc), Some(dp)) => Ok(Some(acc.epsilon(dp.delta)?.epsilon)),
            _ => Ok(None),
        }
    }
}

/// A seeded pick of exactly round(fraction · clients) attackers.
fn attackers(scenario: &FlScenario, clients: usize, seeds: SeedTree) -> Vec<bool> {
    let mut out = vec![false; clients];
    let Some(attack) = scenario.attack else {
        return out;
    };
    let k = ((attack.fraction * clients as f64).round() as usize).min(clients);
    let mut order: Vec<usize> = (0..clients).collect();
    let mut rng = seeds.rng(Domain::Topology, 0xFC);
    for i in 0..k {
        let j = rand::Rng::random_range(&mut rng, i..clients);
        order.swap(i, j);
    }
    for &c in &order[..k] {
        out[c] = true;
    }
    out
}

/// Local steps per client per round.
fn local_steps(scenario: &FlScenario, partition: &Partition) -> Vec<u32> {
    let b = scenario.batch_size as usize;
    partition
        .clients()
        .iter()
        .map(|c| match scenario.local_work {
            LocalWork::Steps(s) => s,
            LocalWork::Epochs(e) => e * u32::try_from(c.len().div_ceil(b)).unwrap_or(u32::MAX),
        })
        .collect()
}

/// The network with the aggregator and every client, churn timers armed, initially-down clients
/// taken down.
fn timing_simulation(
    scenario: &FlScenario,
    config: TimingConfig,
    seeds: SeedTree,
) -> Simulation<FlTiming> {
    let clients = scenario.clients as usize;
    let churn = ChurnProcess::new(scenario.churn.clone(), clients + 1, seeds);
    let compute = timing::compute_model(scenario.step_time, clients, seeds);
    let mut app = FlTiming::new(config, compute, churn, seeds);
    let timers = app.initial_timers();
    let down = app.initially_down();
    let mut net = Network::new(scenario.net.clone(), seeds);
    for c in down {
        net.handle_peer_down(SimTime::ZERO, peer_of(c));
    }
    let mut sim = Simulation::new(app, net);
    for (at, timer) in timers {
        sim.schedule(at, timer);
    }
    sim
}

/// The strategy's name, for reports.
#[must_use]
pub fn strategy_name(scenario: &FlScenario) -> &'static str {
    scenario
        .strategy
        .build()
        .map_or("invalid", |s: Box<dyn Strategy>| s.name())
}
