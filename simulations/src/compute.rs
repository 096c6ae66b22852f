//! Compute model: per-peer step times drawn from a per-device-class lognormal, with stragglers.

use crate::net::PeerIdx;
use crate::rng::{Domain, SeedTree};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

/// How long one local training step takes on a class of device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTime {
    /// Mean step time in seconds (> 0).
    pub mean_s: f64,
    /// Shape σ of the lognormal (0 = always the mean). The location is ln(mean) − σ²/2, so the
    /// distribution's mean is `mean_s` whatever σ.
    pub sigma: f64,
}

/// A fraction of peers that are `slowdown`× slower than their class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stragglers {
    /// Fraction of peers in [0, 1]; exactly round(fraction · peers) are picked, by seeded shuffle.
    pub fraction: f64,
    /// Multiplier on their step time (≥ 1).
    pub slowdown: f64,
}

impl Stragglers {
    /// No stragglers.
    pub const NONE: Self = Self {
        fraction: 0.0,
        slowdown: 1.0,
    };
}

/// Per-peer step-time draws; each peer has its own stream.
#[derive(Debug)]
pub struct ComputeModel {
    peers: Vec<PeerCompute>,
}

#[derive(Debug)]
struct PeerCompute {
    dist: Option<LogNormal<f64>>,
    mean_s: f64,
    factor: f64,
    rng: ChaCha8Rng,
}

impl ComputeModel {
    /// `step_of_peer[i]` is peer i's device class step time. Stragglers are picked with the
    /// topology stream; each peer draws from its own compute stream.
    #[must_use]
    pub fn new(step_of_peer: &[StepTime], stragglers: Stragglers, seeds: SeedTree) -> Self {
        let n = step_of_peer.len();
        let n_slow = ((stragglers.fraction * n as f64).round() as usize).min(n);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = seeds.rng(Domain::Topology, 1);
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut factor = vec![1.0; n];
        for &i in &order[..n_slow] {
            factor[i] = stragglers.slowdown;
        }
        let peers = step_of_peer
            .iter()
            .zip(factor)
            .enumerate()
            .map(|(i, (st, factor))| PeerCompute {
                dist: (st.sigma > 0.0)
                    .then(|| LogNormal::new(st.mean_s.ln() - st.sigma * st.sigma / 2.0, st.sigma))
                    .and_then(Result::ok),
                mean_s: st.mean_s,
                factor,
                rng: seeds.rng(Domain::Compute, i as u64),
            })
            .collect();
        Self { peers }
    }

    /// Whether `peer` is a straggler.
    #[must_use]
    pub fn is_straggler(&self, peer: PeerIdx) -> bool {
        self.peers[peer.get()].factor > 1.0
    }

    /// Draws `peer`'s next step time in seconds.
    pub fn draw_step_s(&mut self, peer: PeerIdx) -> f64 {
        let p = &mut self.peers[peer.get()];
        let base = p.dist.map_or(p.mean_s, |d| d.sample(&mut p.rng));
        base * p.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lognormal_mean_and_straggler_count_hold() {
        let step = StepTime {
            mean_s: 2.0,
            sigma: 0.5,
        };
        let slow = Stragglers {
            fraction: 0.1,
            slowdown: 4.0,
        };
        let mut m = ComputeModel::new(&[step; 100], slow, SeedTree::new(3));
        let n_slow = (0..100).filter(|&i| m.is_straggler(PeerIdx(i))).count();
        assert_eq!(n_slow, 10);
        let fast = (0..100).find(|&i| !m.is_straggler(PeerIdx(i))).unwrap();
        let mean = (0..20_000)
            .map(|_| m.draw_step_s(PeerIdx(fast)))
            .sum::<f64>()
            / 20_000.0;
        assert!((mean - 2.0).abs() < 0.05, "mean {mean}");
    }
}
