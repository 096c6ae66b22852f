//! The round runner: rounds of compute then all-reduce on the simulated network, under churn,
//! stragglers and partitions — the collective model that stands in for the protocol's round
//! machine until that machine drives the simulator.
//!
//! Rules (kept simple on purpose until the protocol integration):
//! - A round's participants are the peers that are up, in sync and on the majority side when it
//!   starts. Each draws a compute step time; a group starts its all-reduce when all of its
//!   members are ready (hivemind's matchmaking barrier).
//! - A member leaving mid-round (crash or partition) aborts its group's attempt; the survivors
//!   re-run the all-reduce at once as a new attempt (late messages of the old one are ignored).
//! - An attempt still running `attempt_timeout_s` after it started (a message was lost) is
//!   aborted and re-run the same way.
//! - A peer that comes back (or is healed from a partition) downloads `state_bytes` from a random
//!   in-sync peer before it may join a round; that is a resync.

mod groups;
mod state;

pub use groups::{grid_dims, moshpit_groups};

use crate::churn::{ChurnProcess, Transition};
use crate::collective::CollectiveMsg;
use crate::compute::ComputeModel;
use crate::engine::{Application, Outbox, RunOutcome, Simulation};
use crate::net::{Delivered, NetStats, Network, PeerIdx, RecomputeScope};
use crate::rng::{Domain, SeedTree};
use crate::scenario::{Scenario, Topology};
use crate::time::SimTime;
use rand_chacha::ChaCha8Rng;
use state::{PeerState, RoundState};

/// What runner messages carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMsg {
    /// A step of an all-reduce.
    Collective(CollectiveMsg),
    /// The model state for a rejoining peer.
    State,
}

impl From<CollectiveMsg> for RunMsg {
    fn from(m: CollectiveMsg) -> Self {
        Self::Collective(m)
    }
}

/// The runner's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTimer {
    /// Set up churn and partitions, start round 0.
    Init,
    /// `peer` finished computing its gradient for `round`.
    ComputeDone {
        /// The peer.
        peer: PeerIdx,
        /// The round.
        round: u32,
    },
    /// Group attempt `0`'s deadline: if still running, it is aborted and re-run.
    AttemptTimeout(u32),
    /// A churn transition is due.
    Churn(Transition),
    /// Partition `0` starts.
    PartitionStart(usize),
    /// Partition `0` heals.
    PartitionEnd(usize),
}

/// One committed round, as written to the CSV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundRecord {
    /// Round index from 0.
    pub round: u32,
    /// When the round started, seconds.
    pub start_s: f64,
    /// When it committed, seconds.
    pub end_s: f64,
    /// Participants at the start.
    pub peers: u32,
    /// Mean bytes each committing peer sent in its final attempt.
    pub bytes_per_peer: u64,
    /// Peers that committed the round.
    pub commits: u32,
    /// Group attempts aborted by a member leaving.
    pub aborts: u32,
    /// Resyncs completed since the previous commit.
    pub resyncs: u32,
    /// Peers up at commit.
    pub active_peers: u32,
    /// Groups the round ran in.
    pub groups: u32,
}

impl RoundRecord {
    /// Round duration in seconds (compute plus all-reduce, including aborted attempts).
    #[must_use]
    pub fn seconds(&self) -> f64 {
        self.end_s - self.start_s
    }
}

/// The round runner application.
#[derive(Debug)]
pub struct RoundRunner {
    rounds: u32,
    gradient_bytes: u64,
    state_bytes: u64,
    topology: Topology,
    attempt_timeout_us: u64,
    up_bytes_per_s: Option<Vec<f64>>,
    partitions: Vec<crate::scenario::Partition>,
    compute: ComputeModel,
    churn: ChurnProcess,
    rng: ChaCha8Rng,
    peers: Vec<PeerState>,
    next_round: u32,
    current: Option<RoundState>,
    next_attempt: u32,
    resyncs_pending: u32,
    records: Vec<RoundRecord>,
}

impl RoundRunner {
    /// A runner for `scenario`, all randomness derived from `seeds`.
    #[must_use]
    pub fn new(scenario: &Scenario, seeds: SeedTree) -> Self {
        let n = scenario.peers();
        let up = scenario
            .net()
            .peers()
            .iter()
            .map(|p| p.up_bytes_per_s)
            .collect();
        Self {
            rounds: scenario.rounds(),
            gradient_bytes: scenario.gradient_bytes(),
            state_bytes: scenario.state_bytes(),
            topology: scenario.topology(),
            attempt_timeout_us: crate::time::secs_to_micros_ceil(scenario.attempt_timeout_s()),
            up_bytes_per_s: scenario.spans_by_bandwidth().then_some(up),
            partitions: scenario.partitions().to_vec(),
            compute: ComputeModel::new(scenario.step_times(), scenario.stragglers(), seeds),
            churn: ChurnProcess::new(scenario.churn().clone(), n, seeds),
            rng: seeds.rng(Domain::Runner, 0),
            peers: vec![PeerState::default(); n],
            next_round: 0,
            current: None,
            next_attempt: 0,
            resyncs_pending: 0,
            records: Vec::new(),
        }
    }

    /// Whether every round has committed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.records.len() >= self.rounds as usize
    }

    /// Committed rounds so far.
    #[must_use]
    pub fn records(&self) -> &[RoundRecord] {
        &self.records
    }
}

impl Application for RoundRunner {
    type Payload = RunMsg;
    type Timer = RunTimer;

    fn handle_message(
        &mut self,
        now: SimTime,
        msg: Delivered<RunMsg>,
        out: &mut Outbox<RunMsg, RunTimer>,
    ) {
        match msg.payload {
            RunMsg::Collective(tag) => self.on_collective(now, &msg, tag, out),
            RunMsg::State => self.on_state(now, msg.from, msg.to, out),
        }
    }

    fn handle_timer(&mut self, now: SimTime, timer: RunTimer, out: &mut Outbox<RunMsg, RunTimer>) {
        match timer {
            RunTimer::Init => self.on_init(now, out),
            RunTimer::ComputeDone { peer, round } => self.on_compute_done(now, peer, round, out),
            RunTimer::AttemptTimeout(attempt) => self.on_attempt_timeout(now, attempt, out),
            RunTimer::Churn(t) => self.on_churn(now, t, out),
            RunTimer::PartitionStart(i) => self.on_partition_start(now, i, out),
            RunTimer::PartitionEnd(i) => self.on_partition_end(now, i, out),
        }
    }
}

/// Why [`run`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Every round committed.
    Finished,
    /// Simulated time passed the scenario's bound.
    TimeLimit,
    /// Nothing left to happen (e.g. every peer down for good).
    Stalled,
    /// The event bound was hit.
    EventLimit,
}

/// The result of [`run`].
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Committed rounds.
    pub records: Vec<RoundRecord>,
    /// Why the run stopped.
    pub stop: StopReason,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_time: SimTime,
    /// Network counters.
    pub net: NetStats,
}

/// Hard bound on events of one run: far above any scenario here, low enough to end a livelock.
pub const RUN_EVENTS_MAX: u64 = 20_000_000_000;

/// Runs `scenario` with `seed`, calling `on_round` after each commit.
pub fn run(scenario: &Scenario, seed: u64, on_round: impl FnMut(&RoundRecord)) -> RunSummary {
    run_with_scope(scenario, seed, RecomputeScope::Component, on_round)
}

/// [`run`] with a chosen max-min recomputation scope (for measuring its cost).
pub fn run_with_scope(
    scenario: &Scenario,
    seed: u64,
    scope: RecomputeScope,
    mut on_round: impl FnMut(&RoundRecord),
) -> RunSummary {
    let seeds = SeedTree::new(seed);
    let mut net = Network::new(scenario.net().clone(), seeds);
    net.set_recompute_scope(scope);
    let mut sim = Simulation::new(RoundRunner::new(scenario, seeds), net);
    sim.schedule(SimTime::ZERO, RunTimer::Init);
    let t_max = SimTime::from_secs_f64(scenario.max_sim_time_s());
    let mut reported = 0;
    let stop = loop {
        let seen = reported;
        let outcome = sim.run_until(
            |app, now| app.records().len() > seen || now > t_max,
            RUN_EVENTS_MAX.saturating_sub(sim.events()),
        );
        for r in &sim.app().records()[reported..] {
            on_round(r);
        }
        reported = sim.app().records().len();
        match outcome {
            _ if sim.app().is_finished() => break StopReason::Finished,
            _ if sim.now() > t_max => break StopReason::TimeLimit,
            RunOutcome::Reached => {}
            RunOutcome::Idle => break StopReason::Stalled,
            RunOutcome::EventLimit => break StopReason::EventLimit,
        }
    };
    RunSummary {
        stop,
        events: sim.events(),
        sim_time: sim.now(),
        net: sim.net().stats(),
        records: sim.into_app().records,
    }
}
