//! Hand-written driver scenarios; the seeded fault schedules are in `tests/invariants.rs`.

use super::*;

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
