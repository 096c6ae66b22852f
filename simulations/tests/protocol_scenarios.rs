//! The shipped protocol-mode scenarios (`algorithm = "protocol"`): real `Peer` machines on the
//! simulated network. Each runs its first two rounds here (the full runs are `gradmesh-sim run`
//! commands in docs/simulator.md); the partition scenario runs through the heal; one seed gives
//! byte-identical output files and another seed changes them.
//!
//! Seeds are fixed; set `GRADMESH_SIM_SEED` to run with another one.

use gradmesh_sim::mesh::{self, MeshRun, MeshSpec};
use gradmesh_sim::report;
use gradmesh_sim::scenario::Scenario;
use std::path::{Path, PathBuf};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

fn seed() -> u64 {
    let seed = std::env::var("GRADMESH_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("seed {seed} (override with GRADMESH_SIM_SEED)");
    seed
}

fn spec(name: &str) -> MeshSpec {
    let scenario = Scenario::from_file(&scenario_path(name)).unwrap();
    scenario.mesh_spec().expect("a protocol scenario")
}

fn assert_safe(name: &str, run: &MeshRun) {
    let v = &run.verdict;
    assert!(
        v.violation.is_none() && v.survivors_differ.is_none() && !run.hit_event_limit,
        "{name}: {v:?}"
    );
}

#[test]
fn every_protocol_scenario_commits_its_first_rounds_safely() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("protocol-") && n.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    for name in &names {
        let mut s = spec(name);
        s.rounds = Some(2);
        let run = mesh::run(&s, seed(), |_, _| {});
        assert_safe(name, &run);
        assert_eq!(run.records.len(), 2, "{name}: {:?}", run.records);
        for r in &run.records {
            assert!(
                r.seconds() > 0.0 && r.commits >= 1 && r.bytes_per_peer > 0,
                "{r:?}"
            );
        }
    }
}

#[test]
fn a_partitioned_minority_stops_committing_then_resyncs_after_the_heal() {
    let s = spec("protocol-partition-heals.toml");
    let run = mesh::run(&s, seed(), |_, _| {});
    assert_safe("partition", &run);
    assert_eq!(run.records.len(), 30);
    // The minority (8 of 32) cannot commit during the cut: rounds then have ≤ 24 contributors.
    let during: Vec<_> = run
        .records
        .iter()
        .filter(|r| r.start_s > 12.0 && r.end_s < 40.0)
        .collect();
    assert!(
        !during.is_empty() && during.iter().all(|r| r.peers <= 24),
        "{during:?}"
    );
    // After the heal the minority syncs the state over the network and contributes again.
    assert!(run.counts.resyncs >= 8, "{:?}", run.counts);
    let last = run.records.last().unwrap();
    assert!(last.end_s > 45.0 && last.peers == 32, "{last:?}");
}

/// Runs `name` in protocol mode with `seed` and returns every output file's bytes, by name.
fn outputs(name: &str, seed: u64, tag: &str) -> Vec<(String, Vec<u8>)> {
    let mut s = spec(name);
    s.rounds = Some(6);
    let run = mesh::run(&s, seed, |_, _| {});
    let dir = std::env::temp_dir().join(format!("gradmesh-sim-proto-{}-{tag}", std::process::id()));
    report::write_all(&dir, &run.records).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out = files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

#[test]
fn same_seed_gives_byte_identical_protocol_outputs_and_another_seed_differs() {
    let s = seed();
    let a = outputs("protocol-stragglers.toml", s, "a");
    let b = outputs("protocol-stragglers.toml", s, "b");
    let c = outputs("protocol-stragglers.toml", s + 1, "c");
    assert_eq!(a.len(), 4);
    assert_eq!(a, b);
    let csv =
        |o: &[(String, Vec<u8>)]| o.iter().find(|(n, _)| n == "rounds.csv").unwrap().1.clone();
    assert_ne!(csv(&a), csv(&c));
}
