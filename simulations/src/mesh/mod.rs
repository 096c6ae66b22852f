//! The protocol mesh: N real [`gradmesh_protocol::peer::Peer`] machines (unmodified) on the
//! simulated network. Every `Send`/`Broadcast` the machines emit becomes a flow sized by the
//! message's encoded wire length ([`gradmesh_protocol::wire::encoded_len`]), so transfers share
//! access links max-min fairly, take their latency, and die mid-transfer when a peer crashes;
//! `ComputeGradient` takes the compute model's step time; churn kills peers and brings joiners.
//! The protocol's [`InvariantChecker`](gradmesh_protocol::driver::InvariantChecker) watches every
//! output: committed results agree and are the weighted means of real gradients, joiners load
//! only committed states, and no round outlives its timeout.
//!
//! Peers train the synthetic model of [`model`]: a parameter vector pulled toward a per-peer
//! target by SGD, so every committed round is a real average.

mod app;
mod model;
mod record;
#[cfg(test)]
mod tests;

pub use app::{Frame, MeshTimer, ProtocolMesh};
pub use record::{MeshCounts, Verdict};

use crate::churn::ChurnSpec;
use crate::compute::{StepTime, Stragglers};
use crate::engine::{RunOutcome, Simulation};
use crate::net::{NetConfig, NetStats, Network};
use crate::rng::SeedTree;
use crate::runner::RoundRecord;
use crate::time::SimTime;
use gradmesh_protocol::config::PeerConfig;

/// A window during which the peers with `side_of[slot] == 1` cannot reach the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionWindow {
    /// Start.
    pub start: SimTime,
    /// Heal.
    pub end: SimTime,
    /// Side of each network slot (0 = majority side).
    pub side_of: Vec<u32>,
}

/// Scheduled faults (beyond the scenario's churn model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Probability that a message sent before `faults_end` is lost (it still uses bandwidth).
    pub drop_rate: f64,
    /// When message drops stop; the liveness check measures from here.
    pub faults_end: SimTime,
    /// Kill node `index` (founders first, then joiners in join order) at a time.
    pub kills: Vec<(SimTime, usize)>,
    /// A new peer joins at each time, in its own network slot after the founders'.
    pub joins: Vec<SimTime>,
    /// Partitions that heal.
    pub partitions: Vec<PartitionWindow>,
}

/// Everything one protocol-driven run needs; built from a scenario or by the chaos suite.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// One link per network slot: `founders` founding slots, then one per scheduled join.
    pub net: NetConfig,
    /// Founding slots (each up at t = 0 unless the churn model says otherwise).
    pub founders: usize,
    /// Step time of each slot's device.
    pub step_times: Vec<StepTime>,
    /// Stragglers among the slots.
    pub stragglers: Stragglers,
    /// Churn of the founding slots: a slot going down kills its peer, coming back starts a
    /// fresh joiner (new identity, no state) in it.
    pub churn: ChurnSpec,
    /// The peers' protocol configuration (its genesis quorum is set to a founder majority).
    pub config: PeerConfig,
    /// Length of the averaged vector, in floats.
    pub floats: usize,
    /// Each payload byte (gradient spans, state chunks) stands for this many bytes on the wire:
    /// models a larger vector than the one averaged in memory (1 = no scaling).
    pub payload_scale: f64,
    /// Encode and decode every message through the wire codec (slower; proves the codec).
    pub through_wire: bool,
    /// Scheduled faults.
    pub faults: Faults,
    /// Stop once this many distinct rounds have committed (then a quarter of a round timeout
    /// more so late committers are counted); `None` runs until `until`.
    pub rounds: Option<u32>,
    /// Hard end of the run.
    pub until: SimTime,
}

/// The outcome of [`run`].
#[derive(Debug, Clone)]
pub struct MeshRun {
    /// One row per committed round (interval between consecutive commits of the mesh).
    pub records: Vec<RoundRecord>,
    /// Safety and liveness verdict.
    pub verdict: Verdict,
    /// Totals.
    pub counts: MeshCounts,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_time: SimTime,
    /// Network counters.
    pub net: NetStats,
    /// Whether the event bound stopped the run.
    pub hit_event_limit: bool,
}

/// Bound on events of one run: a mesh that keeps waking itself up without progress is a bug.
pub const MESH_EVENTS_MAX: u64 = 200_000_000;

/// Runs `spec` with `seed`, calling `on_commit(rounds committed, now)` as rounds commit.
pub fn run(spec: &MeshSpec, seed: u64, mut on_commit: impl FnMut(usize, SimTime)) -> MeshRun {
    let seeds = SeedTree::new(seed);
    let net = Network::new(spec.net.clone(), seeds);
    let mut sim = Simulation::new(ProtocolMesh::new(spec.clone(), seeds), net);
    sim.schedule(SimTime::ZERO, MeshTimer::Init);
    let mut seen = 0;
    let hit_event_limit = loop {
        let outcome = sim.run_until(
            |app, now| app.is_done(now) || app.rounds_committed() > seen,
            MESH_EVENTS_MAX.saturating_sub(sim.events()),
        );
        let committed = sim.app().rounds_committed();
        if committed > seen {
            seen = committed;
            on_commit(seen, sim.now());
        }
        match outcome {
            RunOutcome::Reached if sim.app().is_done(sim.now()) => break false,
            RunOutcome::Reached => {}
            RunOutcome::Idle => break false,
            RunOutcome::EventLimit => break true,
        }
    };
    let end = sim.now().min(spec.until);
    let events = sim.events();
    let net = sim.net().stats();
    let app = sim.into_app();
    MeshRun {
        records: app.records(),
        verdict: app.verdict(end),
        counts: app.counts(),
        events,
        sim_time: end,
        net,
        hit_event_limit,
    }
}
