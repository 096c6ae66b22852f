//! `gradmesh-sim fl` end to end on the real digits set (data/digits.safetensors, written by
//! scripts/setup.sh): a tiny scenario learns, and one seed gives byte-identical outputs.
//!
//! Seeds are fixed; set `GRADMESH_SIM_SEED` to run with another one.

use gradmesh_sim::fl::{self, FlScenario};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn seed() -> u64 {
    let seed = std::env::var("GRADMESH_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    eprintln!("seed {seed} (override with GRADMESH_SIM_SEED)");
    seed
}

fn tiny() -> FlScenario {
    FlScenario::from_file(&root().join("simulations/scenarios/fl/tiny.toml")).unwrap()
}

fn data() -> PathBuf {
    root().join("data/digits.safetensors")
}

#[test]
fn tiny_scenario_learns_under_churn() {
    let summary = fl::run(&tiny(), seed(), &data(), |_| {}).unwrap();
    let csv = String::from_utf8(fl::rounds_csv(&summary.records).unwrap()).unwrap();
    println!("initial accuracy {:.4}\n{csv}", summary.initial_accuracy);
    assert_eq!(summary.records.len(), 6);
    let last = summary.records.last().unwrap();
    // Measured 2026-12-04 on an Intel Xeon, seeds 1..=8: from 4.4–15.3 % to 89.2–91.7 % (a gain
    // of 76 points at least).
    assert!(
        last.accuracy > summary.initial_accuracy + 0.6 && last.accuracy > 0.8,
        "accuracy {} from {}",
        last.accuracy,
        summary.initial_accuracy
    );
    // Time advances, rounds sample 5 clients, and churn or the deadline dropped someone.
    assert!(
        summary
            .records
            .windows(2)
            .all(|w| w[1].sim_time_s > w[0].sim_time_s)
    );
    assert!(
        summary
            .records
            .iter()
            .all(|r| r.sampled <= 5 && r.completed + r.dropped == r.sampled)
    );
    assert!(
        summary.records.iter().map(|r| r.dropped).sum::<usize>() > 0,
        "nobody dropped"
    );
    // A round takes at least the download, the compute and the upload of one client.
    assert!(
        summary
            .records
            .iter()
            .all(|r| r.completed == 0 || r.round_s > 1.0)
    );
}

#[test]
fn same_seed_gives_byte_identical_outputs() {
    let s = seed();
    let dir = std::env::temp_dir().join(format!("gradmesh-fl-{}", std::process::id()));
    let mut runs = Vec::new();
    for tag in ["a", "b"] {
        let summary = fl::run(&tiny(), s, &data(), |_| {}).unwrap();
        let out = dir.join(tag);
        fl::write_all(&out, &summary).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = [
            "fl_rounds.csv",
            "partition.csv",
            "accuracy_vs_time.svg",
            "accuracy_vs_round.svg",
        ]
        .iter()
        .map(|f| ((*f).to_owned(), std::fs::read(out.join(f)).unwrap()))
        .collect();
        files.sort();
        runs.push(files);
    }
    assert_eq!(runs[0], runs[1]);
    let other = fl::run(&tiny(), s + 1, &data(), |_| {}).unwrap();
    let other_csv = fl::rounds_csv(&other.records).unwrap();
    assert_ne!(
        runs[0].iter().find(|f| f.0 == "fl_rounds.csv").unwrap().1,
        other_csv
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_shipped_fl_scenario_validates() {
    let dir = root().join("simulations/scenarios/fl");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for path in names {
        FlScenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn bad_fl_scenarios_are_refused() {
    let base = std::fs::read_to_string(root().join("simulations/scenarios/fl/tiny.toml")).unwrap();
    let bad = [
        ("clients_per_round = 5", "clients_per_round = 50"),
        ("local_lr = 0.1", "local_lr = 0.0"),
        ("name = \"fedavg\"", "name = \"fedsgd\""),
        ("scheme = \"iid\"", "scheme = \"dirichlet\"\nalpha = -1.0"),
        ("round_deadline_s = 30", "round_deadline_s = 0"),
    ];
    for (from, to) in bad {
        assert!(base.contains(from), "{from}");
        let text = base.replace(from, to);
        assert!(FlScenario::from_toml(&text).is_err(), "{to} accepted");
    }
}
