//! Validated peer configuration. Machines accept only [`PeerConfig`], which can only be built by
//! [`PeerConfigBuilder::build`], so an unchecked configuration never reaches them.

use core::time::Duration;

use thiserror::Error;

use crate::wire::STATE_CHUNK_BYTES_MAX;

pub use gradmesh_math::codec::{CodecKind, ParseCodecKindError};
pub use gradmesh_math::robust::{Aggregation, ParseAggregationError};

/// A configuration rule that does not hold; one variant per rule.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Round phases must be ordered: 0 < gather < failover < backup < round timeout.
    #[error(
        "round phases must satisfy 0 < gather ({gather:?}) < failover ({failover:?}) < backup ({backup:?}) < round timeout ({round:?})"
    )]
    PhasesOutOfOrder {
        /// Gather timeout.
        gather: Duration,
        /// Failover timeout.
        failover: Duration,
        /// Backup timeout.
        backup: Duration,
        /// Round timeout.
        round: Duration,
    },
    /// Peers would be forgotten between two announcements.
    #[error("peer ttl {ttl:?} must be at least twice the announce interval {interval:?}")]
    TtlTooShort {
        /// Announce interval.
        interval: Duration,
        /// Peer ttl.
        ttl: Duration,
    },
    /// A duration that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// State chunks must fit the wire bound.
    #[error("state chunk of {0} bytes is outside 1..={STATE_CHUNK_BYTES_MAX}")]
    ChunkSize(u32),
    /// At least one snapshot must be retained for donors to serve.
    #[error("snapshots retained must be at least 2 (current and previous), got {0}")]
    TooFewSnapshots(usize),
    /// An aggregation rule's parameter is out of range.
    #[error("aggregation {rule}: {reason}")]
    Aggregation {
        /// The rule as [`Aggregation`]'s `Display` writes it.
        rule: String,
        /// Which parameter bound it violates.
        reason: &'static str,
    },
    /// The span codec keeps per-peer state (an error-feedback residual), which the mesh cannot
    /// carry: a replacement owner or a joiner would not hold it, and it is not part of the synced
    /// state (docs/protocol.md §3.7). Only stateless codecs (fp16, bf16, int8) may compress spans.
    #[error("codec {0} is stateful (error feedback); the mesh only takes none, fp16, bf16 or int8")]
    StatefulCodec(String),
}

/// Who may fetch the committed states a peer holds (`StateRequest`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServeState {
    /// Any peer that asks: what an open mesh needs so that new peers can join. Anyone who can
    /// connect can then read the model and its optimizer state.
    #[default]
    Anyone,
    /// Only peers this peer has seen contribute: contributors of the committees of the states it
    /// holds and of the round it runs. A member that fell behind or restarted can resync; a peer
    /// that never contributed cannot join. For meshes whose state is not public.
    Members,
}

/// Timeouts, sizes and the aggregation rule of a peer. Build with [`PeerConfig::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    pub(crate) gather_timeout: Duration,
    pub(crate) failover_timeout: Duration,
    pub(crate) backup_timeout: Duration,
    pub(crate) round_timeout: Duration,
    pub(crate) collect_window: Duration,
    pub(crate) leader_failover: Duration,
    pub(crate) announce_interval: Duration,
    pub(crate) peer_ttl: Duration,
    pub(crate) state_chunk_bytes: u32,
    pub(crate) sync_request_timeout: Duration,
    pub(crate) sync_inflight_per_donor: usize,
    pub(crate) snapshots_retained: usize,
    pub(crate) genesis_quorum: usize,
    pub(crate) aggregation: Aggregation,
    pub(crate) codec: CodecKind,
    pub(crate) serve_state: ServeState,
    pub(crate) announce_seq_base: u64,
    pub(crate) refound_after: Option<Duration>,
}

impl PeerConfig {
    /// A builder holding the defaults documented on each setter.
    #[must_use]
    pub fn builder() -> PeerConfigBuilder {
        PeerConfigBuilder::default()
    }

    /// The hard bound on a round: from accepting a roster to commit or abort.
    #[must_use]
    pub const fn round_timeout(&self) -> Duration {
        self.round_timeout
    }

    /// The same configuration with a different [`PeerConfigBuilder::genesis_quorum`] (any
    /// positive value is valid; zero is read as one).
    #[must_use]
    pub fn with_genesis_quorum(mut self, votes: usize) -> Self {
        self.genesis_quorum = votes.max(1);
        self
    }

    /// The same configuration whose announcements count from `base` (default 0). Receivers
    /// ignore an announcement whose counter is below the last they kept from its sender, so a
    /// restarted peer that counted from 0 again went unheard until they forgot it; a shell that
    /// starts each run's counter above the last run's (the node uses the wall clock in
    /// microseconds: far more microseconds pass than announcements go out) is heard at once.
    #[must_use]
    pub const fn with_announce_seq_base(mut self, base: u64) -> Self {
        self.announce_seq_base = base;
        self
    }

    /// The same configuration with a different [`PeerConfigBuilder::refound_after`].
    #[must_use]
    pub const fn with_refound_after(mut self, after: Option<Duration>) -> Self {
        self.refound_after = after;
        self
    }

    /// Chunk size of state snapshots.
    #[must_use]
    pub const fn state_chunk_bytes(&self) -> u32 {
        self.state_chunk_bytes
    }

    /// The rule span owners reduce their spans with (see [`PeerConfigBuilder::aggregation`]).
    #[must_use]
    pub const fn aggregation(&self) -> Aggregation {
        self.aggregation
    }

    /// How span values travel on the wire (see [`PeerConfigBuilder::codec`]).
    #[must_use]
    pub const fn codec(&self) -> CodecKind {
        self.codec
    }

    /// Who may fetch the states this peer holds (see [`PeerConfigBuilder::serve_state`]).
    #[must_use]
    pub const fn serve_state(&self) -> ServeState {
        self.serve_state
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            gather_timeout: Duration::from_secs(3),
            failover_timeout: Duration::from_secs(5),
            backup_timeout: Duration::from_secs(8),
            round_timeout: Duration::from_secs(12),
            collect_window: Duration::from_millis(300),
            leader_failover: Duration::from_secs(1),
            announce_interval: Duration::from_secs(1),
            peer_ttl: Duration::from_secs(5),
            state_chunk_bytes: 1 << 20,
            sync_request_timeout: Duration::from_secs(3),
            sync_inflight_per_donor: 2,
            snapshots_retained: 3,
            genesis_quorum: 1,
            aggregation: Aggregation::Mean,
            codec: CodecKind::None,
            serve_state: ServeState::Anyone,
            announce_seq_base: 0,
            refound_after: None,
        }
    }
}

/// Builder for [`PeerConfig`]; `build` checks every cross-field rule.
#[derive(Debug, Clone, Default)]
pub struct PeerConfigBuilder {
    config: PeerConfig,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub const fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl PeerConfigBuilder {
    setter!(
        /// How long a span owner waits for all contributions before reducing those it has
        /// (default 3 s).
        gather_timeout: Duration
    );
    setter!(
        /// When a member, still missing a reduced span, sends its contribution to the span's
        /// backup owner (default 5 s).
        failover_timeout: Duration
    );
    setter!(
        /// When a backup owner reduces the contributions it has (default 8 s).
        backup_timeout: Duration
    );
    setter!(
        /// Hard bound on a round; a peer that has not committed by then aborts (default 12 s).
        round_timeout: Duration
    );
    setter!(
        /// How long a leader waits for ready announcements before proposing (default 300 ms).
        collect_window: Duration
    );
    setter!(
        /// Extra wait per leader rank before the next candidate proposes (default 1 s).
        leader_failover: Duration
    );
    setter!(
        /// Interval of periodic announcements (default 1 s).
        announce_interval: Duration
    );
    setter!(
        /// A peer not heard from for this long is forgotten (default 5 s).
        peer_ttl: Duration
    );
    setter!(
        /// State snapshot chunk size in bytes (default 1 MiB).
        state_chunk_bytes: u32
    );
    setter!(
        /// A donor that does not answer a state request within this is dropped (default 3 s).
        sync_request_timeout: Duration
    );
    setter!(
        /// Outstanding chunk requests per donor (default 2).
        sync_inflight_per_donor: usize
    );
    setter!(
        /// Committed snapshots a donor keeps for joiners (default 3).
        snapshots_retained: usize
    );

    setter!(
        /// Votes the first round needs, which has no committee yet (default 1). Set it to a
        /// majority of the founding peers: then two groups of founders that cannot see each
        /// other can never both commit a first round.
        genesis_quorum: usize
    );

    setter!(
        /// The rule every span owner reduces its span with (default [`Aggregation::Mean`], the
        /// sample-weighted mean). Every peer of a mesh must use the same rule: peers with another
        /// rule compute other digests, so no quorum forms and rounds abort (safe, not live).
        /// Median and trimmed mean per span equal the global rule; Multi-Krum and centered
        /// clipping per span are span-local approximations (docs/protocol.md).
        aggregation: Aggregation
    );

    setter!(
        /// How contributions and reduced spans are encoded on the wire (default
        /// [`CodecKind::None`]: raw little-endian f32, exact). `fp16`, `bf16` and `int8:<block>`
        /// shrink both by about 2× and 3.8× (block 64); every contribution and every reduced span
        /// is then quantised once, and all holders of a span still hold bit-identical values
        /// (docs/protocol.md §3.7). Stateful codecs (top-k, PowerSGD) are refused by `build`.
        /// Every peer of a mesh must use the same codec: messages in another encoding are refused.
        codec: CodecKind
    );

    setter!(
        /// Who may fetch the states this peer holds (default [`ServeState::Anyone`]).
        serve_state: ServeState
    );

    setter!(
        /// Re-found the mesh after a mass failure (docs/protocol.md §5.6; default `None`:
        /// never). When this peer has heard from no strict majority of its state's committee for
        /// this long, it assumes the members it cannot hear are gone for good and goes on from
        /// the state it holds in the next epoch, with the live holders of that state as its
        /// founders. Setting it is the operator's confirmation of that assumption: two sides of a
        /// partition that both re-found train apart until an operator stops one.
        refound_after: Option<Duration>
    );

    /// Scales every duration so that the round timeout becomes `round_timeout`, keeping the
    /// default proportions. Convenient for simulations and tests with short rounds.
    #[must_use]
    pub fn scaled_to(mut self, round_timeout: Duration) -> Self {
        let base = PeerConfig::default();
        let scale =
            |d: Duration| d.mul_f64(round_timeout.as_secs_f64() / base.round_timeout.as_secs_f64());
        let c = &mut self.config;
        c.gather_timeout = scale(base.gather_timeout);
        c.failover_timeout = scale(base.failover_timeout);
        c.backup_timeout = scale(base.backup_timeout);
        c.round_timeout = round_timeout;
        c.collect_window = scale(base.collect_window);
        c.leader_failover = scale(base.leader_failover);
        c.announce_interval = scale(base.announce_interval);
        c.peer_ttl = scale(base.peer_ttl);
        c.sync_request_timeout = scale(base.sync_request_timeout);
        self
    }

    /// Checks every rule and returns the configuration.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn build(self) -> Result<PeerConfig, ConfigError> {
        let c = self.config;
        let ordered = Duration::ZERO < c.gather_timeout
            && c.gather_timeout < c.failover_timeout
            && c.failover_timeout < c.backup_timeout
            && c.backup_timeout < c.round_timeout;
        if !ordered {
            return Err(ConfigError::PhasesOutOfOrder {
                gather: c.gather_timeout,
                failover: c.failover_timeout,
                backup: c.backup_timeout,
                round: c.round_timeout,
            });
        }
        for (name, d) in [
            ("collect_window", c.collect_window),
            ("leader_failover", c.leader_failover),
            ("announce_interval", c.announce_interval),
            ("sync_request_timeout", c.sync_request_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if c.peer_ttl < c.announce_interval * 2 {
            return Err(ConfigError::TtlTooShort {
                interval: c.announce_interval,
                ttl: c.peer_ttl,
            });
        }
        if c.state_chunk_bytes == 0 || c.state_chunk_bytes > STATE_CHUNK_BYTES_MAX {
            return Err(ConfigError::ChunkSize(c.state_chunk_bytes));
        }
        if c.snapshots_retained < 2 {
            return Err(ConfigError::TooFewSnapshots(c.snapshots_retained));
        }
        if c.genesis_quorum == 0 {
            return Err(ConfigError::Zero("genesis_quorum"));
        }
        if c.sync_inflight_per_donor == 0 {
            return Err(ConfigError::Zero("sync_inflight_per_donor"));
        }
        check_aggregation(c.aggregation)?;
        if c.codec.is_stateful() {
            return Err(ConfigError::StatefulCodec(c.codec.to_string()));
        }
        Ok(c)
    }
}

/// The parameter bounds of a rule that do not depend on the number of contributions (those that
/// do, Multi-Krum's `n > 2f + 2`, are handled per span by the reduction).
fn check_aggregation(rule: Aggregation) -> Result<(), ConfigError> {
    let reason = match rule {
        Aggregation::TrimmedMean { beta } if !(0.0..0.5).contains(&beta) => {
            Some("beta must be in [0, 0.5)")
        }
        Aggregation::MultiKrum { m: 0, .. } => Some("m must be at least 1"),
        Aggregation::CenteredClipping { tau, .. } if !(tau.is_finite() && tau > 0.0) => {
            Some("tau must be finite and positive")
        }
        _ => None,
    };
    match reason {
        Some(reason) => Err(ConfigError::Aggregation {
            rule: rule.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_scaled_build() {
        assert!(PeerConfig::builder().build().is_ok());
        let c = PeerConfig::builder()
            .scaled_to(Duration::from_millis(600))
            .build()
            .expect("valid");
        assert_eq!(c.round_timeout(), Duration::from_millis(600));
        assert_eq!(c.gather_timeout, Duration::from_millis(150));
    }

    #[test]
    fn each_rule_has_its_error() {
        let b = PeerConfig::builder;
        assert!(matches!(
            b().gather_timeout(Duration::from_secs(6)).build(),
            Err(ConfigError::PhasesOutOfOrder { .. })
        ));
        assert!(matches!(
            b().peer_ttl(Duration::from_millis(1500)).build(),
            Err(ConfigError::TtlTooShort { .. })
        ));
        assert_eq!(
            b().state_chunk_bytes(0).build(),
            Err(ConfigError::ChunkSize(0))
        );
        assert_eq!(
            b().snapshots_retained(1).build(),
            Err(ConfigError::TooFewSnapshots(1))
        );
        assert_eq!(
            b().collect_window(Duration::ZERO).build(),
            Err(ConfigError::Zero("collect_window"))
        );
        for bad in [
            "trimmed-mean:0.5",
            "trimmed-mean:-0.1",
            "multi-krum:1:0",
            "centered-clipping:0:3",
        ] {
            let rule: Aggregation = bad.parse().expect("parses");
            assert!(
                matches!(
                    b().aggregation(rule).build(),
                    Err(ConfigError::Aggregation { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn codec_defaults_to_none_and_refuses_stateful_ones() {
        assert_eq!(
            PeerConfig::builder().build().map(|c| c.codec()),
            Ok(CodecKind::None)
        );
        for good in ["none", "fp16", "bf16", "int8:64", "int8:1"] {
            let kind: CodecKind = good.parse().expect("parses");
            let c = PeerConfig::builder().codec(kind).build();
            assert_eq!(c.map(|c| c.codec()), Ok(kind), "{good}");
        }
        for bad in ["topk:0.01", "powersgd:4"] {
            let kind: CodecKind = bad.parse().expect("parses");
            assert_eq!(
                PeerConfig::builder().codec(kind).build(),
                Err(ConfigError::StatefulCodec(bad.to_owned()))
            );
        }
    }

    #[test]
    fn aggregation_defaults_to_mean_and_is_kept() {
        assert_eq!(
            PeerConfig::builder().build().map(|c| c.aggregation()),
            Ok(Aggregation::Mean)
        );
        for good in [
            "median",
            "trimmed-mean:0.2",
            "multi-krum:1:3",
            "centered-clipping:1:3",
        ] {
            let rule: Aggregation = good.parse().expect("parses");
            let c = PeerConfig::builder()
                .aggregation(rule)
                .scaled_to(Duration::from_secs(1))
                .build();
            assert_eq!(c.map(|c| c.aggregation()), Ok(rule), "{good}");
        }
    }
}
