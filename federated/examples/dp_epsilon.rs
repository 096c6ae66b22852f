//! Prints ε for δ after `steps` rounds of the sampled Gaussian mechanism with sampling rate `q`
//! and noise multiplier `sigma` (RDP accountant, Opacus's orders and conversion).
//!
//! `cargo run -p gradmesh-federated --example dp_epsilon -- Q SIGMA STEPS DELTA`
//! (default: 0.01 1.1 1000 1e-5).

use std::error::Error;

use gradmesh_federated::dp::RdpAccountant;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let q: f64 = arg(0, "0.01").parse()?;
    let sigma: f64 = arg(1, "1.1").parse()?;
    let steps: u64 = arg(2, "1000").parse()?;
    let delta: f64 = arg(3, "1e-5").parse()?;
    let mut accountant = RdpAccountant::new();
    accountant.compose(q, sigma, steps)?;
    let spent = accountant.epsilon(delta)?;
    println!(
        "q={q} sigma={sigma} steps={steps} delta={delta}: epsilon={:.4} (order {})",
        spent.epsilon, spent.order
    );
    Ok(())
}
