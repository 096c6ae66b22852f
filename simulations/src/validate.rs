//! Collective timing validation: simulated all-reduce times against α-β closed forms.
//!
//! Homogeneous peers with full-duplex access links of bandwidth `1/β` and per-endpoint latency
//! `α/2` (so one-way latency is α). In every step of ring and butterfly each peer sends one
//! message and receives one, so no link is shared and each step costs α + size·β; the all-to-all
//! shares each uplink among p−1 flows, which the max-min model must turn into (p−1)/p·n·β.

use crate::collective::{self, Algorithm, CollectiveMsg, Executor};
use crate::engine::{Application, Outbox, RunOutcome, Simulation};
use crate::net::{Delivered, NetConfig, NetConfigError, Network, PeerIdx};
use crate::rng::SeedTree;
use crate::time::SimTime;
use thiserror::Error;

/// One-way latency α used by the validation grids, in seconds.
pub const ALPHA_S: f64 = 500e-6;
/// Access-link bandwidth used by the validation grids (10 Gbit/s), in bytes per second.
pub const BANDWIDTH_BYTES_PER_S: f64 = 1.25e9;

/// Why a validation run could not produce a time.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// The network could not be built.
    #[error(transparent)]
    Net(#[from] NetConfigError),
    /// The collective did not finish (a bug: programs must always complete without churn).
    #[error("{algorithm:?} with {peers} peers did not finish: {outcome:?}")]
    Stuck {
        /// The algorithm.
        algorithm: Algorithm,
        /// The peer count.
        peers: usize,
        /// How the run stopped.
        outcome: RunOutcome,
    },
}

/// One line of the validation table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationRow {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Peers.
    pub peers: usize,
    /// Vector size in bytes.
    pub bytes: u64,
    /// The α-β closed form, in seconds.
    pub closed_form_s: f64,
    /// The simulated time, in seconds.
    pub simulated_s: f64,
    /// Events the simulation processed.
    pub events: u64,
}

impl ValidationRow {
    /// |simulated − closed form| / closed form.
    #[must_use]
    pub fn relative_error(&self) -> f64 {
        (self.simulated_s - self.closed_form_s).abs() / self.closed_form_s
    }
}

/// Runs a single collective on its own: every member starts at t = 0.
#[derive(Debug)]
struct OneShot {
    exec: Executor,
    members: Vec<PeerIdx>,
}

impl Application for OneShot {
    type Payload = CollectiveMsg;
    type Timer = ();

    fn handle_message(
        &mut self,
        now: SimTime,
        msg: Delivered<CollectiveMsg>,
        out: &mut Outbox<CollectiveMsg, ()>,
    ) {
        let tag = msg.payload;
        let _ = self.exec.handle_message(now, &msg, tag, out);
    }

    fn handle_timer(&mut self, now: SimTime, (): (), out: &mut Outbox<CollectiveMsg, ()>) {
        for &m in &self.members {
            self.exec.start_peer(now, m, out);
        }
    }
}

/// Simulates one all-reduce of `bytes` among `peers` homogeneous peers (the validation link:
/// [`BANDWIDTH_BYTES_PER_S`], one-way latency [`ALPHA_S`]).
pub fn simulate(
    algorithm: Algorithm,
    peers: usize,
    bytes: u64,
) -> Result<ValidationRow, ValidateError> {
    let link = Link {
        bytes_per_s: BANDWIDTH_BYTES_PER_S,
        one_way_latency_s: ALPHA_S,
    };
    simulate_on(algorithm, peers, bytes, link)
}

/// A homogeneous access link: bandwidth per direction and one-way latency between two peers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Bytes per second, each direction.
    pub bytes_per_s: f64,
    /// One-way latency α in seconds (each endpoint contributes half).
    pub one_way_latency_s: f64,
}

/// Simulates one all-reduce of `bytes` among `peers` peers on identical `link`s, e.g. to
/// predict a real run on `tc tbf`-shaped namespaces (`gradmesh-sim predict-allreduce`).
pub fn simulate_on(
    algorithm: Algorithm,
    peers: usize,
    bytes: u64,
    link: Link,
) -> Result<ValidationRow, ValidateError> {
    let latency_us = (link.one_way_latency_s * 1e6 / 2.0).round() as u64;
    let config = NetConfig::homogeneous(peers, link.bytes_per_s, latency_us)?;
    let members: Vec<PeerIdx> = (0..peers)
        .filter_map(|i| u32::try_from(i).ok())
        .map(PeerIdx)
        .collect();
    let programs = collective::programs(algorithm, &members, bytes, None);
    let exec = Executor::new(0, members.clone(), programs, algorithm.send_mode());
    let mut sim = Simulation::new(
        OneShot { exec, members },
        Network::new(config, SeedTree::new(0)),
    );
    sim.schedule(SimTime::ZERO, ());
    let max_events = 4 * (peers as u64) * (peers as u64 + 16);
    let outcome = sim.run_until(|app, _| app.exec.is_done(), max_events);
    if outcome != RunOutcome::Reached {
        return Err(ValidateError::Stuck {
            algorithm,
            peers,
            outcome,
        });
    }
    Ok(ValidationRow {
        algorithm,
        peers,
        bytes,
        closed_form_s: algorithm.closed_form_secs(
            peers,
            bytes,
            link.one_way_latency_s,
            1.0 / link.bytes_per_s,
        ),
        simulated_s: sim.now().as_secs_f64(),
        events: sim.events(),
    })
}

/// The grid `gradmesh-sim validate` runs: p = 4..1024 (powers of two), 1 MB..1 GB, all three
/// algorithms (the all-to-all at 1024 peers runs 10^6 concurrent flows per phase).
#[must_use]
pub fn full_grid() -> Vec<(Algorithm, usize, u64)> {
    let sizes = [1_000_000, 10_000_000, 100_000_000, 1_000_000_000];
    let mut grid = Vec::new();
    for algorithm in [Algorithm::Ring, Algorithm::Butterfly, Algorithm::AllToAll] {
        for k in 2..=10 {
            let p = 1_usize << k;
            grid.extend(sizes.iter().map(|&n| (algorithm, p, n)));
        }
    }
    grid
}

/// Runs `grid` and returns its rows in order.
pub fn run_grid(grid: &[(Algorithm, usize, u64)]) -> Result<Vec<ValidationRow>, ValidateError> {
    grid.iter().map(|&(a, p, n)| simulate(a, p, n)).collect()
}

/// The table printed by `gradmesh-sim validate`.
#[must_use]
pub fn format_table(rows: &[ValidationRow]) -> String {
    let mut s = format!(
        "{:<11} {:>5} {:>13} {:>13} {:>13} {:>8} {:>9}\n",
        "algorithm", "peers", "bytes", "closed_s", "simulated_s", "err_%", "events"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<11} {:>5} {:>13} {:>13.6} {:>13.6} {:>8.4} {:>9}\n",
            r.algorithm.name(),
            r.peers,
            r.bytes,
            r.closed_form_s,
            r.simulated_s,
            100.0 * r.relative_error(),
            r.events
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast grid: every power of two 4..1024 for ring and butterfly at 1 MB and 1 GB,
    /// all-to-all up to 256 peers (the full grid is `gradmesh-sim validate`).
    #[test]
    fn collectives_match_alpha_beta_closed_forms_within_5_percent() {
        let mut grid = Vec::new();
        for k in 2..=10 {
            let p = 1_usize << k;
            for n in [1_000_000, 1_000_000_000] {
                grid.push((Algorithm::Butterfly, p, n));
                if p <= 256 {
                    grid.push((Algorithm::AllToAll, p, n));
                }
                if p <= 256 || n == 1_000_000 {
                    grid.push((Algorithm::Ring, p, n));
                }
            }
        }
        for row in run_grid(&grid).unwrap() {
            assert!(
                row.relative_error() < 0.05,
                "{:?} p={} n={}: simulated {} vs closed form {}",
                row.algorithm,
                row.peers,
                row.bytes,
                row.simulated_s,
                row.closed_form_s
            );
        }
    }

    #[test]
    fn butterfly_handles_non_power_of_two_peers() {
        // 8 core peers run the butterfly; 4 extras hand off their vector first and get the
        // result back last: closed_form(8) + 2(α + nβ). Rendezvous sends keep the core's first
        // step off the downlinks still receiving hand-offs, so nothing else is added.
        let beta = 1.0 / BANDWIDTH_BYTES_PER_S;
        for (p, core) in [(12, 8), (513, 512)] {
            let row = simulate(Algorithm::Butterfly, p, 8_000_000).unwrap();
            let core_s = Algorithm::Butterfly.closed_form_secs(core, 8_000_000, ALPHA_S, beta);
            let expected = core_s + 2.0 * (ALPHA_S + 8e6 * beta);
            let error = (row.simulated_s - expected).abs() / expected;
            assert!(error < 0.01, "p={p}: {} vs {expected}", row.simulated_s);
        }
    }

    #[test]
    fn eager_sends_contend_where_rendezvous_waits() {
        let members: Vec<PeerIdx> = (0..12).map(PeerIdx).collect();
        let time = |mode| {
            let programs = collective::programs(Algorithm::Butterfly, &members, 8_000_000, None);
            let exec = Executor::new(0, members.clone(), programs, mode);
            let config = NetConfig::homogeneous(12, BANDWIDTH_BYTES_PER_S, 250).unwrap();
            let app = OneShot {
                exec,
                members: members.clone(),
            };
            let mut sim = Simulation::new(app, Network::new(config, SeedTree::new(0)));
            sim.schedule(SimTime::ZERO, ());
            assert_eq!(
                sim.run_until(|a, _| a.exec.is_done(), 100_000),
                RunOutcome::Reached
            );
            sim.now()
        };
        assert!(time(collective::SendMode::Eager) > time(collective::SendMode::Rendezvous));
    }

    #[test]
    fn weighted_spans_sum_to_the_vector() {
        let spans = collective::span_bytes(1_000_003, 3, Some(&[1.0, 2.0, 1.0]));
        assert_eq!(spans.iter().sum::<u64>(), 1_000_003);
        assert_eq!(spans[1], 500_001);
    }
}
