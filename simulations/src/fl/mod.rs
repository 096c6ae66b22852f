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
use gradmesh_federated::partition::{LabelHistogram, Partition, PartitionError};
use gradmesh_federated::strategy::{ClientState, Strategy, StrategyError, weighted_mean};
use rand::RngCore as _;
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
    let clients = scenario.clients as usize;
    let labels = train::read_train_labels(data).map_err(FlError::Data)?;
    let partition_seed = seeds.rng(Domain::Topology, 0xFA).next_u64();
    let partition = Partition::new(
        &labels,
        CLASSES,
        clients,
        scenario.partition,
        partition_seed,
    )?;
    let mut strategy = scenario.strategy.build()?;
    let model_seed = seeds.rng(Domain::Topology, 0xFB).next_u64();
    let mut learner = LocalTrainer::new(
        data,
        model_seed,
        scenario.batch_size as usize,
        scenario.local_lr,
    )?;
    let mut global = learner.parameters().to_vec();
    let initial_accuracy = learner.evaluate(&global)?.accuracy;
    let steps_of_client = local_steps(scenario, &partition);
    let message_bytes = 4 * strategy.message_len(global.len()) as u64;
    let config = TimingConfig {
        clients_per_round: scenario.clients_per_round as usize,
        has_data: partition.clients().iter().map(|c| !c.is_empty()).collect(),
        steps_of_client: steps_of_client.clone(),
        download_bytes: message_bytes,
        upload_bytes: message_bytes,
        deadline_s: scenario.round_deadline_s,
        idle_retry_s: 10.0,
    };
    let with_data = config.has_data.iter().filter(|&&d| d).count().max(1);
    let mut sim = timing_simulation(scenario, config, seeds);
    let mut states = vec![ClientState::default(); clients];
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
        let mut messages = Vec::with_capacity(timing.completed.len());
        let mut samples = 0_u64;
        for &c in &timing.completed {
            let indices = &partition.clients()[c];
            let mut rng = seeds.rng(Domain::Runner, (u64::from(round) << 32) | c as u64);
            let steps = steps_of_client[c];
            let m = learner.train_client(
                strategy.as_ref(),
                &global,
                &mut states[c],
                indices,
                steps,
                &mut rng,
            )?;
            samples += u64::from(steps) * (scenario.batch_size as usize).min(indices.len()) as u64;
            messages.push((m, strategy.aggregation_weight(indices.len())));
        }
        if !messages.is_empty() {
            let aggregate = weighted_mean(&messages)?;
            let fraction = messages.len() as f64 / with_data as f64;
            strategy.server_step(&mut global, &aggregate, fraction)?;
        }
        let eval = learner.evaluate(&global)?;
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
        };
        on_round(&record);
        records.push(record);
    }
    Ok(FlSummary {
        records,
        histogram: partition.histogram(&labels, CLASSES),
        initial_accuracy,
        events: sim.events(),
    })
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
