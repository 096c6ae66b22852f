//! Network configuration: per-peer access links, optional shared site links, loss.

use thiserror::Error;

/// A peer's access link. Full duplex: uplink and downlink are independent resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerLink {
    /// Uplink capacity in bytes per second (> 0).
    pub up_bytes_per_s: f64,
    /// Downlink capacity in bytes per second (> 0).
    pub down_bytes_per_s: f64,
    /// This peer's share of one-way latency, in microseconds. The one-way latency between two
    /// peers is the sum of both endpoints' shares (plus both sites' WAN shares between sites).
    pub latency_us: u64,
    /// The site (data centre, home ISP region) this peer sits in, if sites are modelled.
    pub site: Option<u32>,
}

/// A site's shared WAN link: every flow between two different sites crosses the sender site's
/// uplink and the receiver site's downlink, so many peers of one site share its capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteLink {
    /// Site egress capacity in bytes per second (> 0).
    pub up_bytes_per_s: f64,
    /// Site ingress capacity in bytes per second (> 0).
    pub down_bytes_per_s: f64,
    /// Latency added to every inter-site flow leaving or entering this site, in microseconds.
    pub latency_us: u64,
}

/// How packet loss is modelled at flow level.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum LossModel {
    /// No loss.
    #[default]
    None,
    /// A reliable transport: a loss rate `q` costs retransmissions, so a message of `B` bytes puts
    /// `B / (1 − q)` bytes on the wire. Deterministic: no message is lost.
    Retransmit {
        /// Packet loss rate in [0, 1).
        rate: f64,
    },
    /// An unreliable transport: each message is lost whole with probability `rate` (decided by a
    /// seeded stream at send time). A lost message still uses bandwidth but is never delivered.
    Drop {
        /// Message loss probability in [0, 1].
        rate: f64,
    },
}

/// A violated network configuration rule.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum NetConfigError {
    /// A network needs at least one peer.
    #[error("the network has no peers")]
    NoPeers,
    /// Capacities must be finite and positive.
    #[error("peer {peer}: bandwidth must be finite and > 0 (up {up}, down {down})")]
    PeerBandwidth {
        /// The peer.
        peer: usize,
        /// Its uplink in bytes/s.
        up: f64,
        /// Its downlink in bytes/s.
        down: f64,
    },
    /// Capacities must be finite and positive.
    #[error("site {site}: bandwidth must be finite and > 0 (up {up}, down {down})")]
    SiteBandwidth {
        /// The site.
        site: usize,
        /// Its uplink in bytes/s.
        up: f64,
        /// Its downlink in bytes/s.
        down: f64,
    },
    /// A peer names a site that is not configured.
    #[error("peer {peer} is in site {site}, but only {sites} sites exist")]
    UnknownSite {
        /// The peer.
        peer: usize,
        /// The site it names.
        site: u32,
        /// How many sites exist.
        sites: usize,
    },
    /// Loss rates are probabilities (and a retransmit rate of 1 would never finish).
    #[error("loss rate {rate} is out of range")]
    LossRate {
        /// The rate given.
        rate: f64,
    },
}

/// A validated network: only [`NetConfig::new`] builds one.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    peers: Vec<PeerLink>,
    sites: Vec<SiteLink>,
    loss: LossModel,
}

impl NetConfig {
    /// Checks every rule and returns a config the [`super::Network`] accepts.
    pub fn new(
        peers: Vec<PeerLink>,
        sites: Vec<SiteLink>,
        loss: LossModel,
    ) -> Result<Self, NetConfigError> {
        if peers.is_empty() {
            return Err(NetConfigError::NoPeers);
        }
        let ok = |x: f64| x.is_finite() && x > 0.0;
        for (peer, p) in peers.iter().enumerate() {
            if !ok(p.up_bytes_per_s) || !ok(p.down_bytes_per_s) {
                let (up, down) = (p.up_bytes_per_s, p.down_bytes_per_s);
                return Err(NetConfigError::PeerBandwidth { peer, up, down });
            }
            if let Some(site) = p.site.filter(|&s| s as usize >= sites.len()) {
                let sites = sites.len();
                return Err(NetConfigError::UnknownSite { peer, site, sites });
            }
        }
        for (site, s) in sites.iter().enumerate() {
            if !ok(s.up_bytes_per_s) || !ok(s.down_bytes_per_s) {
                let (up, down) = (s.up_bytes_per_s, s.down_bytes_per_s);
                return Err(NetConfigError::SiteBandwidth { site, up, down });
            }
        }
        match loss {
            LossModel::Retransmit { rate } if !(0.0..1.0).contains(&rate) => {
                return Err(NetConfigError::LossRate { rate });
            }
            LossModel::Drop { rate } if !(0.0..=1.0).contains(&rate) => {
                return Err(NetConfigError::LossRate { rate });
            }
            _ => {}
        }
        Ok(Self { peers, sites, loss })
    }

    /// `n` identical peers with no sites and no loss.
    pub fn homogeneous(
        n: usize,
        bytes_per_s: f64,
        latency_us: u64,
    ) -> Result<Self, NetConfigError> {
        let link = PeerLink {
            up_bytes_per_s: bytes_per_s,
            down_bytes_per_s: bytes_per_s,
            latency_us,
            site: None,
        };
        Self::new(vec![link; n], Vec::new(), LossModel::None)
    }

    /// The peers' access links, indexed by peer.
    #[must_use]
    pub fn peers(&self) -> &[PeerLink] {
        &self.peers
    }

    /// The sites' WAN links, indexed by site.
    #[must_use]
    pub fn sites(&self) -> &[SiteLink] {
        &self.sites
    }

    /// The loss model.
    #[must_use]
    pub const fn loss(&self) -> LossModel {
        self.loss
    }

    /// One-way latency from `a` to `b` in microseconds.
    #[must_use]
    pub fn latency_us(&self, a: usize, b: usize) -> u64 {
        let (pa, pb) = (&self.peers[a], &self.peers[b]);
        let mut us = pa.latency_us + pb.latency_us;
        if let (Some(sa), Some(sb)) = (pa.site, pb.site)
            && sa != sb
        {
            us += self.sites[sa as usize].latency_us + self.sites[sb as usize].latency_us;
        }
        us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_broken_rule() {
        let good = PeerLink {
            up_bytes_per_s: 1.0,
            down_bytes_per_s: 1.0,
            latency_us: 1,
            site: None,
        };
        assert_eq!(
            NetConfig::new(vec![], vec![], LossModel::None),
            Err(NetConfigError::NoPeers)
        );
        let bad = PeerLink {
            up_bytes_per_s: 0.0,
            ..good
        };
        assert!(matches!(
            NetConfig::new(vec![good, bad], vec![], LossModel::None),
            Err(NetConfigError::PeerBandwidth { peer: 1, .. })
        ));
        let sited = PeerLink {
            site: Some(0),
            ..good
        };
        assert!(matches!(
            NetConfig::new(vec![sited], vec![], LossModel::None),
            Err(NetConfigError::UnknownSite { .. })
        ));
        assert!(matches!(
            NetConfig::new(vec![good], vec![], LossModel::Retransmit { rate: 1.0 }),
            Err(NetConfigError::LossRate { .. })
        ));
    }
}
