//! Hand-written driver scenarios; the seeded fault schedules are in `tests/invariants.rs`.

use std::sync::Arc;

use super::*;
use crate::config::Aggregation;
use crate::sync::DonorFault;

#[test]
fn calm_mesh_commits_rounds_and_agrees() {
    let mut driver = Driver::new(Schedule::calm(1, 4)).with_log();
    let verdict = driver.run();
    if verdict.is_err() || driver.checker().rounds_committed() < 10 {
        for line in driver.log().iter().take(120) {
            eprintln!("{line}");
        }
    }
    verdict.expect("no violation");
    assert!(
        driver.checker().rounds_committed() >= 10,
        "{}",
        driver.checker().rounds_committed()
    );
    assert_eq!(driver.checker().aborts, 0);
}

/// How far the committed averages of a run are from what the honest peers alone would give.
#[derive(Debug)]
struct Robustness {
    /// Committed rounds measured.
    rounds: usize,
    /// Committed coordinates outside `[min, max]` of the honest contributions they reduce.
    outside_honest_range: usize,
    /// Worst round of `‖committed − honest weighted mean‖ / mean honest ‖gradient‖`.
    error_max: f64,
    /// Largest `|parameter|` at the end (every target coordinate is in `[-2, 2]`).
    param_abs_max: f32,
}

/// Measures every committed round of `driver` (run `with_log`) against the honest contributors
/// each span names; `attackers` are founder indices.
fn robustness(driver: &Driver, attackers: &[usize]) -> Robustness {
    let bad: Vec<PeerId> = attackers.iter().map(|&i| driver.nodes()[i].id).collect();
    let mut outside_honest_range = 0;
    let mut error_max = 0f64;
    for result in driver.committed().values() {
        let (mut error_sq, mut norm_sum, mut norms) = (0f64, 0f64, 0usize);
        for span in &result.spans {
            let honest: Vec<&(u32, Arc<[f32]>)> = span
                .contributors
                .iter()
                .filter(|p| !bad.contains(p))
                .filter_map(|p| driver.checker().gradient(*p, result.base))
                .collect();
            assert!(!honest.is_empty(), "a span with no honest contributor");
            let total: f64 = honest.iter().map(|(w, _)| f64::from(*w)).sum();
            for i in span.range.clone() {
                let values = honest.iter().map(|(_, g)| g[i]);
                let lo = values.clone().fold(f32::INFINITY, f32::min);
                let hi = values.fold(f32::NEG_INFINITY, f32::max);
                let got = result.data[i];
                outside_honest_range += usize::from(got < lo || got > hi);
                let mean: f64 = honest
                    .iter()
                    .map(|(w, g)| f64::from(*w) * f64::from(g[i]))
                    .sum::<f64>()
                    / total;
                error_sq += (f64::from(got) - mean).powi(2);
            }
        }
        for (_, g) in result.spans.first().iter().flat_map(|s| {
            s.contributors
                .iter()
                .filter(|p| !bad.contains(p))
                .filter_map(|p| driver.checker().gradient(*p, result.base))
        }) {
            norm_sum += g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            norms += 1;
        }
        error_max = error_max.max(error_sq.sqrt() / (norm_sum / norms.max(1) as f64));
    }
    Robustness {
        rounds: driver.committed().len(),
        outside_honest_range,
        error_max,
        param_abs_max: driver.nodes()[0]
            .params()
            .iter()
            .fold(0f32, |m, p| m.max(p.abs())),
    }
}

/// A calm 7-peer mesh whose two heaviest founders (weights 40 and 48 of 200) send their gradient
/// sign-flipped and scaled ×10, reduced with `rule`. Checks every invariant (the checker
/// recomputes each span with `rule`) and that the survivors hold bit-identical parameters.
fn attacked_run(rule: Aggregation) -> Robustness {
    let attackers = vec![3, 4];
    let mut schedule = Schedule::calm(7, 7);
    schedule.config = test_config_builder()
        .aggregation(rule)
        .build()
        .expect("valid config");
    schedule.attack = Some(Attack {
        peers: attackers.clone(),
        scale: -10.0,
        equivocates_spans: false,
        forges_commits: false,
        forges_states: false,
    });
    let mut driver = Driver::new(schedule).with_log();
    driver.run().expect("no violation");
    assert!(driver.survivors_agree(), "{rule}: survivors disagree");
    let first = driver.nodes()[0].params();
    for n in driver.nodes() {
        let same = n
            .params()
            .iter()
            .zip(first)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{rule}: peer {} holds other parameters", n.index);
    }
    let r = robustness(&driver, &attackers);
    println!("{rule}: {r:?}");
    assert!(r.rounds >= 10, "{rule}: {r:?}");
    r
}

/// Issue 7: robust rules inside the mesh. With median or a trimmed mean trimming at least as many
/// values per end as there are attackers, every committed coordinate lies within the range of
/// the honest contributions (a guarantee, since the attackers hold under half the weight and at
/// most `floor(beta·n)` = 2 of the 7 values), and the committed vector stays within 0.5 of a
/// typical honest gradient's length from the honest weighted mean; with the mean it does not.
#[test]
fn robust_rules_hold_the_mesh_against_sign_flip_attackers() {
    for rule in [Aggregation::Median, Aggregation::TrimmedMean { beta: 0.4 }] {
        let r = attacked_run(rule);
        assert_eq!(r.outside_honest_range, 0, "{rule}: {r:?}");
        assert!(r.error_max < 1.5, "{rule}: {r:?}");
        assert!(r.param_abs_max <= 2.5, "{rule}: {r:?}");
    }
    let r = attacked_run(Aggregation::Mean);
    assert!(r.outside_honest_range > 0, "mean: {r:?}");
    assert!(r.error_max > 4.0, "mean: {r:?}");
    assert!(r.param_abs_max > 1e6, "mean: {r:?}");
}

/// Multi-Krum and centered clipping in a 7-peer mesh that loses 10% of its messages for 2 s (so
/// some spans may be reduced at their deadlines from fewer contributions, where Multi-Krum may
/// fall back to the median, `span_rule`): the checker, recomputing each span with the rule,
/// finds no violation and the survivors agree.
#[test]
fn span_local_rules_commit_under_message_loss() {
    for rule in [
        Aggregation::MultiKrum { f: 2, m: 3 },
        Aggregation::CenteredClipping {
            tau: 1.0,
            iterations: 3,
        },
    ] {
        let mut schedule = Schedule::calm(11, 7);
        schedule.config = test_config_builder()
            .aggregation(rule)
            .build()
            .expect("valid config");
        schedule.drop_rate = 0.1;
        schedule.faults_end = Duration::from_secs(2);
        let mut driver = Driver::new(schedule);
        driver.run().expect("no violation");
        assert!(driver.survivors_agree(), "{rule}");
        assert!(driver.checker().rounds_committed() >= 10, "{rule}");
    }
}

/// Issue 4 item 5: a churny 7-peer mesh with each stateless span codec. Two founders die (one
/// mid-run), a peer joins, 5% of messages are lost for 3 s, and every frame goes through the
/// wire. The checker recomputes every committed span with the quantisation applied as peers
/// apply it (contributions and the reduced span each encoded and decoded once), and all other
/// invariants hold; the survivors hold bit-identical parameters; and the committed values differ
/// from the unquantised mean (the codec really was applied) by less than two quantisation steps.
#[test]
fn churny_mesh_with_span_codecs_keeps_every_invariant() {
    for name in ["int8:64", "fp16"] {
        let codec: crate::config::CodecKind = name.parse().expect("valid");
        let mut schedule = Schedule::calm(21, 7);
        schedule.vector_len = 300;
        schedule.config = test_config_builder()
            .codec(codec)
            .build()
            .expect("valid config");
        schedule.drop_rate = 0.05;
        schedule.kills = vec![
            (Duration::from_millis(1300), 2),
            (Duration::from_millis(2700), 5),
        ];
        schedule.joins = vec![Duration::from_millis(1800)];
        schedule.faults_end = Duration::from_secs(3);
        schedule.run_for = Duration::from_secs(7);
        let mut driver = Driver::new(schedule).with_log();
        driver.run().expect("no violation");
        assert!(driver.survivors_agree(), "{name}: survivors disagree");
        let alive: Vec<&Node> = driver.nodes().iter().filter(|n| n.is_alive()).collect();
        assert_eq!(alive.len(), 6, "{name}");
        for n in &alive {
            let same = n
                .params()
                .iter()
                .zip(alive[0].params())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: peer {} holds other parameters", n.index);
        }
        let c = driver.checker();
        assert!(
            c.rounds_committed() >= 10,
            "{name}: {}",
            c.rounds_committed()
        );
        let (mut quantised, mut err_max) = (0usize, 0f64);
        for result in driver.committed().values() {
            for span in &result.spans {
                let inputs: Vec<&(u32, Arc<[f32]>)> = span
                    .contributors
                    .iter()
                    .filter_map(|p| c.gradient(*p, result.base))
                    .collect();
                let total: f64 = inputs.iter().map(|(w, _)| f64::from(*w)).sum();
                for i in span.range.clone() {
                    let mean = inputs
                        .iter()
                        .map(|(w, g)| f64::from(*w) * f64::from(g[i]))
                        .sum::<f64>()
                        / total;
                    let err = (f64::from(result.data[i]) - mean).abs();
                    quantised += usize::from(err > 1e-6 * (1.0 + mean.abs()));
                    err_max = err_max.max(err);
                }
            }
        }
        let rounds = c.rounds_committed();
        println!("{name}: {rounds} rounds, {quantised} quantised values, max error {err_max:.2e}");
        assert!(quantised > 0, "{name}: no value shows the codec");
        // Gradients lie within ±4 here; int8:64 steps are at most 4/127, fp16's far smaller.
        assert!(err_max < 0.04, "{name}: max error {err_max}");
    }
}

/// The checker's codec recomputation is not vacuous: with `int8:64` it refuses the exact mean and
/// accepts only the value quantised as peers quantise it.
#[test]
fn checker_recomputes_quantised_spans() {
    use crate::ids::Digest;
    use crate::reduce::SpanResult;
    use crate::wire::StateSummary;
    let codec: crate::config::CodecKind = "int8:64".parse().expect("valid");
    let base = StateSummary {
        round: RoundId(0),
        digest: Digest::default(),
    };
    let (a, b) = (PeerId::from_index(1), PeerId::from_index(2));
    let ga: Arc<[f32]> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
    let gb: Arc<[f32]> = (0..100).map(|i| (i as f32 * 0.11).cos() * 3.0).collect();
    let exact: Vec<f32> = ga
        .iter()
        .zip(gb.iter())
        .map(|(x, y)| ((f64::from(*x) + 3.0 * f64::from(*y)) / 4.0) as f32)
        .collect();
    let round_trip = |v: &[f32]| {
        let mut bytes = Vec::new();
        codec
            .build(v.len(), 0)
            .expect("builds")
            .encode(v, &mut bytes)
            .expect("encodes");
        let mut out = vec![0f32; v.len()];
        codec.decode(&bytes, &mut out).expect("decodes");
        out
    };
    // Two spans, so the block grid restarts at 40 as on the wire.
    let ranges = [0..40, 40..100];
    let mut quantised = Vec::new();
    for r in &ranges {
        let (qa, qb) = (round_trip(&ga[r.clone()]), round_trip(&gb[r.clone()]));
        let mean: Vec<f32> = qa
            .iter()
            .zip(&qb)
            .map(|(x, y)| ((f64::from(*x) + 3.0 * f64::from(*y)) / 4.0) as f32)
            .collect();
        quantised.extend(round_trip(&mean));
    }
    for (data, ok) in [(exact, false), (quantised, true)] {
        let mut checker = InvariantChecker::new(Duration::from_secs(1)).with_codec(codec);
        checker.record_gradient(a, base, 1, ga.clone());
        checker.record_gradient(b, base, 3, gb.clone());
        let result = RoundResult {
            round: RoundId(1),
            base,
            digest: Digest::default(),
            data: data.into(),
            spans: ranges
                .iter()
                .map(|r| SpanResult {
                    range: r.clone(),
                    contributors: vec![a, b],
                    total_weight: 4,
                })
                .collect(),
            committee: vec![a, b],
        };
        checker.record_commit(0, &result);
        assert_eq!(
            checker.violation().is_none(),
            ok,
            "{:?}",
            checker.violation()
        );
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Schedule seed 5555764483598384016 of the fault-schedule suite (first half, generator seed
/// 20261123): 14 peers, a partition from 1.574 s to 2.883 s right after a round's votes. Peers
/// that voted for round 3's result on base round 2 without learning its fate used to vote again
/// on base 2 in round 4 once they waited for their spans instead of diverging at once: base 2
/// got two successors (docs/protocol.md §5.2, the vote lock).
#[test]
fn votes_cut_by_a_partition_do_not_fork_the_base() {
    let schedule = Schedule {
        seed: 5_555_764_483_598_384_016,
        peers: 14,
        vector_len: 15,
        latency: (ms(0), ms(13)),
        compute: (ms(5), ms(40)),
        drop_rate: 0.029,
        kills: vec![
            (ms(3608), 0),
            (ms(3530), 6),
            (ms(1479), 7),
            (ms(3619), 10),
            (ms(3584), 12),
        ],
        joins: vec![ms(2198), ms(2365)],
        partition: Some((ms(1574), ms(1309), 12_669_712_827_685_440_596)),
        faults_end: ms(4000),
        run_for: ms(12_000),
        through_wire: true,
        config: test_config(),
        attack: None,
    };
    let mut driver = Driver::new(schedule);
    let verdict = driver.run();
    assert_eq!(verdict, Ok(()));
    assert!(!driver.checker().halted_by_design);
    assert!(driver.checker().rounds_committed() >= 10);
}

/// Runs `schedule` with a log, printing its first 200 lines if an invariant broke.
fn run_logged(schedule: Schedule) -> Driver {
    let mut driver = Driver::new(schedule).with_log();
    let verdict = driver.run();
    if verdict.is_err() {
        for line in driver.log().iter().take(200) {
            eprintln!("{line}");
        }
    }
    verdict.expect("no violation");
    driver
}

/// Issue 16: a contributor that lies in the protocol (see [`Attack`]): it sends a perturbed
/// version of every span it owns to a minority of victims and turns every vote it hears into a
/// forged commit notice carrying all the seals it has for that digest. Before votes were sealed,
/// one such notice made a victim commit its own minority result while the rest committed
/// another (a fork). Now a notice counts only verified votes, so the victims' result never
/// reaches a quorum: they see the majority's result decided, resync, and the mesh goes on.
#[test]
fn a_lying_contributor_neither_forks_the_mesh_nor_commits_a_minority_result() {
    for seed in 1..=3 {
        let mut schedule = Schedule::calm(seed, 7);
        let attack = Attack {
            peers: vec![0],
            scale: 1.0,
            equivocates_spans: true,
            forges_commits: true,
            forges_states: false,
        };
        schedule.attack = Some(attack.clone());
        // The checker found no two peers holding different states after the same round.
        let driver = run_logged(schedule);
        let stats = driver.stats().clone();
        let victims: Vec<PeerId> = driver
            .nodes()
            .iter()
            .filter(|n| attack.is_victim(n.index))
            .map(|n| n.id)
            .collect();
        let diverged = |victim: bool| {
            driver
                .history()
                .iter()
                .filter(|(_, id, e)| {
                    victims.contains(id) == victim
                        && matches!(e, crate::peer::Event::Diverged { .. })
                })
                .count()
        };
        let (diverged, honest_diverged) = (diverged(true), diverged(false));
        let rounds = driver.checker().rounds_committed();
        println!("seed {seed}: {stats:?}, victims diverged {diverged} times, {rounds} rounds");
        assert!(stats.perturbed_spans >= 10, "seed {seed}: {stats:?}");
        assert!(stats.forged_commits >= 100, "seed {seed}: {stats:?}");
        assert!(
            diverged >= 5,
            "seed {seed}: the victims never held the perturbed result"
        );
        assert_eq!(
            honest_diverged, 0,
            "seed {seed}: a peer outside the victims diverged"
        );
        assert!(rounds >= 10, "seed {seed}: {rounds} rounds committed");
    }
}

/// Issue 16, rows 1 and 2: a founder announces, in every announcement, a made-up state a
/// million rounds ahead (every parameter zero, itself its only committee member), attests it,
/// and serves it consistently to whoever asks. One such peer used to make every peer fetch and
/// load its state. Peers holding a state fetch only what a majority of their committee
/// attests; peers without one (founders on the initial state, a fresh joiner) only what a
/// majority of the live peers they hear attests. So the forged state is tried at most, found
/// unvouched, and nobody loads it (the checker fails the run on an uncommitted state loaded);
/// the mesh keeps committing and the joiner syncs the mesh's state.
#[test]
fn a_peer_forging_and_serving_a_state_makes_nobody_load_it() {
    for seed in 1..=3 {
        let mut schedule = Schedule::calm(seed, 5);
        schedule.joins = vec![Duration::from_millis(1500)];
        schedule.attack = Some(Attack {
            peers: vec![0],
            scale: 1.0,
            equivocates_spans: false,
            forges_commits: false,
            forges_states: true,
        });
        let driver = run_logged(schedule);
        let stats = driver.stats().clone();
        let forger = driver.nodes()[0].id;
        let joiner = driver.nodes()[5].id;
        let history = driver.history();
        let count = |f: &dyn Fn(&PeerId, &crate::peer::Event) -> bool| {
            history.iter().filter(|(_, id, e)| f(id, e)).count()
        };
        let tried = count(
            &|_, e| matches!(e, crate::peer::Event::SyncStarted { target, .. } if target.round == FORGED_ROUND),
        );
        let unvouched = count(&|_, e| {
            matches!(e, crate::peer::Event::DonorDropped { peer, fault: DonorFault::Unvouched }
                if *peer == forger)
        });
        let joiner_commits =
            count(&|id, e| *id == joiner && matches!(e, crate::peer::Event::RoundCommitted { .. }));
        let rounds = driver.checker().rounds_committed();
        println!(
            "seed {seed}: {} forged announcements, forged state tried {tried} times, refused as \
             unvouched {unvouched} times, joiner committed {joiner_commits} rounds, {rounds} rounds",
            stats.forged_announcements,
        );
        assert!(stats.forged_announcements >= 20, "seed {seed}: {stats:?}");
        assert_eq!(tried, unvouched, "seed {seed}: every try ends unvouched");
        for node in driver.nodes().iter().filter(|n| n.index != 0) {
            assert!(
                node.state().is_none_or(|s| s.round < FORGED_ROUND),
                "seed {seed}: peer {} holds the forged state",
                node.id
            );
        }
        assert!(
            joiner_commits >= 3,
            "seed {seed}: the joiner never caught up"
        );
        assert!(rounds >= 10, "seed {seed}: {rounds} rounds committed");
    }
}

/// Counts `(peer, event)` pairs of a run's history that match.
fn count_events(driver: &Driver, f: impl Fn(PeerId, &crate::peer::Event) -> bool) -> usize {
    driver
        .history()
        .iter()
        .filter(|(_, id, e)| f(*id, e))
        .count()
}

/// Issue 18, item 3: 3 of 5 founders die at once at 2 s. Without `refound_after` the 2
/// survivors report the lost committee and halt (by design); with it they re-found the state
/// they hold in epoch 1 (the same one: the checker fails a run where two peers hold different
/// states of one round id), commit again within a bound, and a peer joining later syncs the
/// re-founded lineage and contributes. Every invariant holds across the re-founding.
#[test]
fn survivors_of_a_mass_failure_refound_and_a_joiner_follows() {
    use crate::peer::Event as E;
    for seed in 1..=3 {
        for after in [None, Some(Duration::from_secs(2))] {
            let mut schedule = Schedule::calm(seed, 5);
            schedule.kills = vec![(ms(2000), 0), (ms(2000), 2), (ms(2000), 3)];
            schedule.joins = vec![ms(6500)];
            schedule.faults_end = ms(6500);
            schedule.run_for = ms(12_000);
            schedule.config = test_config_builder()
                .refound_after(after)
                .build()
                .expect("valid");
            let driver = run_logged(schedule);
            let survivors: Vec<PeerId> = [1, 4].iter().map(|&i| driver.nodes()[i].id).collect();
            let joiner = driver.nodes()[5].id;
            let lost = count_events(&driver, |id, e| {
                survivors.contains(&id) && matches!(e, E::CommitteeLost { .. })
            });
            let refounds: Vec<(Timestamp, PeerId, crate::wire::StateSummary)> = driver
                .history()
                .iter()
                .filter_map(|(t, id, e)| match e {
                    E::Refounded { to, .. } => Some((*t, *id, *to)),
                    _ => None,
                })
                .collect();
            let epoch1_commits = |who: PeerId| {
                count_events(&driver, |id, e| {
                    id == who && matches!(e, E::RoundCommitted { round, .. } if round.epoch() == 1)
                })
            };
            println!(
                "seed {seed}, refound after {after:?}: lost reported {lost}, refounds \
                 {refounds:?}, epoch-1 commits {:?}, joiner {}",
                survivors
                    .iter()
                    .map(|p| epoch1_commits(*p))
                    .collect::<Vec<_>>(),
                epoch1_commits(joiner),
            );
            let Some(after) = after else {
                assert_eq!(lost, 2, "seed {seed}: each survivor reports once");
                assert!(refounds.is_empty());
                assert!(driver.checker().halted_by_design, "seed {seed}");
                continue;
            };
            assert!(!driver.checker().halted_by_design, "seed {seed}");
            assert_eq!(refounds.len(), 2, "seed {seed}: {refounds:?}");
            assert_eq!(
                refounds[0].2, refounds[1].2,
                "seed {seed}: one re-founded state"
            );
            // The dead are forgotten after the peer TTL (1 s), a round in flight ends within
            // its timeout (1 s), then the setting's time.
            let latest = Timestamp::ZERO + ms(2000) + Duration::from_secs(2) + after;
            assert!(refounds.iter().all(|(t, _, _)| *t <= latest), "seed {seed}");
            for who in survivors.iter().chain([&joiner]) {
                assert!(epoch1_commits(*who) >= 5, "seed {seed}: {who} in epoch 1");
            }
        }
    }
}
