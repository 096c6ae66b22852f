//! Protocol mode: the validated `[protocol]` section and the [`MeshSpec`] a protocol scenario
//! runs.

use super::{RawScenario, Scenario, ScenarioError};
use crate::churn::ChurnSpec;
use crate::mesh::{Faults, MeshSpec, PartitionWindow};
use crate::time::SimTime;
use gradmesh_protocol::config::PeerConfig;
use std::time::Duration;

/// Protocol mode: the real peers and how they are configured.
#[derive(Debug, Clone)]
pub struct ProtocolSpec {
    /// The peers' validated configuration.
    pub config: PeerConfig,
    /// Floats averaged in memory.
    pub floats: usize,
    /// Bytes of the modelled vector on the wire.
    pub model_bytes: u64,
    /// Wire bytes per in-memory payload byte (≥ 1).
    pub payload_scale: f64,
    /// Whether every message goes through the wire codec.
    pub through_wire: bool,
}

impl Scenario {
    /// The protocol-driven run of this scenario, if it is in protocol mode. Loss applies for the
    /// whole run (the network's loss model); liveness is judged after the last partition heals
    /// when there is no churn, and not at all under churn (peers keep leaving to the end).
    #[must_use]
    pub fn mesh_spec(&self) -> Option<MeshSpec> {
        let p = self.protocol.as_ref()?;
        let until = SimTime::from_secs_f64(self.max_sim_time_s);
        let side_of = |cut: u32| {
            (0..self.peers() as u32)
                .map(|i| u32::from(i < cut))
                .collect()
        };
        let partitions: Vec<PartitionWindow> = self
            .partitions
            .iter()
            .map(|w| PartitionWindow {
                start: SimTime::from_secs_f64(w.start_s),
                end: SimTime::from_secs_f64(w.end_s),
                side_of: side_of(w.cut_peers),
            })
            .collect();
        let faults_end = match self.churn {
            ChurnSpec::None => partitions
                .iter()
                .map(|w| w.end)
                .max()
                .unwrap_or(SimTime::ZERO),
            _ => until,
        };
        Some(MeshSpec {
            net: self.net.clone(),
            founders: self.peers(),
            step_times: self.step_times.clone(),
            stragglers: self.stragglers,
            churn: self.churn.clone(),
            config: p.config.clone(),
            floats: p.floats,
            payload_scale: p.payload_scale,
            through_wire: p.through_wire,
            faults: Faults {
                drop_rate: 0.0,
                faults_end,
                kills: Vec::new(),
                joins: Vec::new(),
                partitions,
            },
            rounds: Some(self.rounds),
            until,
        })
    }
}

/// The `[protocol]` section, validated; `None` unless `algorithm = "protocol"`.
pub(super) fn protocol_spec(raw: &RawScenario) -> Result<Option<ProtocolSpec>, ScenarioError> {
    let p = match (raw.algorithm == "protocol", &raw.protocol) {
        (false, None) => return Ok(None),
        (true, Some(p)) => p,
        _ => return Err(ScenarioError::ProtocolSection),
    };
    let max = gradmesh_protocol::wire::SPAN_FLOATS_MAX;
    let vector_bytes = 4 * u64::from(p.floats);
    let model_bytes = p.model_bytes.unwrap_or(vector_bytes);
    if p.floats == 0 || p.floats > max || model_bytes < vector_bytes {
        return Err(ScenarioError::ProtocolVector { max });
    }
    if !(p.round_timeout_s.is_finite() && p.round_timeout_s > 0.0) {
        return Err(ScenarioError::ProtocolTimeout);
    }
    let mut builder = PeerConfig::builder().scaled_to(Duration::from_secs_f64(p.round_timeout_s));
    if let Some(chunk) = p.state_chunk_bytes {
        builder = builder.state_chunk_bytes(chunk);
    }
    Ok(Some(ProtocolSpec {
        config: builder.build()?,
        floats: p.floats as usize,
        model_bytes,
        payload_scale: model_bytes as f64 / vector_bytes as f64,
        through_wire: p.through_wire,
    }))
}
