//! `gradmesh demo`: the protocol over an in-memory network of peers, with one peer killed in
//! the middle of a round and a fresh peer joining afterwards. It runs the real protocol state
//! machines (`gradmesh_protocol::driver`) on a simulated clock, so it finishes in a second and
//! prints the same thing for the same seed. The multi-process demo replaces it once the node's
//! training loop exists.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use gradmesh_protocol::driver::{Driver, Schedule, Violation};
use gradmesh_protocol::peer::Event;
use gradmesh_protocol::wire::Role;
use gradmesh_protocol::{Digest, PeerId, RoundId, Timestamp};
use serde::Serialize;

/// What the demo found.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// Founding peers.
    pub peers: usize,
    /// Seed of the run.
    pub seed: u64,
    /// The peer killed mid-round.
    pub killed: String,
    /// The round it was contributing to when it died.
    pub killed_in_round: u64,
    /// The peer that joined after the kill.
    pub joined: String,
    /// The first round the joiner contributed to, if any.
    pub joiner_first_contribution: Option<u64>,
    /// Rounds committed by at least one peer.
    pub rounds_committed: usize,
    /// Rounds aborted everywhere they ran.
    pub rounds_aborted: usize,
    /// Every live peer at the end: id, state round and state digest.
    pub survivors: Vec<Survivor>,
    /// Whether all survivors hold the same digest.
    pub digests_equal: bool,
    /// Simulated seconds.
    pub simulated_s: f64,
}

/// One live peer at the end of the demo.
#[derive(Debug, Serialize)]
pub struct Survivor {
    /// Peer id (short hex).
    pub peer: String,
    /// Round of the state it holds.
    pub round: u64,
    /// Digest of the state it holds.
    pub digest: String,
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A protocol invariant broke (this is a bug; the message says which).
    #[error("protocol invariant violated: {0:?}")]
    Violation(Violation),
    /// The victim never started a round (too few peers or too short a run).
    #[error("no round started to kill a peer in")]
    NoRound,
}

fn secs(s: u64) -> Timestamp {
    Timestamp::ZERO + Duration::from_secs(s)
}

/// Runs the demo with `peers` founders and `seed`.
///
/// # Errors
/// [`DemoError`] if an invariant breaks or no round starts.
pub fn run(peers: usize, seed: u64) -> Result<(DemoReport, Driver), DemoError> {
    let mut schedule = Schedule::calm(seed, peers.max(2));
    schedule.vector_len = 1024;
    schedule.run_for = Duration::from_secs(4);
    let mut driver = Driver::new(schedule).with_log();
    let victim = 3 % peers.max(2);
    let victim_id = driver.nodes()[victim].id;
    // Run until the victim has started its tenth round as a contributor, then kill it: its
    // slices are out, its own span is still being reduced, and the others wait on it.
    let in_round = |d: &Driver| {
        d.history().last().is_some_and(|(_, p, e)| {
            *p == victim_id
                && matches!(e, Event::RoundStarted { role: Role::Contributor, round, .. } if round.0 >= 10)
        })
    };
    if !driver
        .step_until(secs(2), in_round)
        .map_err(DemoError::Violation)?
    {
        return Err(DemoError::NoRound);
    }
    let killed_in_round = match driver.history().last() {
        Some((_, _, Event::RoundStarted { round, .. })) => round.0,
        _ => 0,
    };
    driver.kill_now(victim);
    let kill_time = driver.now();
    driver
        .step_until(kill_time + Duration::from_millis(500), |_| false)
        .map_err(DemoError::Violation)?;
    let joiner = driver.join_now();
    driver
        .step_until(secs(4), |_| false)
        .map_err(DemoError::Violation)?;
    driver
        .step_until(secs(6), Driver::survivors_agree)
        .map_err(DemoError::Violation)?;
    let report = summarize(&driver, peers, seed, victim_id, killed_in_round, joiner);
    Ok((report, driver))
}

fn summarize(
    driver: &Driver,
    peers: usize,
    seed: u64,
    victim: PeerId,
    killed_in_round: u64,
    joiner: usize,
) -> DemoReport {
    let joiner_id = driver.nodes()[joiner].id;
    let rounds = round_table(driver);
    let joiner_first_contribution = driver.history().iter().find_map(|(_, p, e)| match e {
        Event::RoundStarted {
            round,
            role: Role::Contributor,
            ..
        } if *p == joiner_id => Some(round.0),
        _ => None,
    });
    let survivors: Vec<Survivor> = driver
        .nodes()
        .iter()
        .filter(|n| n.is_alive())
        .filter_map(|n| n.state().map(|s| (n.id, s)))
        .map(|(id, s)| Survivor {
            peer: id.to_string(),
            round: s.round.0,
            digest: s.digest.to_hex(),
        })
        .collect();
    let digests_equal = survivors.windows(2).all(|w| w[0].digest == w[1].digest)
        && survivors.len() == driver.nodes().iter().filter(|n| n.is_alive()).count();
    DemoReport {
        peers,
        seed,
        killed: victim.to_string(),
        killed_in_round,
        joined: joiner_id.to_string(),
        joiner_first_contribution,
        rounds_committed: rounds.values().filter(|r| r.committed > 0).count(),
        rounds_aborted: rounds
            .values()
            .filter(|r| r.committed == 0 && r.aborted > 0)
            .count(),
        survivors,
        digests_equal,
        simulated_s: driver.now().saturating_since(Timestamp::ZERO).as_secs_f64(),
    }
}

#[derive(Debug, Default)]
struct RoundRow {
    started: Option<Timestamp>,
    ended: Option<Timestamp>,
    contributors: usize,
    members: usize,
    committed: usize,
    aborted: usize,
    diverged: usize,
    digest: Option<Digest>,
}

fn round_table(driver: &Driver) -> BTreeMap<RoundId, RoundRow> {
    let mut rows: BTreeMap<RoundId, RoundRow> = BTreeMap::new();
    for (t, _, e) in driver.history() {
        match e {
            Event::RoundStarted {
                round,
                contributors,
                members,
                ..
            } => {
                let row = rows.entry(*round).or_default();
                row.started = Some(row.started.map_or(*t, |s| s.min(*t)));
                row.contributors = row.contributors.max(*contributors);
                row.members = row.members.max(*members);
            }
            Event::RoundCommitted { round, digest, .. } => {
                let row = rows.entry(*round).or_default();
                row.committed += 1;
                row.digest = Some(*digest);
                row.ended = Some(row.ended.map_or(*t, |s| s.max(*t)));
            }
            Event::RoundAborted { round, .. } => {
                let row = rows.entry(*round).or_default();
                row.aborted += 1;
                row.ended = Some(row.ended.map_or(*t, |s| s.max(*t)));
            }
            Event::Diverged { round, .. } => rows.entry(*round).or_default().diverged += 1,
            _ => {}
        }
    }
    rows
}

/// The human-readable account of a run: a table per round, the kill and the join, and every
/// survivor's final digest.
#[must_use]
pub fn render(report: &DemoReport, driver: &Driver) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gradmesh demo: {} peers on an in-memory network (seed {}), real protocol state machines",
        report.peers, report.seed
    );
    let _ = writeln!(
        out,
        "\n{:>5} {:>9} {:>7} {:>9} {:>7} {:>8} {:>9}  result digest",
        "round", "start_s", "members", "contrib", "commits", "aborts", "took_ms"
    );
    for (round, row) in round_table(driver) {
        let took = match (row.started, row.ended) {
            (Some(s), Some(e)) => format!("{:.1}", e.saturating_since(s).as_secs_f64() * 1e3),
            _ => "-".into(),
        };
        let start = row
            .started
            .map_or(0.0, |s| s.saturating_since(Timestamp::ZERO).as_secs_f64());
        let digest = row
            .digest
            .map_or_else(|| "(none)".into(), |d| d.to_string());
        let _ = writeln!(
            out,
            "{:>5} {:>9.3} {:>7} {:>9} {:>7} {:>8} {:>9}  {digest}",
            round.0,
            start,
            row.members,
            row.contributors,
            row.committed,
            row.aborted + row.diverged,
            took
        );
    }
    let _ = writeln!(
        out,
        "\nkilled peer {} while it contributed to round {} (SIGKILL-style: no goodbye)",
        report.killed, report.killed_in_round
    );
    let _ = writeln!(
        out,
        "peer {} joined 0.5 s later with no state; first contributed in round {}",
        report.joined,
        report
            .joiner_first_contribution
            .map_or_else(|| "(never)".into(), |r| r.to_string())
    );
    let _ = writeln!(out, "\n{:>10} {:>6}  state digest", "survivor", "round");
    for s in &report.survivors {
        let _ = writeln!(out, "{:>10} {:>6}  {}", s.peer, s.round, s.digest);
    }
    let verdict = if report.digests_equal {
        "all survivors hold the same state"
    } else {
        "SURVIVORS DIFFER"
    };
    let _ = writeln!(
        out,
        "\n{} rounds committed, {} aborted, {:.2} simulated seconds: {verdict}",
        report.rounds_committed, report.rounds_aborted, report.simulated_s
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_kills_mid_round_and_survivors_agree() {
        let (report, driver) = run(8, 7).expect("demo runs");
        assert!(report.digests_equal, "{}", render(&report, &driver));
        assert_eq!(report.survivors.len(), 8, "7 founders + 1 joiner");
        assert!(report.killed_in_round >= 10);
        assert!(report.joiner_first_contribution.is_some());
        assert!(report.rounds_committed > 20);
    }
}
