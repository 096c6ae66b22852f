//! The training node: actors around the protocol's [`Peer`](gradmesh_protocol::peer::Peer)
//! machine.
//!
//! | actor            | thread                | job                                               |
//! |------------------|-----------------------|---------------------------------------------------|
//! | [`Network`]      | network arbiter       | libp2p swarm: connections, gossip, frames          |
//! | [`PeerActor`]    | system arbiter        | adapter: network events and timers in, outputs out |
//! | [`TrainerActor`] | its own `SyncArbiter` | LibTorch: gradients, optimizer steps, evaluation   |
//! | [`Checkpointer`] | its own `SyncArbiter` | atomic safetensors checkpoints                     |
//!
//! Metrics ([`MeshMetrics`]) are served by the network layer's `/metrics` endpoint.
//!
//! [`Network`]: crate::net::Network

mod checkpointer;
mod peer;
mod stop;
mod telemetry;
mod trainer;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use gradmesh_protocol::config::PeerConfig;
use gradmesh_protocol::peer::{Peer, Profile, Promise};
use gradmesh_protocol::sync::{SnapshotError, StateSnapshot};
use gradmesh_protocol::wire::LineageLink;
use gradmesh_protocol::{Digest, PeerId, PeerKey, RoundId, Timestamp};

pub use checkpointer::{
    CHECKPOINT_FILE, Checkpointer, LINEAGE_FILE, PROMISE_FILE, PromiseError, Save, read_lineage,
    read_promise, write_promise,
};
pub use peer::{Attach, Fault, PeerActor, PeerOptions};
pub use stop::{Interrupt, Stop, StopReason, StopRule};
pub use telemetry::{MeshMetrics, Phases, Report};
pub use trainer::TrainerActor;
pub use workload::{
    Computed, Evaluation, InnerOptimizer, ModelChoice, ModelSpec, OuterSpec, Training, Workload,
    WorkloadError, WorkloadSpec,
};

use crate::net::{
    ConfigError, Keypair, NetConfigBuilder, NetInfo, Network, StartError, protocol_key_of,
};

/// Everything a node needs to start.
#[derive(Debug)]
pub struct NodeSetup {
    /// Network settings (the mesh metrics are added to them).
    pub net: NetConfigBuilder,
    /// The node's identity.
    pub keypair: Keypair,
    /// Protocol timeouts.
    pub peer_config: PeerConfig,
    /// What this node tells the mesh about itself.
    pub profile: Profile,
    /// What it trains.
    pub workload: Workload,
    /// Where checkpoints go (and are resumed from).
    pub checkpoint_dir: Option<PathBuf>,
    /// Start without a state and sync it from the mesh.
    pub join: bool,
    /// Reporting and checkpoint cadence.
    pub options: PeerOptions,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartNodeError {
    /// Bad network settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The network layer did not come up.
    #[error(transparent)]
    Network(#[from] StartError),
    /// The identity is not ed25519.
    #[error("the node identity must be an ed25519 key")]
    NotEd25519,
    /// The model state is too large for the state-sync limits.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The checkpoint could not be read.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] WorkloadError),
    /// The checkpoint's contents do not hash to the state digest it recorded.
    #[error(
        "checkpoint {path} does not match the state digest it recorded; move it away (the node \
         then syncs the mesh's state)"
    )]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
    },
    /// The promise file beside the checkpoint could not be read.
    #[error(transparent)]
    Promise(#[from] PromiseError),
    /// The checkpoint directory could not be created.
    #[error("checkpoint directory {path}: {source}")]
    CheckpointDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A started node.
#[derive(Debug)]
pub struct Started {
    /// The network's facts.
    pub info: NetInfo,
    /// The node's adapter actor: send it [`Stop`] to stop the node gracefully.
    pub node: Addr<PeerActor>,
}

/// Starts a node's actors inside the running actix system.
///
/// # Errors
/// [`StartNodeError`].
pub async fn start(setup: NodeSetup) -> Result<Started, StartNodeError> {
    let NodeSetup {
        net,
        keypair,
        peer_config,
        profile,
        mut workload,
        checkpoint_dir,
        join,
        options,
    } = setup;
    let metrics = MeshMetrics::default();
    let payload_cap = frame_payload_cap(workload.state_bytes().len(), &peer_config);
    let net_config = net
        .payload_bytes_max(payload_cap)
        .extra_metrics(metrics.registrar())
        .build()?;
    let key = protocol_key_of(&keypair).ok_or(StartNodeError::NotEd25519)?;
    let key_id = key.id();
    if let Some(dir) = &checkpoint_dir {
        std::fs::create_dir_all(dir).map_err(|source| StartNodeError::CheckpointDir {
            path: dir.clone(),
            source,
        })?;
    }
    // Announcement counters start above any earlier run's (see `with_announce_seq_base`).
    let peer_config = peer_config.with_announce_seq_base(wall_clock_micros());
    let resumed = resume(&mut workload, checkpoint_dir.as_ref(), &peer_config)?;
    let initial = (!join).then(|| workload.state_bytes());
    if options.report && options.evaluate && !join {
        let round = resumed.as_ref().map_or(0, |r| r.snapshot.summary().round.0);
        if let Ok(Some(eval)) = workload.evaluate() {
            report_line(&Report::Evaluated {
                round,
                validation_loss: eval.loss,
                accuracy: eval.accuracy,
            });
        }
    }
    let peer = protocol_peer(resumed, initial, peer_config, key, profile, options.report)?;
    let clock = Instant::now();
    let interrupt = workload.interrupt();
    let trainer = TrainerActor::start(workload);
    let checkpointer = checkpoint_dir.as_deref().map(Checkpointer::start);
    let actor = PeerActor::new(peer, clock, trainer, checkpointer, metrics, options.clone())
        .with_files(interrupt, checkpoint_dir)
        .start();
    let (network, info) = Network::start(net_config, keypair, actor.clone().recipient()).await?;
    actor.do_send(Attach(network));
    if options.report {
        report_line(&Report::Started {
            peer: hex::encode(key_id.0),
            transport_peer: info.transport_peer.to_string(),
            metrics: info.metrics_addr.map(|a| a.to_string()),
        });
    }
    Ok(Started { info, node: actor })
}

/// A round as operators read it: `152`, or `152 (epoch 1)` once the mesh was re-founded
/// (docs/protocol.md §5.6). Report lines carry the whole round id instead.
pub(crate) struct RoundWords(pub RoundId);

impl std::fmt::Display for RoundWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.epoch() {
            0 => write!(f, "{}", self.0.count()),
            epoch => write!(f, "{} (epoch {epoch})", self.0.count()),
        }
    }
}

/// What a checkpoint directory restores: the state, the promises the node made before it
/// stopped (the promise file) and its lineage (the lineage file).
struct Resumed {
    snapshot: StateSnapshot,
    promise: Option<Promise>,
    lineage: Vec<LineageLink>,
}

/// The protocol machine: resumed from a checkpoint (with its promises and lineage), or new.
fn protocol_peer(
    resumed: Option<Resumed>,
    initial: Option<Arc<[u8]>>,
    peer_config: PeerConfig,
    key: PeerKey,
    profile: Profile,
    report: bool,
) -> Result<Peer, StartNodeError> {
    Ok(match resumed {
        Some(Resumed {
            snapshot,
            promise,
            lineage,
        }) => {
            let summary = snapshot.summary();
            tracing::info!(
                "resumed from the checkpoint of round {}",
                RoundWords(summary.round)
            );
            if report {
                report_line(&Report::Resumed {
                    round: summary.round.0,
                    digest: summary.digest.to_hex(),
                });
            }
            let mut peer = Peer::resume_with_promise(
                peer_config,
                key,
                profile,
                snapshot,
                promise,
                Timestamp::ZERO,
            )?;
            peer.restore_lineage(&lineage);
            peer
        }
        None => Peer::new(peer_config, key, profile, initial, Timestamp::ZERO)?,
    })
}

/// Restores the checkpoint in `dir`, if there is one, and rebuilds its protocol snapshot; with
/// the promises the node made before it stopped (the promise file beside it) and its lineage.
/// A checkpoint whose rebuilt digest differs from the one it recorded is refused (one written
/// by a node of protocol version 4 recorded that version's digest of the same state).
fn resume(
    workload: &mut Workload,
    dir: Option<&PathBuf>,
    config: &PeerConfig,
) -> Result<Option<Resumed>, StartNodeError> {
    let Some(path) = dir.map(|d| d.join(CHECKPOINT_FILE)).filter(|p| p.exists()) else {
        return Ok(None);
    };
    let Some(checkpoint) = workload.resume(&path)? else {
        return Ok(None);
    };
    let committee = checkpoint.committee.iter().map(|id| PeerId(*id)).collect();
    let snapshot = StateSnapshot::new(
        RoundId(checkpoint.round),
        committee,
        workload.state_bytes(),
        config.state_chunk_bytes(),
    )?;
    let recorded = Digest(checkpoint.mesh_digest.0);
    if snapshot.summary().digest != recorded && snapshot.version4_digest() != recorded {
        // The weights are loaded already: refuse to start rather than found a mesh with them.
        return Err(StartNodeError::CheckpointMismatch { path });
    }
    let promise = dir
        .map(|d| read_promise(&d.join(PROMISE_FILE)))
        .transpose()?
        .flatten();
    let lineage = dir.map_or_else(Vec::new, |d| read_lineage(&d.join(LINEAGE_FILE)));
    Ok(Some(Resumed {
        snapshot,
        promise,
        lineage,
    }))
}

/// The largest frame payload this node sends or reads: a span is at most the whole gradient and
/// a state chunk at most the configured chunk size, both no larger than the state or the chunk
/// (plus slack for a codec's scales). Sized to the workload so a peer cannot make us read
/// frames far larger than any honest one.
fn frame_payload_cap(state_bytes: usize, config: &PeerConfig) -> u64 {
    const SLACK: u64 = 64 << 10;
    let largest = u64::try_from(state_bytes)
        .unwrap_or(u64::MAX)
        .max(u64::from(config.state_chunk_bytes()));
    largest
        .saturating_add(SLACK)
        .min(crate::net::frame::PAYLOAD_BYTES_MAX_LIMIT)
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
fn wall_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Prints one report line on stdout. A reader that went away (a closed pipe) costs the lines,
/// not the node: `println!` would panic on it, and training goes on without its reader.
fn report_line(report: &Report) {
    use std::io::Write as _;
    if let Ok(line) = serde_json::to_string(report) {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}
