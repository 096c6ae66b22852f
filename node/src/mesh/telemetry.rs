//! Round metrics served on the node's `/metrics` (next to the network layer's frame and byte
//! counters), and the per-round report lines the demo, the tests and operators' tooling read.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::net::MetricsRegistrar;

/// The protocol-level metrics of a node. Cloning shares the same series.
#[derive(Debug, Clone)]
pub struct MeshMetrics {
    /// Rounds this node committed.
    pub rounds_committed: Counter,
    /// Rounds that ended without a result.
    pub rounds_aborted: Counter,
    /// Seconds from accepting a roster to committing its result.
    pub allreduce_seconds: Histogram,
    /// Connected peers.
    pub peers: Gauge,
    /// Contributions and messages refused (NaN, wrong length, not a member…).
    pub rejected: Counter,
    /// The round of the state this node holds.
    pub state_round: Gauge,
    /// Last training loss.
    pub loss: Gauge<f64, AtomicU64>,
    /// Last test accuracy.
    pub accuracy: Gauge<f64, AtomicU64>,
    /// State syncs completed.
    pub syncs: Counter,
    /// Synced states that did not load (junk or non-finite values from donors) and were refused.
    pub states_refused: Counter,
}

impl Default for MeshMetrics {
    fn default() -> Self {
        Self {
            rounds_committed: Counter::default(),
            rounds_aborted: Counter::default(),
            allreduce_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            peers: Gauge::default(),
            rejected: Counter::default(),
            state_round: Gauge::default(),
            loss: Gauge::default(),
            accuracy: Gauge::default(),
            syncs: Counter::default(),
            states_refused: Counter::default(),
        }
    }
}

impl MeshMetrics {
    /// Registers every series (names get the registry's `gradmesh_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        let m = self.clone();
        registry.register("rounds_committed", "Rounds committed", m.rounds_committed);
        registry.register("rounds_aborted", "Rounds aborted", m.rounds_aborted);
        registry.register(
            "allreduce_seconds",
            "Seconds from roster to commit",
            m.allreduce_seconds,
        );
        registry.register("peers", "Connected peers", m.peers);
        registry.register(
            "rejected_contributions",
            "Messages refused, with the sender named in the log",
            m.rejected,
        );
        registry.register("state_round", "Round of the held state", m.state_round);
        registry.register("train_loss", "Last local training loss", m.loss);
        registry.register("test_accuracy", "Last test accuracy", m.accuracy);
        registry.register("state_syncs", "State syncs completed", m.syncs);
        registry.register(
            "states_refused",
            "Synced states that did not load and were refused",
            m.states_refused,
        );
    }

    /// A registrar for [`crate::net::NetConfigBuilder::extra_metrics`].
    #[must_use]
    pub fn registrar(&self) -> MetricsRegistrar {
        let metrics = self.clone();
        MetricsRegistrar(Arc::new(move |registry| metrics.register(registry)))
    }
}

/// One machine-readable line a node prints on stdout with `--report json` (one JSON object per
/// line). The demo, the end-to-end tests and the benchmark read these. `round` fields carry the
/// protocol's whole round id: the round count, plus the epoch shifted left by 40 bits once the
/// mesh was re-founded (docs/protocol.md §5.6), so that ids compare in order across epochs.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    /// The node is up.
    Started {
        /// Protocol peer id (hex).
        peer: String,
        /// libp2p peer id, for `/p2p/` suffixes.
        transport_peer: String,
        /// Where `/metrics` is served.
        metrics: Option<String>,
    },
    /// The model's held-out figures before any round (a founder's or resumed node's state).
    Evaluated {
        /// The round of the state evaluated (0: the seeded initial weights).
        round: u64,
        /// Held-out loss (cross-entropy in nats per example or token, or the model's own).
        validation_loss: f32,
        /// Held-out accuracy (next-token accuracy for a language model); absent for a
        /// regression model.
        accuracy: Option<f64>,
    },
    /// A listen address (dial it with `/p2p/<transport_peer>` appended).
    Listening {
        /// The address.
        addr: String,
    },
    /// The node resumed from a checkpoint.
    Resumed {
        /// Round of the checkpointed state.
        round: u64,
        /// Its digest.
        digest: String,
    },
    /// A connection to a peer is up.
    Connected {
        /// The peer (hex).
        peer: String,
    },
    /// The last connection to a peer closed.
    Disconnected {
        /// The peer (hex).
        peer: String,
    },
    /// The node accepted a roster and started a round.
    RoundStarted {
        /// Round.
        round: u64,
        /// Contributors.
        contributors: usize,
        /// Whether this node only observes the round (a joiner fetching the state).
        observer: bool,
    },
    /// A round committed and the node applied it.
    Committed {
        /// Round.
        round: u64,
        /// Contributors averaged.
        contributors: usize,
        /// Local training loss of the gradient this node contributed (if it did).
        loss: Option<f32>,
        /// Test accuracy (next-token accuracy for a language model) after applying.
        accuracy: Option<f64>,
        /// Held-out cross-entropy after applying (nats per example or token).
        validation_loss: Option<f32>,
        /// Local optimizer steps behind this node's contribution (0 when synchronous).
        inner_steps: u32,
        /// This node's weight in the round's mean (the examples behind its contribution); absent
        /// when it did not contribute (it observed the round while joining).
        #[serde(default)]
        examples: Option<u32>,
        /// Seconds this node spent computing its contribution (the inner phase).
        compute_seconds: f64,
        /// Share of wall time this node spent computing since its first computation began
        /// (compute utilisation: under DiLoCo, time in inner steps ÷ wall time).
        utilisation: Option<f64>,
        /// Seconds from roster to commit.
        seconds: f64,
        /// Frame bytes this node sent since its previous commit.
        bytes_sent: u64,
        /// Frame bytes this node received since its previous commit.
        bytes_received: u64,
        /// Digest of the new state.
        digest: String,
        /// Where this node's time went since its previous commit, by phase; absent for the
        /// first commit, after a sync, and when computing overlapped the round (`--overlap`).
        #[serde(default)]
        phases: Option<Phases>,
    },
    /// A round ended without a result.
    Aborted {
        /// Round.
        round: u64,
        /// Why.
        reason: String,
    },
    /// A message from `peer` was refused.
    Rejected {
        /// The sender.
        peer: String,
        /// Round.
        round: u64,
        /// Why.
        reason: String,
    },
    /// The node loaded the mesh's state from donors.
    Synced {
        /// Round of the loaded state.
        round: u64,
        /// Its digest.
        digest: String,
    },
    /// A state fetched from donors did not load; the node kept its own and fetches another.
    Refused {
        /// Round of the refused state.
        round: u64,
        /// Its digest.
        digest: String,
        /// Why it did not load.
        reason: String,
    },
    /// The node re-founded the mesh on the state it held after most of its committee was lost
    /// (docs/protocol.md §5.6).
    Refounded {
        /// Round id of the state held before.
        from: u64,
        /// Round id of the re-founded state (the same count in the next epoch: `count | epoch << 40`).
        round: u64,
        /// Its digest.
        digest: String,
        /// Nodes holding the state when it was re-founded, this one included.
        founders: usize,
        /// Contributors the next round needs.
        quorum: usize,
        /// Whether this node followed another's re-founding.
        adopted: bool,
    },
    /// The node stopped cleanly (a limit was reached, or SIGINT/SIGTERM); the process exits 0.
    Stopped {
        /// Why, in words (`--max-rounds 20 reached`, `SIGTERM`).
        reason: String,
        /// Round of the state it held (0: the initial state, or none yet).
        round: u64,
        /// That state's digest, if it held one.
        digest: Option<String>,
        /// Local optimizer steps this node took (one per committed round when synchronous).
        steps: u64,
        /// Rounds this node committed.
        rounds: u64,
        /// Seconds since the node started.
        seconds: f64,
        /// The final checkpoint written, if the node has a checkpoint directory.
        checkpoint: Option<String>,
    },
}

/// Where a node's time went between two of its commits, in seconds (docs/benchmarks.md, "Where
/// a round's time goes"): the time from the previous round's state installed to this one's is
/// the sum, one round period of this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Phases {
    /// The previous state installed → the next contribution handed to the protocol
    /// (computing it; for the synthetic workload, almost nothing).
    pub compute: f64,
    /// Contribution handed → this round's roster: waiting for the other nodes to be ready and
    /// for the leader's proposal (aborted attempts included).
    pub wait: f64,
    /// Roster → commit: the all-reduce and the vote.
    pub allreduce: f64,
    /// Commit → the trainer applied the result.
    pub apply: f64,
    /// Applied → the new state snapshotted (hashed into chunks) and installed by the protocol.
    pub install: f64,
}
