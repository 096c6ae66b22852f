//! The simulated clock of a federated round: the aggregator (peer 0) sends the model to every
//! sampled client, each client computes its local steps, then uploads its message; churn takes
//! clients down mid-round (their flows die with them) and a deadline drops stragglers.
//!
//! This is an [`Application`] on the simulator's flow network, so downloads share the
//! aggregator's uplink max-min fairly and uploads share its downlink. The learning itself runs
//! outside the event loop, after the round closes, for the clients whose upload arrived: a
//! client's update depends only on the round's model and its own data, so the order in simulated
//! time does not change it.

use crate::churn::{ChurnProcess, Transition};
use crate::compute::{ComputeModel, Stragglers};
use crate::engine::{Application, Outbox};
use crate::net::{Delivered, PeerIdx};
use crate::rng::{Domain, SeedTree};
use crate::time::SimTime;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The aggregator's peer index.
pub(crate) const SERVER: PeerIdx = PeerIdx(0);

/// Client `c` is simulator peer `c + 1`.
pub(crate) fn peer_of(client: usize) -> PeerIdx {
    PeerIdx(u32::try_from(client + 1).unwrap_or(u32::MAX))
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Msg {
    /// The round's model (and strategy state) to a client.
    Model { round: u32 },
    /// A client's update to the aggregator.
    Update { round: u32, client: usize },
}

/// Timer kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Sample clients and send them the model.
    StartRound { round: u32 },
    /// A client finished its local steps.
    ComputeDone { round: u32, client: usize },
    /// Drop whoever has not uploaded.
    Deadline { round: u32 },
    /// A client goes up or down.
    Churn(Transition),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Done,
    Dropped,
}

/// What one round looked like on the simulated clock.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RoundTiming {
    /// Clients sampled, ascending.
    pub(crate) sampled: Vec<usize>,
    /// Clients whose update arrived, ascending.
    pub(crate) completed: Vec<usize>,
    /// When the round started and closed.
    pub(crate) start: SimTime,
    pub(crate) end: SimTime,
}

/// Fixed per-run inputs of the timing model.
#[derive(Debug)]
pub(crate) struct TimingConfig {
    pub(crate) clients_per_round: usize,
    /// Local steps each client runs per round.
    pub(crate) steps_of_client: Vec<u32>,
    /// Clients with at least one sample (only they are sampled).
    pub(crate) has_data: Vec<bool>,
    pub(crate) download_bytes: u64,
    pub(crate) upload_bytes: u64,
    pub(crate) deadline_s: Option<f64>,
    /// Wait before re-trying a round when no client with data is up.
    pub(crate) idle_retry_s: f64,
}

/// The timing application.
#[derive(Debug)]
pub(crate) struct FlTiming {
    config: TimingConfig,
    compute: ComputeModel,
    churn: ChurnProcess,
    rng: ChaCha8Rng,
    up: Vec<bool>,
    round: u32,
    phase: Vec<(usize, Phase)>,
    timing: RoundTiming,
    closed: Option<u32>,
}

impl FlTiming {
    pub(crate) fn new(
        config: TimingConfig,
        compute: ComputeModel,
        churn: ChurnProcess,
        seeds: SeedTree,
    ) -> Self {
        let clients = config.has_data.len();
        Self {
            config,
            compute,
            churn,
            rng: seeds.rng(Domain::Runner, 0xF1),
            up: vec![true; clients],
            round: 0,
            phase: Vec::new(),
            timing: RoundTiming::default(),
            closed: None,
        }
    }

    /// Initial availability and the first churn transition of every client, as timers.
    pub(crate) fn initial_timers(&mut self) -> Vec<(SimTime, Timer)> {
        let mut timers = Vec::new();
        for c in 0..self.up.len() {
            let peer = peer_of(c);
            self.up[c] = self.churn.is_initially_up(peer);
            if let Some(t) = self.churn.first(peer) {
                timers.push((t.at, Timer::Churn(t)));
            }
        }
        timers
    }

    /// Clients down at t = 0 (the driver tells the network).
    pub(crate) fn initially_down(&self) -> Vec<usize> {
        (0..self.up.len()).filter(|&c| !self.up[c]).collect()
    }

    /// The closed round's timing, if `round` has closed.
    pub(crate) fn closed(&self, round: u32) -> Option<&RoundTiming> {
        (self.closed == Some(round)).then_some(&self.timing)
    }

    /// Clients up right now.
    pub(crate) fn up_count(&self) -> usize {
        self.up.iter().filter(|&&u| u).count()
    }

    fn start_round(&mut self, now: SimTime, round: u32, out: &mut Outbox<Msg, Timer>) {
        let mut eligible: Vec<usize> = (0..self.up.len())
            .filter(|&c| self.up[c] && self.config.has_data[c])
            .collect();
        if eligible.is_empty() {
            let retry = now.plus(core::time::Duration::from_secs_f64(
                self.config.idle_retry_s,
            ));
            out.set_timer(retry, Timer::StartRound { round });
            return;
        }
        // Partial Fisher–Yates: the first k of a seeded shuffle.
        let k = self.config.clients_per_round.min(eligible.len());
        for i in 0..k {
            let j = self.rng.random_range(i..eligible.len());
            eligible.swap(i, j);
        }
        let mut sampled = eligible[..k].to_vec();
        sampled.sort_unstable();
        self.round = round;
        self.closed = None;
        self.phase = sampled.iter().map(|&c| (c, Phase::Waiting)).collect();
        self.timing = RoundTiming {
            sampled: sampled.clone(),
            completed: Vec::new(),
            start: now,
            end: now,
        };
        for &c in &sampled {
            out.send(
                SERVER,
                peer_of(c),
                self.config.download_bytes,
                Msg::Model { round },
            );
        }
        if let Some(d) = self.config.deadline_s {
            out.set_timer(
                now.plus(core::time::Duration::from_secs_f64(d)),
                Timer::Deadline { round },
            );
        }
    }

    fn set_phase(&mut self, client: usize, phase: Phase) {
        if let Ok(i) = self.phase.binary_search_by_key(&client, |&(c, _)| c)
            && self.phase[i].1 == Phase::Waiting
        {
            self.phase[i].1 = phase;
        }
    }

    fn is_waiting(&self, round: u32, client: usize) -> bool {
        self.closed.is_none()
            && round == self.round
            && self
                .phase
                .binary_search_by_key(&client, |&(c, _)| c)
                .is_ok_and(|i| self.phase[i].1 == Phase::Waiting)
    }

    fn maybe_close(&mut self, now: SimTime, force: bool) {
        if self.closed.is_some() {
            return;
        }
        if force || self.phase.iter().all(|&(_, p)| p != Phase::Waiting) {
            self.timing.completed = self
                .phase
                .iter()
                .filter(|&&(_, p)| p == Phase::Done)
                .map(|&(c, _)| c)
                .collect();
            self.timing.end = now;
            self.closed = Some(self.round);
        }
    }

    fn handle_churn(&mut self, now: SimTime, t: Transition, out: &mut Outbox<Msg, Timer>) {
        let client = t.peer.get() - 1;
        self.up[client] = t.is_up;
        if t.is_up {
            out.peer_up(t.peer);
        } else {
            out.peer_down(t.peer);
            self.set_phase(client, Phase::Dropped);
            self.maybe_close(now, false);
        }
        if let Some(next) = self.churn.next(t) {
            out.set_timer(next.at, Timer::Churn(next));
        }
    }
}

impl Application for FlTiming {
    type Payload = Msg;
    type Timer = Timer;

    fn handle_message(&mut self, now: SimTime, msg: Delivered<Msg>, out: &mut Outbox<Msg, Timer>) {
        match msg.payload {
            Msg::Model { round } => {
                let client = msg.to.get() - 1;
                if self.is_waiting(round, client) {
                    let steps = f64::from(self.config.steps_of_client[client]);
                    let secs = steps * self.compute.draw_step_s(msg.to);
                    let at = now.plus(core::time::Duration::from_secs_f64(secs));
                    out.set_timer(at, Timer::ComputeDone { round, client });
                }
            }
            Msg::Update { round, client } => {
                if self.is_waiting(round, client) {
                    self.set_phase(client, Phase::Done);
                    self.maybe_close(now, false);
                }
            }
        }
    }

    fn handle_timer(&mut self, now: SimTime, timer: Timer, out: &mut Outbox<Msg, Timer>) {
        match timer {
            Timer::StartRound { round } => self.start_round(now, round, out),
            Timer::ComputeDone { round, client } => {
                if self.is_waiting(round, client) && self.up[client] {
                    let bytes = self.config.upload_bytes;
                    out.send(
                        peer_of(client),
                        SERVER,
                        bytes,
                        Msg::Update { round, client },
                    );
                }
            }
            Timer::Deadline { round } => {
                if round == self.round {
                    self.maybe_close(now, true);
                }
            }
            Timer::Churn(t) => self.handle_churn(now, t, out),
        }
    }
}

/// The compute model for the clients: every client (and the unused aggregator entry) draws from
/// the scenario's step-time distribution; no stragglers beyond its spread.
pub(crate) fn compute_model(
    step: crate::compute::StepTime,
    clients: usize,
    seeds: SeedTree,
) -> ComputeModel {
    ComputeModel::new(&vec![step; clients + 1], Stragglers::NONE, seeds)
}
