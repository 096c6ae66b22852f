//! Churn: when peers leave and rejoin. Weibull session and downtime lengths (the distribution
//! that fits measured peer-to-peer sessions), or a replayed availability trace.
//!
//! Transitions are generated lazily, one per peer at a time, from the peer's own seeded stream,
//! so a run needs no horizon and adding peers never shifts another peer's sessions.

use crate::net::PeerIdx;
use crate::rng::{Domain, SeedTree};
use crate::time::SimTime;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Weibull};
use serde::Deserialize;
use std::path::Path;
use thiserror::Error;

/// A Weibull distribution by shape k and scale λ (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeibullSpec {
    /// Shape k (> 0); k < 1 gives many short sessions and a long tail.
    pub shape: f64,
    /// Scale λ in seconds (> 0).
    pub scale_s: f64,
}

impl WeibullSpec {
    /// The closed-form mean λ·Γ(1 + 1/k).
    #[must_use]
    pub fn mean_s(self) -> f64 {
        self.scale_s * gamma(1.0 + 1.0 / self.shape)
    }
}

/// One availability interval of a trace: the peer is up during `[join_s, leave_s)`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct TraceSession {
    /// The peer index.
    pub peer: u32,
    /// Join time in seconds.
    pub join_s: f64,
    /// Leave time in seconds (> `join_s`).
    pub leave_s: f64,
}

/// A trace that could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The CSV could not be read or parsed.
    #[error("availability trace {path}: {source}")]
    Csv {
        /// The file.
        path: String,
        /// The parser's error.
        source: csv::Error,
    },
    /// A session is empty, negative or overlaps the previous one of the same peer.
    #[error("availability trace row {row}: bad session for peer {peer}")]
    Session {
        /// 1-based data row.
        row: usize,
        /// The peer.
        peer: u32,
    },
}

/// Reads a `peer,join_s,leave_s` CSV (with header) into per-peer sorted sessions.
pub fn read_trace(path: &Path, peers: usize) -> Result<Vec<Vec<(f64, f64)>>, TraceError> {
    let csv_err = |source| TraceError::Csv {
        path: path.display().to_string(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
    let mut sessions = vec![Vec::new(); peers];
    for (i, row) in reader.deserialize::<TraceSession>().enumerate() {
        let s = row.map_err(csv_err)?;
        let bad = TraceError::Session {
            row: i + 1,
            peer: s.peer,
        };
        let list: &mut Vec<(f64, f64)> = sessions.get_mut(s.peer as usize).ok_or(bad)?;
        let ok = s.join_s >= 0.0 && s.leave_s > s.join_s;
        if !ok {
            return Err(TraceError::Session {
                row: i + 1,
                peer: s.peer,
            });
        }
        list.push((s.join_s, s.leave_s));
    }
    for (peer, list) in sessions.iter_mut().enumerate() {
        list.sort_by(|a, b| a.0.total_cmp(&b.0));
        if list.windows(2).any(|w| w[1].0 < w[0].1) {
            let peer = u32::try_from(peer).unwrap_or(u32::MAX);
            return Err(TraceError::Session { row: 0, peer });
        }
    }
    Ok(sessions)
}

/// How peers come and go.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChurnSpec {
    /// Every peer is up for the whole run.
    None,
    /// Every peer starts a session at t = 0; sessions and downtimes alternate.
    Weibull {
        /// Session lengths.
        session: WeibullSpec,
        /// Downtime lengths.
        downtime: WeibullSpec,
    },
    /// Sessions per peer, sorted and disjoint (see [`read_trace`]).
    Trace(Vec<Vec<(f64, f64)>>),
}

/// A peer going up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Transition {
    /// When.
    pub at: SimTime,
    /// Who.
    pub peer: PeerIdx,
    /// Up (`true`) or down.
    pub is_up: bool,
}

/// The lazily generated churn of all peers.
#[derive(Debug)]
pub struct ChurnProcess {
    spec: ChurnSpec,
    rngs: Vec<ChaCha8Rng>,
    weibull: Option<(Weibull<f64>, Weibull<f64>)>,
}

impl ChurnProcess {
    /// The process for `peers` peers. Weibull parameters must be positive (checked by the
    /// scenario); invalid ones behave as no churn.
    #[must_use]
    pub fn new(spec: ChurnSpec, peers: usize, seeds: SeedTree) -> Self {
        let weibull = match &spec {
            ChurnSpec::Weibull { session, downtime } => {
                Weibull::new(session.scale_s, session.shape)
                    .ok()
                    .zip(Weibull::new(downtime.scale_s, downtime.shape).ok())
            }
            _ => None,
        };
        let rngs = (0..peers as u64)
            .map(|i| seeds.rng(Domain::Churn, i))
            .collect();
        Self {
            spec,
            rngs,
            weibull,
        }
    }

    /// Whether `peer` is up at t = 0.
    #[must_use]
    pub fn is_initially_up(&self, peer: PeerIdx) -> bool {
        match &self.spec {
            ChurnSpec::Trace(t) => t[peer.get()].first().is_some_and(|s| s.0 <= 0.0),
            _ => true,
        }
    }

    /// `peer`'s first transition after t = 0 given its initial state.
    pub fn first(&mut self, peer: PeerIdx) -> Option<Transition> {
        let is_up = self.is_initially_up(peer);
        self.next(Transition {
            at: SimTime::ZERO,
            peer,
            is_up,
        })
    }

    /// The transition after `last` (which has just happened) for the same peer.
    pub fn next(&mut self, last: Transition) -> Option<Transition> {
        let peer = last.peer;
        let at = match &self.spec {
            ChurnSpec::None => return None,
            ChurnSpec::Weibull { .. } => {
                let (session, downtime) = self.weibull?;
                let dist = if last.is_up { session } else { downtime };
                last.at.plus_micros(
                    crate::time::secs_to_micros_ceil(dist.sample(&mut self.rngs[peer.get()]))
                        .max(1),
                )
            }
            ChurnSpec::Trace(t) => {
                let now = last.at.as_secs_f64();
                let sessions = &t[peer.get()];
                let next_s = if last.is_up {
                    sessions
                        .iter()
                        .find(|s| s.0 <= now && now < s.1)
                        .map(|s| s.1)
                } else {
                    sessions.iter().find(|s| s.0 > now).map(|s| s.0)
                }?;
                SimTime::from_secs_f64(next_s)
            }
        };
        Some(Transition {
            at,
            peer,
            is_up: !last.is_up,
        })
    }
}

/// Γ(x) for x > 0 by the Lanczos approximation (g = 7, 9 terms; ~15 significant digits).
#[must_use]
pub fn gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return core::f64::consts::PI / ((core::f64::consts::PI * x).sin() * gamma(1.0 - x));
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let sum = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    (2.0 * core::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_matches_known_values() {
        assert!((gamma(1.0) - 1.0).abs() < 1e-12);
        assert!((gamma(5.0) - 24.0).abs() < 1e-9);
        assert!((gamma(1.5) - core::f64::consts::PI.sqrt() / 2.0).abs() < 1e-12);
    }

    #[test]
    fn weibull_session_mean_is_near_the_closed_form() {
        let session = WeibullSpec {
            shape: 0.6,
            scale_s: 3_600.0,
        };
        let downtime = WeibullSpec {
            shape: 1.5,
            scale_s: 600.0,
        };
        let spec = ChurnSpec::Weibull { session, downtime };
        let mut churn = ChurnProcess::new(spec, 1, SeedTree::new(11));
        let (mut up, mut down) = (Vec::new(), Vec::new());
        let mut prev = Transition {
            at: SimTime::ZERO,
            peer: PeerIdx(0),
            is_up: true,
        };
        for _ in 0..40_000 {
            let next = churn.next(prev).unwrap();
            let len_s = next.at.micros_since(prev.at) as f64 / 1e6;
            if prev.is_up {
                up.push(len_s)
            } else {
                down.push(len_s)
            }
            prev = next;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (up_mean, down_mean) = (mean(&up), mean(&down));
        assert!(
            (up_mean / session.mean_s() - 1.0).abs() < 0.05,
            "{up_mean} vs {}",
            session.mean_s()
        );
        assert!(
            (down_mean / downtime.mean_s() - 1.0).abs() < 0.05,
            "{down_mean} vs {}",
            downtime.mean_s()
        );
    }

    #[test]
    fn trace_replays_sessions() {
        let spec = ChurnSpec::Trace(vec![vec![(0.0, 10.0), (20.0, 30.0)], vec![(5.0, 6.0)]]);
        let mut churn = ChurnProcess::new(spec, 2, SeedTree::new(0));
        assert!(churn.is_initially_up(PeerIdx(0)));
        assert!(!churn.is_initially_up(PeerIdx(1)));
        let a = churn.first(PeerIdx(0)).unwrap();
        assert_eq!((a.at.as_secs_f64(), a.is_up), (10.0, false));
        let b = churn.next(a).unwrap();
        assert_eq!((b.at.as_secs_f64(), b.is_up), (20.0, true));
        let c = churn.next(b).unwrap();
        assert_eq!((c.at.as_secs_f64(), c.is_up), (30.0, false));
        assert_eq!(churn.next(c), None);
        let d = churn.first(PeerIdx(1)).unwrap();
        assert_eq!((d.at.as_secs_f64(), d.is_up), (5.0, true));
    }
}
