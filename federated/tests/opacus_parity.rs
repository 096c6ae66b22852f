//! The RDP accountant against Opacus 1.5 (installed into the project venv by scripts/setup.sh):
//! ε for a table of (q, σ, steps, δ) must agree to 3 significant digits, and the best order must
//! be the same. Runs `scripts/opacus_epsilon.py` once for the whole table.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use gradmesh_federated::dp::{RdpAccountant, compute_rdp, default_orders, get_privacy_spent};

fn table() -> Vec<(f64, f64, u64, f64)> {
    let mut rows = Vec::new();
    for &q in &[0.001, 0.01, 0.05, 0.2, 1.0] {
        for &sigma in &[0.5, 0.8, 1.1, 2.0, 4.0] {
            for &steps in &[1u64, 100, 10_000] {
                for &delta in &[1e-5, 1e-7] {
                    rows.push((q, sigma, steps, delta));
                }
            }
        }
    }
    rows
}

fn opacus(rows: &[(f64, f64, u64, f64)]) -> Vec<(f64, f64)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let mut child = Command::new(&python)
        .arg(root.join("scripts/opacus_epsilon.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run scripts/setup.sh): {e}",
                python.display()
            )
        });
    let mut input = String::new();
    for (q, sigma, steps, delta) in rows {
        input.push_str(&format!("{q:?} {sigma:?} {steps} {delta:?}\n"));
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "opacus_epsilon.py failed (is opacus installed?)"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<f64>().unwrap());
            (fields.next().unwrap(), fields.next().unwrap())
        })
        .collect()
}

#[test]
fn epsilon_matches_opacus_to_three_significant_digits() {
    let rows = table();
    let reference = opacus(&rows);
    assert_eq!(reference.len(), rows.len());
    let orders = default_orders();
    let mut worst = 0.0f64;
    let mut per_step: Option<((f64, f64), Vec<f64>)> = None;
    for (&(q, sigma, steps, delta), &(eps_opacus, order_opacus)) in rows.iter().zip(&reference) {
        // Rows come grouped by (q, sigma): the per-step RDP is computed once per group and scaled
        // by the step count, which is what compute_rdp(q, sigma, steps) does.
        if per_step.as_ref().is_none_or(|(key, _)| *key != (q, sigma)) {
            per_step = Some(((q, sigma), compute_rdp(q, sigma, 1, &orders).unwrap()));
        }
        let rdp: Vec<f64> = per_step
            .as_ref()
            .unwrap()
            .1
            .iter()
            .map(|r| r * steps as f64)
            .collect();
        let ours = get_privacy_spent(&orders, &rdp, delta).unwrap();
        let relative = ((ours.epsilon - eps_opacus) / eps_opacus).abs();
        worst = worst.max(relative);
        assert!(
            relative < 5e-4,
            "q={q} sigma={sigma} steps={steps} delta={delta}: ours {} opacus {eps_opacus}",
            ours.epsilon
        );
        assert_eq!(
            ours.order, order_opacus,
            "best order for q={q} sigma={sigma} steps={steps}"
        );
    }
    println!(
        "{} settings, largest relative difference to Opacus {worst:.3e}",
        rows.len()
    );
    // The accountant's own path gives the same numbers as the free functions above.
    let mut accountant = RdpAccountant::new();
    accountant.compose(0.01, 1.1, 1000).unwrap();
    let spent = accountant.epsilon(1e-5).unwrap();
    let index = rows
        .iter()
        .position(|r| *r == (0.01, 1.1, 10_000, 1e-5))
        .unwrap();
    accountant.compose(0.01, 1.1, 9000).unwrap();
    let after = accountant.epsilon(1e-5).unwrap();
    assert!(spent.epsilon < after.epsilon);
    assert!(((after.epsilon - reference[index].0) / reference[index].0).abs() < 5e-4);
}
