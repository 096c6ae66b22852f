//! The network layer's validated configuration.

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::metrics::Registry;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PreSharedKey;
use libp2p::{Multiaddr, PeerId};

use super::frame::{FrameCaps, InboundBudget};

/// A configuration rule that was violated; one variant per rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No listen address was given.
    #[error("at least one listen address is required")]
    NoListenAddress,
    /// A bootstrap address lacks the `/p2p/<peer id>` suffix that authenticates its peer.
    #[error("bootstrap address {addr} must end with /p2p/<peer id>")]
    BootstrapWithoutPeerId {
        /// The address.
        addr: Multiaddr,
    },
    /// A relay address lacks the `/p2p/<peer id>` suffix that authenticates the relay.
    #[error("relay address {addr} must end with /p2p/<peer id> (the relay node's full address)")]
    RelayWithoutPeerId {
        /// The address.
        addr: Multiaddr,
    },
    /// A QUIC address was given together with a mesh key, which QUIC cannot honour.
    #[error("{addr} is a QUIC address, but a mesh key is set and pnet cannot wrap QUIC; use TCP")]
    QuicWithMeshKey {
        /// The address.
        addr: Multiaddr,
    },
    /// The payload cap is zero or above the hard limit.
    #[error("frame payload cap {bytes} is outside 1..={limit}")]
    PayloadCap {
        /// Requested cap.
        bytes: u64,
        /// Hard limit.
        limit: u64,
    },
    /// A timeout is zero.
    #[error("{name} must be positive")]
    ZeroTimeout {
        /// Which timeout.
        name: &'static str,
    },
}

/// The default inbound frame budget is never below this.
const INBOUND_FRAME_BYTES_MIN: u64 = 64 << 20;

/// Validated network configuration; build it with [`NetConfig::builder`].
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<(PeerId, Multiaddr)>,
    pub(crate) mesh_key: Option<PreSharedKey>,
    pub(crate) mdns: bool,
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) frame_caps: FrameCaps,
    pub(crate) inbound_frame_bytes: InboundBudget,
    pub(crate) frame_timeout: Duration,
    pub(crate) idle_connection_timeout: Duration,
    pub(crate) lanes: bool,
    pub(crate) lane_port: u16,
    pub(crate) extra_metrics: Option<MetricsRegistrar>,
    pub(crate) training: Option<TrainingDescriptor>,
    pub(crate) relay_server: bool,
    pub(crate) relays: Vec<(PeerId, Multiaddr)>,
}

/// What every node of a mesh must train alike (model and shape, seed, strategy, codec, …), as
/// `key=value` words. Nodes tell each other theirs in libp2p's identify exchange; a peer whose
/// descriptor differs is named in a one-line error (the first key that differs, both values)
/// and refused, instead of its rounds failing silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingDescriptor(String);

impl TrainingDescriptor {
    /// The words `key=value`, in the order given.
    #[must_use]
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        let words: Vec<String> = pairs
            .into_iter()
            .map(|(key, value)| format!("{key}={}", value.replace(char::is_whitespace, "_")))
            .collect();
        Self(words.join(" "))
    }

    /// The descriptor as words.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identify agent version that carries it.
    pub(crate) fn agent_version(&self) -> String {
        format!("{AGENT}; trains {}", self.0)
    }

    /// The descriptor in a peer's identify agent version, if it sent one.
    pub(crate) fn of_agent(agent_version: &str) -> Option<&str> {
        agent_version
            .split_once("; trains ")
            .map(|(_, words)| words)
    }

    /// How `theirs` differs from this one: the first key with another value (or missing on one
    /// side), as `key: theirs X, ours Y`. `None` when they agree.
    #[must_use]
    pub fn difference(&self, theirs: &str) -> Option<String> {
        if self.0 == theirs {
            return None;
        }
        let pairs = |s: &str| -> Vec<(String, String)> {
            s.split_whitespace()
                .map(|w| match w.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (w.to_owned(), String::new()),
                })
                .collect()
        };
        let (ours, theirs) = (pairs(&self.0), pairs(theirs));
        let value = |list: &[(String, String)], key: &str| {
            list.iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| "(none)".to_owned(), |(_, v)| v.clone())
        };
        let keys = ours.iter().chain(&theirs).map(|(k, _)| k.as_str());
        let differing = keys
            .into_iter()
            .find(|k| value(&ours, k) != value(&theirs, k))
            .unwrap_or("training");
        Some(format!(
            "{differing}: theirs {}, ours {}",
            value(&theirs, differing),
            value(&ours, differing)
        ))
    }
}

/// The identify agent version's prefix.
pub(crate) const AGENT: &str = concat!("gradmesh/", env!("CARGO_PKG_VERSION"));

/// Registers metrics of other node components in the network layer's registry, so one
/// `/metrics` endpoint serves them all (under the `gradmesh_` prefix).
#[derive(Clone)]
pub struct MetricsRegistrar(pub std::sync::Arc<dyn Fn(&mut Registry) + Send + Sync>);

impl std::fmt::Debug for MetricsRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRegistrar")
    }
}

impl NetConfig {
    /// A builder with every field at its default.
    #[must_use]
    pub fn builder() -> NetConfigBuilder {
        NetConfigBuilder::default()
    }

    /// The frame caps this node enforces.
    #[must_use]
    pub const fn frame_caps(&self) -> FrameCaps {
        self.frame_caps
    }

    /// The gossipsub topic of this mesh: one per mesh key, so meshes never mix announcements.
    #[must_use]
    pub fn topic_name(&self) -> String {
        match &self.mesh_key {
            Some(key) => format!("gradmesh/announce/2/{}", key.fingerprint()),
            None => "gradmesh/announce/2/open".to_owned(),
        }
    }
}

/// Builder of [`NetConfig`]; [`NetConfigBuilder::build`] checks every rule.
#[derive(Debug, Clone)]
pub struct NetConfigBuilder {
    /// Default: `/ip4/127.0.0.1/tcp/0`.
    listen: Vec<Multiaddr>,
    /// Default: none.
    bootstrap: Vec<Multiaddr>,
    /// Default: none (open mesh, QUIC enabled).
    mesh_key: Option<PreSharedKey>,
    /// Default: off (mDNS multicasts on the LAN).
    mdns: bool,
    /// Default: none (no metrics endpoint).
    metrics_addr: Option<SocketAddr>,
    /// Default: 256 MiB.
    payload_bytes_max: u64,
    /// Default: twice the payload cap, at least 64 MiB.
    inbound_frame_bytes: Option<u64>,
    /// Default: 120 s; bounds one frame's transfer and acknowledgement.
    frame_timeout: Duration,
    /// Default: 1 h; libp2p closes connections without open streams after 10 s otherwise,
    /// and a training mesh wants its links kept between rounds.
    idle_connection_timeout: Duration,
    /// Default: on. Large frames go over direct AES-GCM lanes (see `lane`).
    lanes: bool,
    /// Default: 0 (any free port), on the first listen address's IP.
    lane_port: u16,
    /// Default: none.
    extra_metrics: Option<MetricsRegistrar>,
    /// Default: none (peers are not checked).
    training: Option<TrainingDescriptor>,
    /// Default: off.
    relay_server: bool,
    /// Default: none.
    relays: Vec<Multiaddr>,
}

impl Default for NetConfigBuilder {
    fn default() -> Self {
        Self {
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4([127, 0, 0, 1].into()))
                    .with(Protocol::Tcp(0)),
            ],
            bootstrap: Vec::new(),
            mesh_key: None,
            mdns: false,
            metrics_addr: None,
            payload_bytes_max: FrameCaps::default().payload_bytes_max(),
            inbound_frame_bytes: None,
            frame_timeout: Duration::from_secs(120),
            idle_connection_timeout: Duration::from_secs(3600),
            lanes: true,
            lane_port: 0,
            extra_metrics: None,
            training: None,
            relay_server: false,
            relays: Vec::new(),
        }
    }
}

impl NetConfigBuilder {
    /// Addresses to listen on (replaces the default).
    #[must_use]
    pub fn listen(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.listen = addrs;
        self
    }

    /// Peers to dial and seed Kademlia with; each must end with `/p2p/<peer id>`.
    #[must_use]
    pub fn bootstrap(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.bootstrap = addrs;
        self
    }

    /// The mesh's pre-shared key; peers without it cannot connect.
    #[must_use]
    pub fn mesh_key(mut self, key: Option<PreSharedKey>) -> Self {
        self.mesh_key = key;
        self
    }

    /// Whether to discover peers with mDNS.
    #[must_use]
    pub const fn mdns(mut self, enabled: bool) -> Self {
        self.mdns = enabled;
        self
    }

    /// Where to serve `/metrics`.
    #[must_use]
    pub const fn metrics_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.metrics_addr = addr;
        self
    }

    /// The largest frame payload accepted or sent, in bytes.
    #[must_use]
    pub const fn payload_bytes_max(mut self, bytes: u64) -> Self {
        self.payload_bytes_max = bytes;
        self
    }

    /// The bytes of inbound frames read at once, over all peers (raised to one frame at the
    /// payload cap when lower).
    #[must_use]
    pub const fn inbound_frame_bytes(mut self, bytes: u64) -> Self {
        self.inbound_frame_bytes = Some(bytes);
        self
    }

    /// How long one frame may take to be delivered and acknowledged.
    #[must_use]
    pub const fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// How long a connection without open streams stays up.
    #[must_use]
    pub const fn idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.idle_connection_timeout = timeout;
        self
    }

    /// Whether large frames go over direct lanes (off: everything over libp2p streams).
    #[must_use]
    pub const fn lanes(mut self, enabled: bool) -> Self {
        self.lanes = enabled;
        self
    }

    /// The TCP port lanes listen on (0: any free port).
    #[must_use]
    pub const fn lane_port(mut self, port: u16) -> Self {
        self.lane_port = port;
        self
    }

    /// What this node trains: peers that train something else are named and refused.
    #[must_use]
    pub fn training(mut self, descriptor: TrainingDescriptor) -> Self {
        self.training = Some(descriptor);
        self
    }

    /// Whether this node relays connections for peers behind NAT (circuit relay v2).
    #[must_use]
    pub const fn relay_server(mut self, enabled: bool) -> Self {
        self.relay_server = enabled;
        self
    }

    /// Relays to be reachable through (each ends with `/p2p/<peer id>`): the node reserves a
    /// slot on each and advertises the circuit address, so peers that cannot dial it directly
    /// (it is behind NAT) connect through the relay, then try to punch a direct connection.
    #[must_use]
    pub fn relays(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.relays = addrs;
        self
    }

    /// Metrics of other components to serve next to the network's.
    #[must_use]
    pub fn extra_metrics(mut self, registrar: MetricsRegistrar) -> Self {
        self.extra_metrics = Some(registrar);
        self
    }

    /// Checks every rule and returns the validated configuration.
    pub fn build(self) -> Result<NetConfig, ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::NoListenAddress);
        }
        if self.mesh_key.is_some() {
            let quic = self
                .listen
                .iter()
                .chain(&self.bootstrap)
                .chain(&self.relays)
                .find(|a| is_quic(a));
            if let Some(addr) = quic {
                return Err(ConfigError::QuicWithMeshKey { addr: addr.clone() });
            }
        }
        let bootstrap = named_peers(self.bootstrap, |addr| ConfigError::BootstrapWithoutPeerId {
            addr,
        })?;
        let relays = named_peers(self.relays, |addr| ConfigError::RelayWithoutPeerId { addr })?;
        let frame_caps = FrameCaps::new(self.payload_bytes_max).ok_or(ConfigError::PayloadCap {
            bytes: self.payload_bytes_max,
            limit: super::frame::PAYLOAD_BYTES_MAX_LIMIT,
        })?;
        let inbound = self
            .inbound_frame_bytes
            .unwrap_or_else(|| (2 * self.payload_bytes_max).max(INBOUND_FRAME_BYTES_MIN));
        for (name, value) in [
            ("frame timeout", self.frame_timeout),
            ("idle connection timeout", self.idle_connection_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroTimeout { name });
            }
        }
        Ok(NetConfig {
            listen: self.listen,
            bootstrap,
            mesh_key: self.mesh_key,
            mdns: self.mdns,
            metrics_addr: self.metrics_addr,
            inbound_frame_bytes: InboundBudget::new(inbound, &frame_caps),
            frame_caps,
            frame_timeout: self.frame_timeout,
            idle_connection_timeout: self.idle_connection_timeout,
            lanes: self.lanes,
            lane_port: self.lane_port,
            extra_metrics: self.extra_metrics,
            training: self.training,
            relay_server: self.relay_server,
            relays,
        })
    }
}

/// Each address with the peer its `/p2p/<peer id>` suffix names; `missing` for one without.
fn named_peers(
    addrs: Vec<Multiaddr>,
    missing: fn(Multiaddr) -> ConfigError,
) -> Result<Vec<(PeerId, Multiaddr)>, ConfigError> {
    addrs
        .into_iter()
        .map(|addr| match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Ok((peer, addr)),
            _ => Err(missing(addr)),
        })
        .collect()
}

fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic | Protocol::Udp(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_descriptor_names_the_first_setting_that_differs() {
        let ours = TrainingDescriptor::new([
            ("model", "transformer:layers=2,width=64".to_owned()),
            ("seed", "1".to_owned()),
            ("codec", "none".to_owned()),
        ]);
        let agent = ours.agent_version();
        assert!(agent.starts_with(AGENT));
        assert_eq!(TrainingDescriptor::of_agent(&agent), Some(ours.as_str()));
        assert_eq!(TrainingDescriptor::of_agent("gradmesh/0.0.1"), None);
        assert_eq!(ours.difference(ours.as_str()), None);
        assert_eq!(
            ours.difference("model=transformer:layers=2,width=64 seed=2 codec=int8")
                .as_deref(),
            Some("seed: theirs 2, ours 1")
        );
        assert_eq!(
            ours.difference("model=mlp").as_deref(),
            Some("model: theirs mlp, ours transformer:layers=2,width=64")
        );
        assert_eq!(
            ours.difference("model=transformer:layers=2,width=64 seed=1")
                .as_deref(),
            Some("codec: theirs (none), ours none")
        );
    }

    fn key() -> PreSharedKey {
        PreSharedKey::new([7; 32])
    }

    #[test]
    fn defaults_are_valid() {
        let config = NetConfig::builder().build().expect("defaults");
        assert_eq!(config.listen.len(), 1);
        assert_eq!(config.topic_name(), "gradmesh/announce/2/open");
    }

    #[test]
    fn each_rule_has_its_error() {
        let quic: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr");
        let no_peer: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("addr");
        let cases = [
            NetConfig::builder().listen(vec![]).build(),
            NetConfig::builder()
                .listen(vec![quic])
                .mesh_key(Some(key()))
                .build(),
            NetConfig::builder()
                .bootstrap(vec![no_peer.clone()])
                .build(),
            NetConfig::builder().payload_bytes_max(0).build(),
            NetConfig::builder().frame_timeout(Duration::ZERO).build(),
            NetConfig::builder().relays(vec![no_peer]).build(),
        ];
        assert!(matches!(cases[0], Err(ConfigError::NoListenAddress)));
        assert!(matches!(cases[1], Err(ConfigError::QuicWithMeshKey { .. })));
        assert!(matches!(
            cases[2],
            Err(ConfigError::BootstrapWithoutPeerId { .. })
        ));
        assert!(matches!(cases[3], Err(ConfigError::PayloadCap { .. })));
        assert!(matches!(cases[4], Err(ConfigError::ZeroTimeout { .. })));
        assert!(matches!(
            cases[5],
            Err(ConfigError::RelayWithoutPeerId { .. })
        ));
    }

    #[test]
    fn meshes_with_different_keys_use_different_topics() {
        let a = NetConfig::builder()
            .mesh_key(Some(key()))
            .build()
            .expect("a");
        let b = NetConfig::builder()
            .mesh_key(Some(PreSharedKey::new([8; 32])))
            .build()
            .expect("b");
        assert_ne!(a.topic_name(), b.topic_name());
    }
}
