//! Seeded fault schedules against the protocol invariants, on the in-memory driver.
//!
//! Each schedule draws a mesh of 2..=16 peers, latencies, message loss, kills (a minority of the
//! founders, landing anywhere, mid-round included), joins and a partition; faults stop at 4 s and
//! the mesh then runs 8 s more. The driver checks on every output:
//! (a) every peer that commits round r holds bit-identical bytes, each span equal to the weighted
//!     mean of the contributions it names (recomputed independently);
//! (b) no round outlives its timeout on any peer;
//! (c) a joiner loads only a state the mesh committed;
//! (d) no two peers hold different states after the same round;
//! and, in the 8 s after the faults end, that every live peer keeps contributing to commits (a
//! peer alive for the last 8 s contributed to a committed round in the last 4 s, i.e. within
//! four round timeouts) — unless a
//! majority of the newest round's contributors is dead, where the protocol halts by design
//! rather than risk two histories, or a live contributor withheld its vote in its last round
//! because an unreachable committee member could have completed either of two earlier results
//! (docs/protocol.md §5.2); such runs are counted and printed.
//!
//! One schedule in four (from 3 peers on) also has a Byzantine founder forging commit notices,
//! another one in four (from 4 peers on) one announcing, attesting and serving a made-up state
//! (`forger`).
//!
//! `GRADMESH_SCHEDULES` sets the number of schedules (default 2000; `make soak` runs more) and
//! `GRADMESH_SEED` the seed of the schedule generator, so any failure replays exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gradmesh_protocol::driver::{Attack, Driver, Schedule, test_config};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const FAULTS_END: Duration = Duration::from_secs(4);

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (2usize..=16)
        .prop_flat_map(|peers| {
            let max_kills = (peers - 1) / 2;
            (
                any::<u64>(),
                Just(peers),
                8usize..160,
                (0u64..5, 5u64..40),
                0u32..40,
                prop::collection::vec((300u64..4000, 0..peers), 0..=max_kills),
                prop::collection::vec(200u64..3500, 0..3),
                prop::option::weighted(0.2, (500u64..3000, 100u64..1500, any::<u64>())),
            )
        })
        .prop_map(
            |(seed, peers, len, (lat_lo, lat_hi), drop_permille, kills, joins, partition)| {
                let mut kills: Vec<(Duration, usize)> =
                    kills.into_iter().map(|(t, i)| (ms(t), i)).collect();
                kills.sort_by_key(|k| k.1);
                kills.dedup_by_key(|k| k.1);
                Schedule {
                    seed,
                    peers,
                    vector_len: len,
                    latency: (ms(lat_lo), ms(lat_hi)),
                    compute: (ms(5), ms(40)),
                    drop_rate: f64::from(drop_permille) / 1000.0,
                    kills,
                    joins: joins.into_iter().map(ms).collect(),
                    partition: partition.map(|(start, len, mask)| (ms(start), ms(len), mask)),
                    faults_end: FAULTS_END,
                    run_for: FAULTS_END + Duration::from_secs(8),
                    through_wire: seed % 4 == 0,
                    config: test_config(),
                    attack: forger(seed, peers),
                }
            },
        )
}

/// One schedule in four (from 3 peers) has a Byzantine founder that turns every vote it hears
/// into a commit notice to everyone ([`Attack::forges_commits`]); a notice commits only what the
/// votes it names and their fetched seals decide, so the invariants must hold regardless. Another
/// one in four (from 4 peers) has a founder that announces, attests and serves a made-up state a
/// million rounds ahead ([`Attack::forges_states`]): nobody may load it (the checker fails the
/// run on an uncommitted state loaded), and the others keep committing.
fn forger(seed: u64, peers: usize) -> Option<Attack> {
    let commits = seed % 4 == 1 && peers >= 3;
    let states = seed % 4 == 2 && peers >= 4;
    (commits || states).then(|| Attack {
        peers: vec![usize::try_from(seed >> 8).unwrap_or(0) % peers],
        scale: 1.0,
        equivocates_spans: false,
        forges_commits: commits,
        forges_states: states,
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` schedules drawn from `seed`; two halves run as two tests, one per core.
fn run_schedules(cases: u64, seed: u64) {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let ran = AtomicU64::new(0);
    let commits = AtomicU64::new(0);
    let kills = AtomicU64::new(0);
    let joins = AtomicU64::new(0);
    let halted = AtomicU64::new(0);
    let undecided = AtomicU64::new(0);
    let forged = AtomicU64::new(0);
    let forged_states = AtomicU64::new(0);
    let result = runner.run(&schedule(), |schedule| {
        ran.fetch_add(1, Ordering::Relaxed);
        let mut driver = Driver::new(schedule.clone());
        let verdict = driver.run();
        commits.fetch_add(driver.checker().commits, Ordering::Relaxed);
        kills.fetch_add(driver.stats().kills, Ordering::Relaxed);
        joins.fetch_add(driver.stats().joins, Ordering::Relaxed);
        forged.fetch_add(driver.stats().forged_commits, Ordering::Relaxed);
        forged_states.fetch_add(driver.stats().forged_announcements, Ordering::Relaxed);
        halted.fetch_add(
            u64::from(driver.checker().halted_by_design),
            Ordering::Relaxed,
        );
        undecided.fetch_add(
            u64::from(driver.checker().halted_undecided),
            Ordering::Relaxed,
        );
        prop_assert!(verdict.is_ok(), "{:?} in {:?}", verdict, schedule);
        Ok(())
    });
    println!(
        "fault schedules: {} run (generator seed {seed}), {} peer commits, {} kills, {} joins, \
         {} halted with a majority of the last committee dead, {} halted undecided (liveness \
         not required), {} forged commit notices, {} forged state announcements",
        ran.load(Ordering::Relaxed),
        commits.load(Ordering::Relaxed),
        kills.load(Ordering::Relaxed),
        joins.load(Ordering::Relaxed),
        halted.load(Ordering::Relaxed),
        undecided.load(Ordering::Relaxed),
        forged.load(Ordering::Relaxed),
        forged_states.load(Ordering::Relaxed),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn fault_schedules_keep_every_invariant_first_half() {
    let cases = env_u64("GRADMESH_SCHEDULES", 2000);
    run_schedules(cases / 2, env_u64("GRADMESH_SEED", 20_261_123));
}

#[test]
fn fault_schedules_keep_every_invariant_second_half() {
    let cases = env_u64("GRADMESH_SCHEDULES", 2000);
    run_schedules(cases - cases / 2, env_u64("GRADMESH_SEED", 20_261_123) + 1);
}
