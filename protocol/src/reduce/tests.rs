//! Round-level scenarios on an instant in-memory network. The seeded, delayed, lossy schedules
//! live in `tests/invariants.rs`; these pin down each failure path by hand.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::wire::{Member, Proposal, StateSummary};

/// The key of test peer `id` (ids are those of `PeerKey::from_index`).
fn key(id: PeerId) -> Arc<PeerKey> {
    Arc::new(PeerKey::find_index(id, 64).expect("a test peer's id"))
}

type Filter = Box<dyn FnMut(usize, PeerId, &Body) -> bool>;

struct Pump {
    rounds: Vec<ReduceRound>,
    alive: Vec<bool>,
    outcomes: Vec<Option<RoundOutcome>>,
    /// Seal books of finished rounds.
    books: Vec<Option<SealBook>>,
    rejected: Vec<(PeerId, RejectReason)>,
    now: Timestamp,
    /// Called on every message before delivery: return false to drop it.
    filter: Filter,
}

fn config() -> PeerConfig {
    PeerConfig::builder()
        .scaled_to(Duration::from_millis(1200))
        .build()
        .expect("valid")
}

pub(super) fn roster(n: u64, len: u64) -> Arc<Roster> {
    let mut members: Vec<Member> = (0..n)
        .map(|i| Member {
            peer: PeerId::from_index(i),
            role: Role::Contributor,
            bandwidth_bytes_per_s: 1 + i,
        })
        .collect();
    members.sort_by_key(|m| m.peer);
    let base = StateSummary {
        round: RoundId(0),
        digest: Digest::default(),
    };
    let proposal = Proposal {
        base,
        vector_len: len,
        members,
    };
    Arc::new(Roster::from_proposal(RoundId(1), &proposal).expect("valid"))
}

fn gradient(rank: usize, len: usize) -> Arc<[f32]> {
    (0..len)
        .map(|i| (rank * 1000 + i) as f32 * 0.001 - 0.3)
        .collect()
}

/// A round per contributor of `roster` at time zero on the initial state; rank `r` contributes
/// `gradient(r)` with weight `10 + r`.
pub(super) fn start_contributors(
    config: &PeerConfig,
    roster: &Arc<Roster>,
    gradient: impl Fn(usize) -> Arc<[f32]>,
) -> Vec<ReduceRound> {
    roster
        .contributors()
        .iter()
        .enumerate()
        .map(|(rank, &me)| {
            let local = Some((10 + rank as u32, gradient(rank)));
            ReduceRound::start(
                config,
                roster.clone(),
                &key(me),
                Timestamp::ZERO,
                local,
                Some(vec![]),
            )
            .expect("starts")
        })
        .collect()
}

impl Pump {
    fn new(n: u64, len: u64) -> Self {
        let roster = roster(n, len);
        let rounds = start_contributors(&config(), &roster, |rank| gradient(rank, len as usize));
        Self {
            rounds,
            alive: vec![true; n as usize],
            outcomes: vec![None; n as usize],
            books: vec![None; n as usize],
            rejected: Vec::new(),
            now: Timestamp::ZERO,
            filter: Box::new(|_, _, _| true),
        }
    }

    fn index(&self, peer: PeerId) -> usize {
        self.rounds[0]
            .roster()
            .contributor_rank(peer)
            .expect("member")
    }

    fn run(&mut self) {
        let mut queue: VecDeque<(usize, PeerId, Body)> = VecDeque::new();
        for _ in 0..100_000 {
            for i in 0..self.rounds.len() {
                let me = self.rounds[i].me;
                while let Some(out) = self.rounds[i].poll_output() {
                    match out {
                        RoundOutput::Send { to, body } if self.alive[i] => {
                            if (self.filter)(i, to, &body) {
                                queue.push_back((self.index(to), me, body));
                            }
                        }
                        RoundOutput::Send { .. } => {}
                        RoundOutput::Rejected { peer, reason } => {
                            self.rejected.push((peer, reason))
                        }
                        RoundOutput::Finished(o) => self.outcomes[i] = Some(o),
                    }
                }
            }
            if let Some((to, from, body)) = queue.pop_front() {
                // A finished round's peer keeps answering seal requests from its seal book,
                // as `Peer` does for its last round.
                if let (Body::SealRequest(request), Some(_)) = (&body, &self.outcomes[to]) {
                    let me = self.rounds[to].me;
                    let answer = self.books[to]
                        .get_or_insert_with(|| self.rounds[to].seal_book())
                        .answer(from, request);
                    if let Some(certificate) = answer
                        && self.alive[to]
                        && (self.filter)(to, from, &Body::Seals(certificate.clone()))
                    {
                        queue.push_back((self.index(from), me, Body::Seals(certificate)));
                    }
                } else if self.alive[to] {
                    self.rounds[to].handle_message(self.now, from, body);
                }
                continue;
            }
            let next = (0..self.rounds.len())
                .filter(|&i| self.alive[i])
                .filter_map(|i| self.rounds[i].poll_timeout())
                .min();
            let Some(next) = next else { return };
            self.now = next;
            for i in 0..self.rounds.len() {
                if self.alive[i] {
                    self.rounds[i].handle_timeout(next);
                }
            }
        }
        panic!("pump did not settle");
    }

    fn committed(&self) -> Vec<&RoundResult> {
        self.outcomes
            .iter()
            .zip(&self.alive)
            .filter(|(_, a)| **a)
            .filter_map(|(o, _)| match o {
                Some(RoundOutcome::Committed(r)) => Some(r),
                _ => None,
            })
            .collect()
    }
}

fn expected_mean(ranks: &[usize], len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let (mut num, mut den) = (0f64, 0f64);
            for &r in ranks {
                let w = f64::from(10 + r as u32);
                num += w * f64::from(gradient(r, len)[i]);
                den += w;
            }
            (num / den) as f32
        })
        .collect()
}

#[test]
fn healthy_round_commits_the_weighted_mean_everywhere() {
    let mut pump = Pump::new(4, 103);
    pump.run();
    let committed = pump.committed();
    assert_eq!(committed.len(), 4);
    assert!(
        committed
            .windows(2)
            .all(|w| w[0].data == w[1].data && w[0].digest == w[1].digest)
    );
    assert_eq!(
        &committed[0].data[..],
        &expected_mean(&[0, 1, 2, 3], 103)[..]
    );
    assert!(pump.rejected.is_empty());
}

#[test]
fn nan_contribution_is_rejected_and_named() {
    let mut pump = Pump::new(3, 30);
    let bad = pump.rounds[2].me;
    pump.filter = Box::new(move |from, _, body| {
        // Peer 2 corrupts what it sends: simulate by letting the receiver see a NaN.
        !(from == 2 && matches!(body, Body::Contribution(_)))
    });
    // Inject peer 2's poisoned contributions by hand.
    for j in [0usize, 1] {
        let range = pump.rounds[0].roster().span(j).expect("span");
        let mut data = vec![0.5f32; range.len()];
        data[0] = f32::NAN;
        let roster = pump.rounds[0].roster().digest();
        let body =
            contribution(roster, j, 7, CodecKind::None, &data.clone().into()).expect("raw f32");
        pump.rounds[j].handle_message(Timestamp::ZERO, bad, body);
    }
    pump.run();
    assert!(
        pump.rejected
            .iter()
            .any(|(p, r)| *p == bad && matches!(r, RejectReason::NonFinite { index: 0 }))
    );
    let committed = pump.committed();
    assert_eq!(committed.len(), 3, "{:?}", pump.outcomes);
    assert!(committed.windows(2).all(|w| w[0].digest == w[1].digest));
    // Spans 0 and 1 average peers 0 and 1 only; span 2 (peer 2's own) includes it.
    assert_eq!(committed[0].spans[0].contributors.len(), 2);
}

#[test]
fn dead_owner_is_covered_by_its_backup() {
    let mut pump = Pump::new(4, 64);
    pump.alive[1] = false; // killed before it sent anything
    pump.run();
    let committed = pump.committed();
    assert_eq!(committed.len(), 3, "{:?}", pump.outcomes);
    assert!(committed.windows(2).all(|w| w[0].data == w[1].data));
    let span1 = &committed[0].spans[1];
    assert_eq!(span1.contributors.len(), 3);
    let r = committed[0].spans[1].range.clone();
    assert_eq!(
        &committed[0].data[r.clone()],
        &expected_mean(&[0, 2, 3], 64)[r]
    );
}

#[test]
fn owner_dying_mid_all_gather_leaves_survivors_identical() {
    let mut pump = Pump::new(5, 50);
    let mut sent = 0;
    // Peer 3 delivers its reduced span to one member only, then dies.
    pump.filter = Box::new(move |from, _, body| {
        if from == 3 && matches!(body, Body::Reduced(_)) {
            sent += 1;
            return sent == 1;
        }
        true
    });
    pump.run_until_reduced_then_kill(3);
    let committed = pump.committed();
    assert_eq!(committed.len(), 4, "{:?}", pump.outcomes);
    assert!(
        committed
            .windows(2)
            .all(|w| w[0].data == w[1].data && w[0].digest == w[1].digest)
    );
}

impl Pump {
    fn run_until_reduced_then_kill(&mut self, victim: usize) {
        // Let the victim act for the instant-delivery phase, then kill it before timeouts fire.
        let mut queue: VecDeque<(usize, PeerId, Body)> = VecDeque::new();
        loop {
            for i in 0..self.rounds.len() {
                let me = self.rounds[i].me;
                while let Some(out) = self.rounds[i].poll_output() {
                    if let RoundOutput::Send { to, body } = out
                        && (self.filter)(i, to, &body)
                    {
                        queue.push_back((self.index(to), me, body));
                    }
                }
            }
            let Some((to, from, body)) = queue.pop_front() else {
                break;
            };
            self.rounds[to].handle_message(self.now, from, body);
        }
        self.alive[victim] = false;
        self.run();
    }
}

#[test]
fn two_peers_one_dead_aborts_cleanly() {
    let mut pump = Pump::new(2, 8);
    pump.alive[0] = false;
    pump.run();
    assert!(
        matches!(pump.outcomes[1], Some(RoundOutcome::Aborted { .. })),
        "{:?}",
        pump.outcomes
    );
    assert!(pump.now <= Timestamp::ZERO + config().round_timeout);
}

#[test]
fn start_checks_local_inputs() {
    let roster = roster(2, 8);
    let me = roster.contributors()[0];
    let c = config();
    let t = Timestamp::ZERO;
    assert_eq!(
        ReduceRound::start(&c, roster.clone(), &key(me), t, None, None).unwrap_err(),
        StartError::MissingGradient
    );
    let short = Some((1, Arc::from(vec![0.0; 3])));
    assert!(matches!(
        ReduceRound::start(&c, roster.clone(), &key(me), t, short, None),
        Err(StartError::GradientShape { .. })
    ));
    assert_eq!(
        ReduceRound::start(
            &c,
            roster,
            &Arc::new(PeerKey::from_index(99)),
            t,
            None,
            None
        )
        .unwrap_err(),
        StartError::NotMember
    );
}

/// A member that hears no votes decides only by the seals it fetches after commit notices; the
/// notices alone commit nothing.
#[test]
fn a_member_that_missed_the_votes_commits_by_fetched_seals_not_by_notices() {
    for fetch in [true, false] {
        let mut pump = Pump::new(4, 40);
        let deaf = pump.rounds[0].me;
        let fetched = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&fetched);
        pump.filter = Box::new(move |_, to, body| match body {
            Body::Vote(_) => to != deaf,
            Body::Seals(_) if to == deaf => {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                fetch
            }
            _ => true,
        });
        pump.run();
        let outcome = pump.outcomes[0].clone().expect("finished");
        if fetch {
            assert!(matches!(outcome, RoundOutcome::Committed(_)), "{outcome:?}");
            assert_eq!(pump.committed().len(), 4);
            let n = fetched.load(std::sync::atomic::Ordering::Relaxed);
            assert!(
                (1..=SEAL_REQUESTS_PER_DIGEST).contains(&n),
                "{n} seal answers"
            );
        } else {
            assert!(
                matches!(outcome, RoundOutcome::Aborted { .. }),
                "notices alone decided: {outcome:?}"
            );
            assert_eq!(pump.committed().len(), 3);
        }
    }
}

/// Fetched seals count only if they verify: one signed over another result, or by a key that is
/// not the voter's, is refused and named.
#[test]
fn fetched_seals_that_do_not_verify_are_refused() {
    let (roster, mut round) = rank_zero_of_three();
    let sender = roster.contributors()[1];
    let voter = roster.contributors()[2];
    let result = Digest::of(b"some result");
    // Ask `sender` first, as a notice naming `voter` makes the round do.
    let mut voters = vec![0u8];
    voters[0] |= 1 << 2;
    round.handle_message(
        Timestamp::ZERO,
        sender,
        Body::Commit(CommitNotice {
            result,
            voters: voters.clone(),
        }),
    );
    let asked = std::iter::from_fn(|| round.poll_output()).any(|o| {
        matches!(o, RoundOutput::Send { to, body: Body::SealRequest(r) } if to == sender && r.voters == voters)
    });
    assert!(asked, "the notice made the round ask for the seal");
    let key = key(voter);
    for seal in [
        key.seal_vote(roster.digest(), Digest::of(b"another result")),
        PeerKey::from_index(60).seal_vote(roster.digest(), result),
    ] {
        let seals = Certificate {
            result,
            seals: vec![seal],
        };
        assert!(refuses_seals(&mut round, sender, seals));
    }
    // Unasked seals are refused too, even valid ones.
    let stranger = roster.contributors()[2];
    let seals = Certificate {
        result,
        seals: vec![key.seal_vote(roster.digest(), result)],
    };
    assert!(refuses_seals(&mut round, stranger, seals));
}

/// The round of rank 0 in a fresh 3-contributor roster, and the roster.
fn rank_zero_of_three() -> (Arc<Roster>, ReduceRound) {
    let roster = roster(3, 12);
    let rounds = start_contributors(&config(), &roster, |rank| gradient(rank, 12));
    let round = rounds.into_iter().next().expect("a round");
    (roster, round)
}

/// Whether `round` refuses `seals` from `from` as `BadSeal`.
fn refuses_seals(round: &mut ReduceRound, from: PeerId, seals: Certificate) -> bool {
    round.handle_message(Timestamp::ZERO, from, Body::Seals(seals));
    std::iter::from_fn(|| round.poll_output()).any(|o| {
        matches!(o, RoundOutput::Rejected { peer, reason: RejectReason::BadSeal } if peer == from)
    })
}

/// A seal heard from its voter is kept unverified, but verified before it is forwarded: a voter
/// that sends a bad seal cannot make an honest peer forward it (and be taken for a forger).
#[test]
fn a_bad_seal_heard_directly_is_never_forwarded() {
    let (roster, mut round) = rank_zero_of_three();
    let voter = roster.contributors()[1];
    let asker = roster.contributors()[2];
    let result = Digest::of(b"r");
    // The voter's own key, over another result: it names the voter, so it is kept.
    let bad = key(voter).seal_vote(roster.digest(), Digest::of(b"other"));
    round.handle_message(
        Timestamp::ZERO,
        voter,
        Body::Vote(Vote { result, seal: bad }),
    );
    let request = SealRequest {
        result,
        voters: vec![0b10],
    };
    round.handle_message(Timestamp::ZERO, asker, Body::SealRequest(request));
    let forwarded = std::iter::from_fn(|| round.poll_output()).any(|o| {
        matches!(
            o,
            RoundOutput::Send {
                body: Body::Seals(_),
                ..
            }
        )
    });
    assert!(!forwarded, "a seal that does not verify was forwarded");
}
