//! All-reduce algorithms as per-peer message programs, their executor, and α-β closed forms.
//!
//! A [`Program`] is a list of steps; entering a step issues its sends, and the step completes
//! when its expected receives have arrived (a reduce needs the partner's data before the next
//! send). Sends are asynchronous flows, so a peer's next step may start while earlier sends still
//! drain, exactly as with non-blocking sends on a real socket.

use crate::engine::Outbox;
use crate::net::{Delivered, PeerIdx};
use crate::time::SimTime;
use std::collections::BTreeMap;

/// Which all-reduce shape to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ring reduce-scatter then ring all-gather: 2(p−1) steps of n/p bytes.
    Ring,
    /// Recursive halving reduce-scatter then recursive doubling all-gather: 2·log2(p) steps.
    Butterfly,
    /// hivemind-style direct butterfly: each peer owns a span and exchanges spans with every
    /// other peer at once (all-to-all reduce-scatter, then all-to-all all-gather).
    AllToAll,
}

/// When a message may start flowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SendMode {
    /// As soon as the sender enters its step (hivemind pushes its spans).
    #[default]
    Eager,
    /// Once the receiver has entered the step that consumes it (MPI's rendezvous protocol for
    /// large messages): a peer still busy with an earlier step is not flooded early.
    Rendezvous,
}

impl Algorithm {
    /// How implementations of this algorithm send: rendezvous for the MPI-style ring and
    /// butterfly, eager for the hivemind-style all-to-all.
    #[must_use]
    pub const fn send_mode(self) -> SendMode {
        match self {
            Self::Ring | Self::Butterfly => SendMode::Rendezvous,
            Self::AllToAll => SendMode::Eager,
        }
    }

    /// A short lowercase name for tables and CSV.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            Self::Butterfly => "butterfly",
            Self::AllToAll => "all-to-all",
        }
    }

    /// The α-β closed form in seconds for `p` peers and `n` bytes (α seconds of one-way latency,
    /// β seconds per byte).
    #[must_use]
    pub fn closed_form_secs(self, p: usize, n_bytes: u64, alpha_s: f64, beta_s: f64) -> f64 {
        let pf = p as f64;
        let bandwidth_term = 2.0 * (pf - 1.0) / pf * n_bytes as f64 * beta_s;
        let latency_steps = match self {
            Self::Ring => 2.0 * (pf - 1.0),
            Self::Butterfly => 2.0 * pf.log2().ceil(),
            Self::AllToAll => 2.0,
        };
        latency_steps * alpha_s + bandwidth_term
    }
}

/// One message of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// The receiver.
    pub to: PeerIdx,
    /// Payload bytes.
    pub bytes: u64,
    /// The receiver's step this message counts toward.
    pub step_at_receiver: u32,
}

/// One step of a peer's program.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// Messages issued on entering the step.
    pub sends: Vec<Send>,
    /// Messages this peer must receive, tagged with this step, before the step completes.
    pub recvs: u32,
}

/// The steps of one peer; an empty program is done at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Program {
    /// Steps in order.
    pub steps: Vec<Step>,
}

/// Builds the programs of `members` (in rank order) all-reducing `n_bytes`. Returned programs are
/// in the same order as `members`. `weights` sizes the all-to-all spans (e.g. by bandwidth);
/// `None` means equal spans.
#[must_use]
pub fn programs(
    algorithm: Algorithm,
    members: &[PeerIdx],
    n_bytes: u64,
    weights: Option<&[f64]>,
) -> Vec<Program> {
    match algorithm {
        Algorithm::Ring => ring(members, n_bytes),
        Algorithm::Butterfly => butterfly(members, n_bytes),
        Algorithm::AllToAll => all_to_all(members, n_bytes, weights),
    }
}

/// Bytes of part `i` of `parts` equal parts of `n` (sizes differ by at most one byte).
const fn part_bytes(n: u64, parts: u64, i: u64) -> u64 {
    let n = n as u128;
    let (parts, i) = (parts as u128, i as u128);
    (n * (i + 1) / parts - n * i / parts) as u64
}

fn send(to: PeerIdx, bytes: u64, step_at_receiver: usize) -> Send {
    Send {
        to,
        bytes,
        step_at_receiver: u32::try_from(step_at_receiver).unwrap_or(u32::MAX),
    }
}

fn ring(members: &[PeerIdx], n_bytes: u64) -> Vec<Program> {
    let p = members.len();
    if p < 2 {
        return vec![Program::default(); p];
    }
    (0..p)
        .map(|i| {
            let next = members[(i + 1) % p];
            let steps = (0..2 * (p - 1))
                .map(|s| {
                    // Step s sends chunk (i − s) mod p: reduced in the first p−1, final after.
                    let chunk = (i + p - s % p) % p;
                    let bytes = part_bytes(n_bytes, p as u64, chunk as u64);
                    Step {
                        sends: vec![send(next, bytes, s)],
                        recvs: 1,
                    }
                })
                .collect();
            Program { steps }
        })
        .collect()
}

/// Recursive halving/doubling over the largest power of two p' ≤ p; the r = p − p' extra peers
/// first hand their vector to a partner among the first r and get the result back at the end.
fn butterfly(members: &[PeerIdx], n_bytes: u64) -> Vec<Program> {
    let p = members.len();
    if p < 2 {
        return vec![Program::default(); p];
    }
    let core = 1_usize << p.ilog2();
    let extra = p - core;
    (0..p)
        .map(|i| {
            if i >= core {
                let partner = members[i - core];
                let give = Step {
                    sends: vec![send(partner, n_bytes, 0)],
                    recvs: 0,
                };
                let take = Step {
                    sends: Vec::new(),
                    recvs: 1,
                };
                return Program {
                    steps: vec![give, take],
                };
            }
            let mut steps = Vec::new();
            if i < extra {
                steps.push(Step {
                    sends: Vec::new(),
                    recvs: 1,
                });
            }
            steps.extend(halving_doubling(members, i, core, extra, n_bytes));
            if i < extra {
                steps.push(Step {
                    sends: vec![send(members[i + core], n_bytes, 1)],
                    recvs: 0,
                });
            }
            Program { steps }
        })
        .collect()
}

/// The 2·log2(core) steps of core peer `i`: send the half it does not keep, then send back the
/// reduced pieces in reverse order. Core peers below `extra` have one hand-off step first, which
/// shifts their step numbers by one.
fn halving_doubling(
    members: &[PeerIdx],
    i: usize,
    core: usize,
    extra: usize,
    n_bytes: u64,
) -> Vec<Step> {
    let rounds = core.ilog2() as usize;
    let offset = |peer: usize| usize::from(peer < extra);
    let mut segment = n_bytes;
    let mut halves = Vec::with_capacity(rounds);
    for k in 0..rounds {
        let partner = i ^ (core >> (k + 1));
        let sent = segment / 2;
        halves.push((partner, sent, segment - sent));
        segment -= sent;
    }
    let scatter = halves.iter().enumerate().map(|(k, &(j, sent, _))| Step {
        sends: vec![send(members[j], sent, offset(j) + k)],
        recvs: 1,
    });
    let gather = halves
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &(j, _, kept))| Step {
            sends: vec![send(members[j], kept, offset(j) + rounds + k)],
            recvs: 1,
        });
    scatter.chain(gather).collect()
}

/// Span sizes proportional to `weights` (equal when `None`), summing exactly to `n_bytes`.
#[must_use]
pub fn span_bytes(n_bytes: u64, p: usize, weights: Option<&[f64]>) -> Vec<u64> {
    let Some(w) = weights.filter(|w| w.len() == p && w.iter().all(|x| *x > 0.0)) else {
        return (0..p as u64)
            .map(|i| part_bytes(n_bytes, p as u64, i))
            .collect();
    };
    let total: f64 = w.iter().sum();
    let mut cumulative = 0.0;
    let mut previous = 0_u64;
    w.iter()
        .enumerate()
        .map(|(i, x)| {
            cumulative += x;
            let end = if i + 1 == p {
                n_bytes
            } else {
                ((cumulative / total) * n_bytes as f64).round() as u64
            };
            let end = end.clamp(previous, n_bytes);
            let span = end - previous;
            previous = end;
            span
        })
        .collect()
}

fn all_to_all(members: &[PeerIdx], n_bytes: u64, weights: Option<&[f64]>) -> Vec<Program> {
    let p = members.len();
    if p < 2 {
        return vec![Program::default(); p];
    }
    let spans = span_bytes(n_bytes, p, weights);
    let others = |i: usize| (0..p).filter(move |&j| j != i);
    (0..p)
        .map(|i| {
            let scatter = Step {
                sends: others(i).map(|j| send(members[j], spans[j], 0)).collect(),
                recvs: u32::try_from(p - 1).unwrap_or(u32::MAX),
            };
            let gather = Step {
                sends: others(i).map(|j| send(members[j], spans[i], 1)).collect(),
                recvs: scatter.recvs,
            };
            Program {
                steps: vec![scatter, gather],
            }
        })
        .collect()
}

/// The tag a collective message carries: which attempt and which step it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectiveMsg {
    /// The attempt (round re-runs get a new attempt; late messages of old ones are ignored).
    pub attempt: u32,
    /// The receiver's step this message counts toward.
    pub step: u32,
}

/// Runs the programs of one group of peers for one attempt. State is indexed by the member's
/// position, so a 10,000-peer run of many small groups costs memory per member, not per peer.
#[derive(Debug, Default)]
pub struct Executor {
    attempt: u32,
    members: Vec<PeerIdx>,
    /// (peer, position) sorted by peer, for lookups on delivery.
    index: Vec<(PeerIdx, u32)>,
    programs: Vec<Program>,
    step: Vec<u32>,
    recv: Vec<Vec<u32>>,
    finished_at: Vec<Option<SimTime>>,
    is_started: Vec<bool>,
    unfinished: usize,
    mode: SendMode,
    /// Rendezvous sends waiting for their receiver: (receiver position, step) → (sender, bytes).
    parked: BTreeMap<(usize, u32), Vec<(PeerIdx, u64)>>,
}

impl Executor {
    /// An executor for `attempt`, where `programs[k]` is `members[k]`'s program. Nothing runs
    /// until [`Self::start_peer`].
    #[must_use]
    pub fn new(
        attempt: u32,
        members: Vec<PeerIdx>,
        programs: Vec<Program>,
        mode: SendMode,
    ) -> Self {
        assert_eq!(members.len(), programs.len(), "one program per member");
        let n = members.len();
        let mut index: Vec<(PeerIdx, u32)> =
            members.iter().zip(0_u32..).map(|(&p, k)| (p, k)).collect();
        index.sort_unstable();
        Self {
            attempt,
            recv: programs.iter().map(|p| vec![0; p.steps.len()]).collect(),
            unfinished: programs.iter().filter(|p| !p.steps.is_empty()).count(),
            finished_at: programs
                .iter()
                .map(|p| p.steps.is_empty().then_some(SimTime::ZERO))
                .collect(),
            members,
            index,
            programs,
            step: vec![0; n],
            is_started: vec![false; n],
            mode,
            parked: BTreeMap::new(),
        }
    }

    /// The attempt this executor runs.
    #[must_use]
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The members in rank order.
    #[must_use]
    pub fn members(&self) -> &[PeerIdx] {
        &self.members
    }

    /// Whether every member has finished.
    #[must_use]
    pub const fn is_done(&self) -> bool {
        self.unfinished == 0
    }

    fn position(&self, peer: PeerIdx) -> Option<usize> {
        self.index
            .binary_search_by_key(&peer, |&(p, _)| p)
            .ok()
            .map(|i| self.index[i].1 as usize)
    }

    /// Whether `peer` is a member.
    #[must_use]
    pub fn is_member(&self, peer: PeerIdx) -> bool {
        self.position(peer).is_some()
    }

    /// When `peer` finished, if it has.
    #[must_use]
    pub fn finished_at(&self, peer: PeerIdx) -> Option<SimTime> {
        self.position(peer).and_then(|k| self.finished_at[k])
    }

    /// Bytes `peer` sends over the whole program.
    #[must_use]
    pub fn bytes_sent(&self, peer: PeerIdx) -> u64 {
        self.position(peer).map_or(0, |k| {
            self.programs[k]
                .steps
                .iter()
                .flat_map(|s| &s.sends)
                .map(|s| s.bytes)
                .sum()
        })
    }

    /// `peer` is ready (its gradient is computed): it enters its first step.
    pub fn start_peer<P: From<CollectiveMsg>, T>(
        &mut self,
        now: SimTime,
        peer: PeerIdx,
        out: &mut Outbox<P, T>,
    ) {
        let Some(k) = self.position(peer) else { return };
        if self.is_started[k] || self.programs[k].steps.is_empty() {
            return;
        }
        self.is_started[k] = true;
        self.enter_step(now, k, out);
    }

    /// A collective message arrived. Returns `true` if it belonged to this attempt.
    pub fn handle_message<P: From<CollectiveMsg>, T, Q>(
        &mut self,
        now: SimTime,
        msg: &Delivered<Q>,
        tag: CollectiveMsg,
        out: &mut Outbox<P, T>,
    ) -> bool {
        if tag.attempt != self.attempt {
            return false;
        }
        let Some(k) = self.position(msg.to) else {
            return false;
        };
        let Some(count) = self.recv[k].get_mut(tag.step as usize) else {
            return false;
        };
        *count += 1;
        if self.is_started[k] {
            self.try_advance(now, k, out);
        }
        true
    }

    fn enter_step<P: From<CollectiveMsg>, T>(
        &mut self,
        now: SimTime,
        k: usize,
        out: &mut Outbox<P, T>,
    ) {
        let s = self.step[k];
        let from = self.members[k];
        let step = &self.programs[k].steps[s as usize];
        for m in &step.sends {
            let receiver = self.position(m.to);
            let is_posted = receiver.is_none_or(|j| self.has_entered(j, m.step_at_receiver));
            if self.mode == SendMode::Eager || is_posted {
                let tag = CollectiveMsg {
                    attempt: self.attempt,
                    step: m.step_at_receiver,
                };
                out.send(from, m.to, m.bytes, P::from(tag));
            } else if let Some(j) = receiver {
                let key = (j, m.step_at_receiver);
                self.parked.entry(key).or_default().push((from, m.bytes));
            }
        }
        // This peer has now posted step `s`: release what was parked for it.
        if let Some(waiting) = self.parked.remove(&(k, s)) {
            let tag = CollectiveMsg {
                attempt: self.attempt,
                step: s,
            };
            for (sender, bytes) in waiting {
                out.send(sender, from, bytes, P::from(tag));
            }
        }
        self.try_advance(now, k, out);
    }

    fn has_entered(&self, j: usize, step: u32) -> bool {
        self.is_started[j] && self.step[j] >= step
    }

    fn try_advance<P: From<CollectiveMsg>, T>(
        &mut self,
        now: SimTime,
        k: usize,
        out: &mut Outbox<P, T>,
    ) {
        let s = self.step[k] as usize;
        let steps = &self.programs[k].steps;
        if s >= steps.len() || self.recv[k][s] < steps[s].recvs {
            return;
        }
        self.step[k] += 1;
        if self.step[k] as usize == steps.len() {
            self.finished_at[k] = Some(now);
            self.unfinished -= 1;
            return;
        }
        self.enter_step(now, k, out);
    }
}
