//! Scenario files: TOML deserializes into [`RawScenario`], which converts with `TryFrom` into a
//! validated [`Scenario`] (one [`ScenarioError`] variant per violated rule). The runner accepts
//! only the validated type, so an unchecked scenario cannot reach it.

use crate::churn::{self, ChurnSpec, TraceError, WeibullSpec};
use crate::collective::Algorithm;
use crate::compute::{StepTime, Stragglers};
use crate::net::{LossModel, NetConfig, NetConfigError, PeerLink, SiteLink};
use gradmesh_protocol::config::ConfigError;
use std::path::Path;
use thiserror::Error;

mod protocol;
mod raw;

pub use protocol::ProtocolSpec;

pub use raw::{
    RawChurn, RawClass, RawLoss, RawPartition, RawProtocol, RawScenario, RawSite, RawStragglers,
};

/// How peers are grouped for the all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One all-reduce among all participants.
    Global(Algorithm),
    /// Moshpit: all-to-all inside groups of `group_size` on a virtual grid, one grid dimension
    /// per round.
    Moshpit {
        /// Peers per group.
        group_size: u32,
    },
}

/// A validated partition window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Partition {
    /// Start in seconds.
    pub start_s: f64,
    /// Heal time in seconds.
    pub end_s: f64,
    /// Peers `0..cut_peers` form the minority side.
    pub cut_peers: u32,
}

/// A violated scenario rule.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file is not valid TOML for [`RawScenario`].
    #[error("scenario TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// The file could not be read.
    #[error("scenario file {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// At least two peers are needed for an all-reduce.
    #[error("peers must be ≥ 2, got {0}")]
    TooFewPeers(u32),
    /// Rounds must be positive.
    #[error("rounds must be > 0")]
    NoRounds,
    /// The gradient must have bytes.
    #[error("gradient_bytes must be > 0")]
    NoGradient,
    /// Unknown algorithm name.
    #[error("unknown algorithm {0:?} (ring, butterfly, all-to-all, moshpit)")]
    UnknownAlgorithm(String),
    /// Moshpit needs a group size ≥ 2, and only moshpit takes one.
    #[error("group_size {group_size:?} does not fit algorithm {algorithm:?}")]
    GroupSize {
        /// The algorithm.
        algorithm: String,
        /// The group size given.
        group_size: Option<u32>,
    },
    /// No device classes.
    #[error("at least one device class is required")]
    NoClasses,
    /// Class fractions must be positive and sum to 1.
    #[error("class fractions must be > 0 and sum to 1 (sum {sum})")]
    ClassFractions {
        /// Their sum.
        sum: f64,
    },
    /// A class has a non-positive step time or negative σ.
    #[error("class {class:?}: step time mean must be > 0 and sigma ≥ 0")]
    StepTime {
        /// The class.
        class: String,
    },
    /// A class has a negative or non-finite latency.
    #[error("class {class:?}: latency must be finite and ≥ 0")]
    Latency {
        /// The class.
        class: String,
    },
    /// Straggler fraction outside [0, 1] or slowdown below 1.
    #[error("stragglers: fraction {fraction} must be in [0, 1] and slowdown {slowdown} ≥ 1")]
    Stragglers {
        /// The fraction.
        fraction: f64,
        /// The slowdown.
        slowdown: f64,
    },
    /// Weibull shapes and scales must be positive.
    #[error("churn: Weibull shapes and scales must be finite and > 0")]
    Weibull,
    /// The availability trace is unusable.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A partition window is empty, or cuts off no one or a majority.
    #[error("partition {index}: need 0 ≤ start < end and 0 < fraction ≤ 0.5")]
    Partition {
        /// Which partition.
        index: usize,
    },
    /// The simulated-time bound must be positive.
    #[error("max_sim_time_s must be > 0")]
    MaxSimTime,
    /// The attempt timeout must be positive.
    #[error("attempt_timeout_s must be > 0")]
    AttemptTimeout,
    /// The network rules (bandwidths, sites, loss rate).
    #[error(transparent)]
    Net(#[from] NetConfigError),
    /// `algorithm = "protocol"` and a `[protocol]` section go together.
    #[error("algorithm = \"protocol\" needs a [protocol] section, and only it takes one")]
    ProtocolSection,
    /// In protocol mode the gradient and state sizes come from `[protocol] model_bytes`.
    #[error("gradient_bytes and state_bytes are set by [protocol] model_bytes in protocol mode")]
    ProtocolBytes,
    /// The protocol vector is empty or too long, or `model_bytes` is below `4 · floats`.
    #[error("[protocol]: need 0 < floats ≤ {max} and model_bytes ≥ 4 · floats")]
    ProtocolVector {
        /// The largest span the wire format carries.
        max: u32,
    },
    /// The protocol round timeout must be positive.
    #[error("[protocol] round_timeout_s must be finite and > 0")]
    ProtocolTimeout,
    /// The protocol configuration breaks one of its rules.
    #[error("[protocol]: {0}")]
    ProtocolConfig(#[from] ConfigError),
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    name: String,
    rounds: u32,
    gradient_bytes: u64,
    state_bytes: u64,
    topology: Topology,
    spans_by_bandwidth: bool,
    max_sim_time_s: f64,
    attempt_timeout_s: f64,
    net: NetConfig,
    step_times: Vec<StepTime>,
    stragglers: Stragglers,
    churn: ChurnSpec,
    partitions: Vec<Partition>,
    protocol: Option<ProtocolSpec>,
}

const MBIT_BYTES: f64 = 1e6 / 8.0;

impl Scenario {
    /// Reads and validates a scenario file; a trace path is taken relative to the file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_toml(&text, base)
    }

    /// Parses and validates TOML; a trace path is taken relative to `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, ScenarioError> {
        let mut raw: RawScenario = toml::from_str(text)?;
        if let Some(RawChurn::Trace { path }) = &mut raw.churn
            && path.is_relative()
        {
            *path = base_dir.join(&*path);
        }
        Self::try_from(raw)
    }

    /// Name for reports.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Rounds to commit.
    #[must_use]
    pub const fn rounds(&self) -> u32 {
        self.rounds
    }
    /// Bytes all-reduced per round.
    #[must_use]
    pub const fn gradient_bytes(&self) -> u64 {
        self.gradient_bytes
    }
    /// Bytes a rejoining peer downloads.
    #[must_use]
    pub const fn state_bytes(&self) -> u64 {
        self.state_bytes
    }
    /// Grouping and algorithm.
    #[must_use]
    pub const fn topology(&self) -> Topology {
        self.topology
    }
    /// Whether all-to-all spans are sized by uplink bandwidth.
    #[must_use]
    pub const fn spans_by_bandwidth(&self) -> bool {
        self.spans_by_bandwidth
    }
    /// The simulated-time bound in seconds.
    #[must_use]
    pub const fn max_sim_time_s(&self) -> f64 {
        self.max_sim_time_s
    }
    /// Seconds after which an unfinished group attempt is aborted and re-run.
    #[must_use]
    pub const fn attempt_timeout_s(&self) -> f64 {
        self.attempt_timeout_s
    }
    /// The validated network.
    #[must_use]
    pub const fn net(&self) -> &NetConfig {
        &self.net
    }
    /// Step time of each peer's device class.
    #[must_use]
    pub fn step_times(&self) -> &[StepTime] {
        &self.step_times
    }
    /// Stragglers.
    #[must_use]
    pub const fn stragglers(&self) -> Stragglers {
        self.stragglers
    }
    /// Churn.
    #[must_use]
    pub const fn churn(&self) -> &ChurnSpec {
        &self.churn
    }
    /// Partition windows.
    #[must_use]
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }
    /// Peers.
    #[must_use]
    pub fn peers(&self) -> usize {
        self.step_times.len()
    }
    /// Protocol mode, if the scenario runs the real peers.
    #[must_use]
    pub const fn protocol(&self) -> Option<&ProtocolSpec> {
        self.protocol.as_ref()
    }
}

impl TryFrom<RawScenario> for Scenario {
    type Error = ScenarioError;

    fn try_from(raw: RawScenario) -> Result<Self, ScenarioError> {
        if raw.peers < 2 {
            return Err(ScenarioError::TooFewPeers(raw.peers));
        }
        if raw.rounds == 0 {
            return Err(ScenarioError::NoRounds);
        }
        let protocol = protocol::protocol_spec(&raw)?;
        let gradient_bytes = match (&protocol, raw.gradient_bytes) {
            (Some(_), Some(_)) => return Err(ScenarioError::ProtocolBytes),
            (Some(_), None) if raw.state_bytes != 0 => return Err(ScenarioError::ProtocolBytes),
            (Some(p), None) => p.model_bytes,
            (None, Some(b)) if b > 0 => b,
            (None, _) => return Err(ScenarioError::NoGradient),
        };
        let max_sim_time_s = raw.max_sim_time_s.unwrap_or(7.0 * 86_400.0);
        if !(max_sim_time_s.is_finite() && max_sim_time_s > 0.0) {
            return Err(ScenarioError::MaxSimTime);
        }
        let attempt_timeout_s = raw.attempt_timeout_s.unwrap_or(300.0);
        if !(attempt_timeout_s.is_finite() && attempt_timeout_s > 0.0) {
            return Err(ScenarioError::AttemptTimeout);
        }
        let topology = topology(&raw.algorithm, raw.group_size)?;
        let (peer_links, step_times) = assign_classes(&raw.classes, raw.peers)?;
        let net = NetConfig::new(peer_links, sites(&raw.sites), loss(raw.loss.as_ref()))?;
        Ok(Self {
            name: raw.name,
            rounds: raw.rounds,
            gradient_bytes,
            state_bytes: if raw.state_bytes == 0 {
                gradient_bytes
            } else {
                raw.state_bytes
            },
            topology,
            spans_by_bandwidth: raw.spans_by_bandwidth || raw.algorithm == "protocol",
            max_sim_time_s,
            attempt_timeout_s,
            net,
            step_times,
            stragglers: stragglers(raw.stragglers.as_ref())?,
            churn: churn_spec(raw.churn.as_ref(), raw.peers as usize)?,
            partitions: partitions(&raw.partitions, raw.peers)?,
            protocol,
        })
    }
}

fn topology(algorithm: &str, group_size: Option<u32>) -> Result<Topology, ScenarioError> {
    let bad_group = || ScenarioError::GroupSize {
        algorithm: algorithm.to_owned(),
        group_size,
    };
    let global = |a| {
        group_size
            .is_none()
            .then_some(Topology::Global(a))
            .ok_or_else(bad_group)
    };
    match algorithm {
        "ring" => global(Algorithm::Ring),
        "butterfly" => global(Algorithm::Butterfly),
        "all-to-all" => global(Algorithm::AllToAll),
        // The protocol's round is an all-to-all reduce-scatter and all-gather: the collective
        // model `runner::run` uses for a protocol scenario (the mesh runs the real peers).
        "protocol" => global(Algorithm::AllToAll),
        "moshpit" => match group_size {
            Some(g) if g >= 2 => Ok(Topology::Moshpit { group_size: g }),
            _ => Err(bad_group()),
        },
        other => Err(ScenarioError::UnknownAlgorithm(other.to_owned())),
    }
}

/// Peers go to classes in blocks: class k gets peers [⌊c_k·n⌉, ⌊c_{k+1}·n⌉) of the cumulative
/// fractions c, so the assignment is deterministic and needs no randomness.
fn assign_classes(
    classes: &[RawClass],
    peers: u32,
) -> Result<(Vec<PeerLink>, Vec<StepTime>), ScenarioError> {
    if classes.is_empty() {
        return Err(ScenarioError::NoClasses);
    }
    let sum: f64 = classes.iter().map(|c| c.fraction).sum();
    if classes
        .iter()
        .any(|c| c.fraction.is_nan() || c.fraction <= 0.0)
        || (sum - 1.0).abs() > 1e-6
    {
        return Err(ScenarioError::ClassFractions { sum });
    }
    let n = f64::from(peers);
    let (mut links, mut steps) = (Vec::new(), Vec::new());
    let mut cumulative = 0.0;
    for (k, c) in classes.iter().enumerate() {
        check_class(c)?;
        cumulative += c.fraction;
        let end = if k + 1 == classes.len() {
            peers as usize
        } else {
            (cumulative * n).round() as usize
        };
        let link = PeerLink {
            up_bytes_per_s: c.up_mbit_s * MBIT_BYTES,
            down_bytes_per_s: c.down_mbit_s * MBIT_BYTES,
            latency_us: (c.latency_ms * 1e3).round() as u64,
            site: c.site,
        };
        let step = StepTime {
            mean_s: c.step_time_mean_s,
            sigma: c.step_time_sigma,
        };
        while links.len() < end {
            links.push(link);
            steps.push(step);
        }
    }
    Ok((links, steps))
}

fn check_class(c: &RawClass) -> Result<(), ScenarioError> {
    let step_ok = c.step_time_mean_s.is_finite()
        && c.step_time_mean_s > 0.0
        && c.step_time_sigma.is_finite()
        && c.step_time_sigma >= 0.0;
    if !step_ok {
        return Err(ScenarioError::StepTime {
            class: c.name.clone(),
        });
    }
    if !(c.latency_ms.is_finite() && c.latency_ms >= 0.0) {
        return Err(ScenarioError::Latency {
            class: c.name.clone(),
        });
    }
    Ok(())
}

fn sites(raw: &[RawSite]) -> Vec<SiteLink> {
    raw.iter()
        .map(|s| SiteLink {
            up_bytes_per_s: s.up_mbit_s * MBIT_BYTES,
            down_bytes_per_s: s.down_mbit_s * MBIT_BYTES,
            latency_us: (s.latency_ms.max(0.0) * 1e3).round() as u64,
        })
        .collect()
}

fn loss(raw: Option<&RawLoss>) -> LossModel {
    match raw {
        None => LossModel::None,
        Some(RawLoss::Retransmit { rate }) => LossModel::Retransmit { rate: *rate },
        Some(RawLoss::Drop { rate }) => LossModel::Drop { rate: *rate },
    }
}

fn stragglers(raw: Option<&RawStragglers>) -> Result<Stragglers, ScenarioError> {
    let Some(s) = raw else {
        return Ok(Stragglers::NONE);
    };
    if !((0.0..=1.0).contains(&s.fraction) && s.slowdown.is_finite() && s.slowdown >= 1.0) {
        return Err(ScenarioError::Stragglers {
            fraction: s.fraction,
            slowdown: s.slowdown,
        });
    }
    Ok(Stragglers {
        fraction: s.fraction,
        slowdown: s.slowdown,
    })
}

pub(crate) fn churn_spec(raw: Option<&RawChurn>, peers: usize) -> Result<ChurnSpec, ScenarioError> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    match raw {
        None => Ok(ChurnSpec::None),
        Some(RawChurn::Weibull {
            session_shape,
            session_scale_s,
            downtime_shape,
            downtime_scale_s,
        }) => {
            let all = [
                *session_shape,
                *session_scale_s,
                *downtime_shape,
                *downtime_scale_s,
            ];
            if !all.into_iter().all(positive) {
                return Err(ScenarioError::Weibull);
            }
            Ok(ChurnSpec::Weibull {
                session: WeibullSpec {
                    shape: *session_shape,
                    scale_s: *session_scale_s,
                },
                downtime: WeibullSpec {
                    shape: *downtime_shape,
                    scale_s: *downtime_scale_s,
                },
            })
        }
        Some(RawChurn::Trace { path }) => Ok(ChurnSpec::Trace(churn::read_trace(path, peers)?)),
    }
}

fn partitions(raw: &[RawPartition], peers: u32) -> Result<Vec<Partition>, ScenarioError> {
    raw.iter()
        .enumerate()
        .map(|(index, p)| {
            let cut_peers = (p.fraction * f64::from(peers)).round() as u32;
            let ok = p.start_s >= 0.0
                && p.end_s > p.start_s
                && p.fraction > 0.0
                && p.fraction <= 0.5
                && cut_peers > 0;
            if !ok {
                return Err(ScenarioError::Partition { index });
            }
            Ok(Partition {
                start_s: p.start_s,
                end_s: p.end_s,
                cut_peers,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
peers = 8
rounds = 3
gradient_bytes = 1000000
algorithm = "ring"
[[classes]]
name = "gpu"
fraction = 1.0
step_time_mean_s = 0.5
up_mbit_s = 1000
down_mbit_s = 1000
latency_ms = 1
"#;

    fn parse(extra: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml(&format!("{BASE}{extra}"), Path::new("."))
    }

    #[test]
    fn base_scenario_validates() {
        let s = parse("").unwrap();
        assert_eq!(s.peers(), 8);
        assert_eq!(s.state_bytes(), 1_000_000);
        assert_eq!(s.net().peers()[0].up_bytes_per_s, 125e6);
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let bad = |text: &str| Scenario::from_toml(text, Path::new(".")).unwrap_err();
        assert!(matches!(
            bad(&BASE.replace("peers = 8", "peers = 1")),
            ScenarioError::TooFewPeers(1)
        ));
        assert!(matches!(
            bad(&BASE.replace("rounds = 3", "rounds = 0")),
            ScenarioError::NoRounds
        ));
        assert!(matches!(
            bad(&BASE.replace("\"ring\"", "\"star\"")),
            ScenarioError::UnknownAlgorithm(_)
        ));
        assert!(matches!(
            bad(&BASE.replace("\"ring\"", "\"moshpit\"")),
            ScenarioError::GroupSize { .. }
        ));
        assert!(matches!(
            bad(&BASE.replace("fraction = 1.0", "fraction = 0.5")),
            ScenarioError::ClassFractions { .. }
        ));
        assert!(matches!(
            bad(&BASE.replace("up_mbit_s = 1000", "up_mbit_s = 0")),
            ScenarioError::Net(_)
        ));
        assert!(matches!(
            parse("[stragglers]\nfraction = 0.1\nslowdown = 0.5\n").unwrap_err(),
            ScenarioError::Stragglers { .. }
        ));
        assert!(matches!(
            parse("[churn]\nmodel = \"weibull\"\nsession_shape = 0\nsession_scale_s = 1\ndowntime_shape = 1\ndowntime_scale_s = 1\n").unwrap_err(),
            ScenarioError::Weibull
        ));
        assert!(matches!(
            parse("[[partitions]]\nstart_s = 5\nend_s = 1\nfraction = 0.25\n").unwrap_err(),
            ScenarioError::Partition { index: 0 }
        ));
        assert!(matches!(
            parse("bogus = 1\n").unwrap_err(),
            ScenarioError::Toml(_)
        ));
        let no_timeout = BASE.replace("rounds = 3", "rounds = 3\nattempt_timeout_s = 0");
        assert!(matches!(bad(&no_timeout), ScenarioError::AttemptTimeout));
    }

    #[test]
    fn protocol_mode_rules_have_their_own_errors() {
        let proto = |section: &str| {
            let text = BASE
                .replace("gradient_bytes = 1000000\n", "")
                .replace("\"ring\"", "\"protocol\"");
            Scenario::from_toml(&format!("{text}{section}"), Path::new("."))
        };
        let ok = "[protocol]\nfloats = 1024\nmodel_bytes = 1000000\nround_timeout_s = 6\n";
        let s = proto(ok).unwrap();
        let p = s.protocol().unwrap();
        assert_eq!((p.floats, s.gradient_bytes()), (1024, 1_000_000));
        assert!((p.payload_scale - 1e6 / 4096.0).abs() < 1e-9);
        assert_eq!(s.mesh_spec().unwrap().founders, 8);
        assert!(parse("").unwrap().mesh_spec().is_none());
        assert!(matches!(
            proto("").unwrap_err(),
            ScenarioError::ProtocolSection
        ));
        assert!(matches!(
            parse(ok).unwrap_err(),
            ScenarioError::ProtocolSection
        ));
        let with_bytes = BASE.replace("\"ring\"", "\"protocol\"") + ok;
        assert!(matches!(
            Scenario::from_toml(&with_bytes, Path::new(".")).unwrap_err(),
            ScenarioError::ProtocolBytes
        ));
        let small = ok.replace("1000000", "100");
        assert!(matches!(
            proto(&small).unwrap_err(),
            ScenarioError::ProtocolVector { .. }
        ));
        let no_timeout = ok.replace("round_timeout_s = 6", "round_timeout_s = 0");
        assert!(matches!(
            proto(&no_timeout).unwrap_err(),
            ScenarioError::ProtocolTimeout
        ));
        let chunk = format!("{ok}state_chunk_bytes = 0\n");
        assert!(matches!(
            proto(&chunk).unwrap_err(),
            ScenarioError::ProtocolConfig(_)
        ));
    }
}
