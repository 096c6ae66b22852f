//! `gradmesh demo` as a user runs it: a separate process, its exit code and its JSON summary.

use std::process::Command;

use gradmesh_e2e::gradmesh_bin;

#[test]
fn demo_kills_a_peer_mid_round_and_every_survivor_ends_with_the_same_digest() {
    let out = Command::new(gradmesh_bin())
        .args(["protocol-demo", "--peers", "8", "--seed", "7", "--json"])
        .output()
        .expect("gradmesh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}", out.status);
    let summary = stdout.lines().last().expect("a summary line");
    let json: serde_json::Value = serde_json::from_str(summary).expect("JSON summary");
    assert_eq!(json["digests_equal"], true, "{stdout}");
    let survivors = json["survivors"].as_array().expect("survivors");
    assert_eq!(
        survivors.len(),
        8,
        "7 founders survive the kill and 1 peer joins"
    );
    let digest = &survivors[0]["digest"];
    assert!(survivors.iter().all(|s| &s["digest"] == digest));
    assert!(json["killed_in_round"].as_u64().expect("round") >= 10);
    assert!(
        json["joiner_first_contribution"].is_u64(),
        "the joiner contributes"
    );
}

#[test]
fn demo_output_is_identical_for_the_same_seed() {
    let run = || {
        Command::new(gradmesh_bin())
            .args(["protocol-demo", "--seed", "11"])
            .output()
            .expect("gradmesh runs")
            .stdout
    };
    assert_eq!(run(), run(), "the in-memory demo is deterministic");
}
