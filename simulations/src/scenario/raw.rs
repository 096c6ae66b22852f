//! The scenario file as written: plain serde structs, checked only by converting to
//! [`super::Scenario`].

use serde::Deserialize;
use std::path::PathBuf;

/// A scenario as written in TOML. Defaults are given per field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    /// A short name for reports.
    pub name: String,
    /// Peers in the run (> 0).
    pub peers: u32,
    /// Rounds to commit (> 0).
    pub rounds: u32,
    /// Bytes all-reduced per round (> 0). Required, except with `algorithm = "protocol"`, where
    /// it is `[protocol] model_bytes` and must not be given.
    pub gradient_bytes: Option<u64>,
    /// Bytes a rejoining peer downloads to resync. Default: 0, meaning `gradient_bytes`.
    #[serde(default)]
    pub state_bytes: u64,
    /// "ring", "butterfly", "all-to-all", "moshpit", or "protocol" (the real protocol peers;
    /// needs a `[protocol]` section).
    pub algorithm: String,
    /// Moshpit group size (≥ 2); only with `algorithm = "moshpit"`.
    pub group_size: Option<u32>,
    /// Size all-to-all spans by uplink bandwidth (gradmesh's protocol does). Default: false.
    #[serde(default)]
    pub spans_by_bandwidth: bool,
    /// Stop if simulated time passes this. Default: 7 days.
    pub max_sim_time_s: Option<f64>,
    /// A group attempt that has not finished after this many seconds is aborted and re-run (a
    /// message lost under `drop` loss would otherwise stall it forever). Default: 300.
    pub attempt_timeout_s: Option<f64>,
    /// Device classes; fractions must sum to 1. Peers are assigned in blocks, in order.
    pub classes: Vec<RawClass>,
    /// Sites with shared WAN links. Default: none.
    #[serde(default)]
    pub sites: Vec<RawSite>,
    /// Default: none.
    pub stragglers: Option<RawStragglers>,
    /// Default: no churn.
    pub churn: Option<RawChurn>,
    /// Default: no loss.
    pub loss: Option<RawLoss>,
    /// Partitions that heal. Default: none.
    #[serde(default)]
    pub partitions: Vec<RawPartition>,
    /// Protocol mode: run the real `Peer` machines. Only with `algorithm = "protocol"`.
    pub protocol: Option<RawProtocol>,
}

/// The `[protocol]` section: how the real protocol peers are configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtocol {
    /// Length of the vector the peers really average, in floats (> 0).
    pub floats: u32,
    /// Round timeout in seconds; every other protocol timeout keeps the default proportion to it
    /// (`PeerConfigBuilder::scaled_to`).
    pub round_timeout_s: f64,
    /// Bytes of the modelled vector on the wire. Default: `4 · floats` (no scaling). Larger
    /// values scale every payload byte (gradient spans, state chunks) by
    /// `model_bytes / (4 · floats)`, modelling a big model with a small in-memory vector.
    pub model_bytes: Option<u64>,
    /// State sync chunk size in bytes (of the in-memory state). Default: 1 MiB.
    pub state_chunk_bytes: Option<u32>,
    /// Encode and decode every message with the wire codec. Default: false.
    #[serde(default)]
    pub through_wire: bool,
}

/// A device class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    /// Name for reports.
    pub name: String,
    /// Fraction of peers in (0, 1].
    pub fraction: f64,
    /// Mean compute step time in seconds (> 0).
    pub step_time_mean_s: f64,
    /// Lognormal σ of the step time. Default: 0.
    #[serde(default)]
    pub step_time_sigma: f64,
    /// Uplink in Mbit/s.
    pub up_mbit_s: f64,
    /// Downlink in Mbit/s.
    pub down_mbit_s: f64,
    /// Per-endpoint one-way latency share in milliseconds.
    pub latency_ms: f64,
    /// Site index. Default: none.
    pub site: Option<u32>,
}

/// A site's WAN link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// Egress in Mbit/s.
    pub up_mbit_s: f64,
    /// Ingress in Mbit/s.
    pub down_mbit_s: f64,
    /// Added one-way latency in milliseconds for flows leaving or entering the site.
    pub latency_ms: f64,
}

/// Stragglers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStragglers {
    /// Fraction of peers in [0, 1].
    pub fraction: f64,
    /// Slowdown factor ≥ 1.
    pub slowdown: f64,
}

/// Churn model.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RawChurn {
    /// Weibull sessions and downtimes.
    Weibull {
        /// Session shape k.
        session_shape: f64,
        /// Session scale λ in seconds.
        session_scale_s: f64,
        /// Downtime shape k.
        downtime_shape: f64,
        /// Downtime scale λ in seconds.
        downtime_scale_s: f64,
    },
    /// An availability trace CSV `peer,join_s,leave_s`, relative to the scenario file.
    Trace {
        /// The CSV path.
        path: PathBuf,
    },
}

/// Loss model.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RawLoss {
    /// Reliable transport: retransmissions inflate bytes by 1/(1 − rate).
    Retransmit {
        /// Packet loss rate.
        rate: f64,
    },
    /// Unreliable transport: whole messages lost with probability `rate`.
    Drop {
        /// Message loss rate.
        rate: f64,
    },
}

/// A partition: the first `fraction` of peers (by index) are cut off during [start_s, end_s).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPartition {
    /// Start in seconds.
    pub start_s: f64,
    /// Heal time in seconds (> start).
    pub end_s: f64,
    /// Fraction of peers cut off, in (0, 0.5] so a majority side remains.
    pub fraction: f64,
}
