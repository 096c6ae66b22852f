//! The CPU floor of one encrypted all-reduce on this machine: what `gradmesh bench allreduce`
//! could reach if nothing but the unavoidable work ran, with perfect overlap on every core.
//!
//! Every node seals the 2(n−1)/n·M bytes it sends and opens the same amount it receives — with
//! AES-256-GCM in 256 KiB records on a lane (ring; the node's default), or ChaCha20-Poly1305 in
//! 64 KiB noise messages over libp2p's streams (`--no-lanes`) — and hashes the M-byte result
//! twice with blake3 (the result digest it votes on and the state snapshot's manifest). The
//! example measures each primitive's single-core throughput here and prints, per cipher,
//! `floor = n · (2 · 2(n−1)/n·M / seal_rate + 2·M / blake3_rate) / cores`.
//!
//! ```text
//! cargo run --release -p gradmesh-node --example allreduce_floor -- NODES FLOATS CORES
//! ```

use std::time::Instant;

use ring::aead::{AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

/// Bytes each primitive is timed on.
const SAMPLE_BYTES: usize = 256 << 20;
/// noise's largest transport message (65535 bytes, less its 16-byte tag).
const NOISE_MESSAGE_BYTES: usize = 65_519;
/// A lane record (`net/lane/record.rs`).
const LANE_RECORD_BYTES: usize = 256 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [nodes, floats, cores] = args[..] else {
        return Err("usage: allreduce_floor NODES FLOATS CORES".into());
    };
    if nodes < 2 || cores == 0 {
        return Err("need at least 2 nodes and 1 core".into());
    }
    let hash = blake3_bytes_per_s();
    println!("blake3 {:.2} GB/s (one core)", hash / 1e9);
    let m = 4.0 * floats as f64;
    let wire = 2.0 * (nodes as f64 - 1.0) / nodes as f64 * m;
    for (name, algorithm, record) in [
        ("lane: aes-256-gcm", &AES_256_GCM, LANE_RECORD_BYTES),
        (
            "noise: chacha20-poly1305",
            &CHACHA20_POLY1305,
            NOISE_MESSAGE_BYTES,
        ),
    ] {
        let seal = seal_bytes_per_s(algorithm, record)?;
        let per_node = 2.0 * wire / seal + 2.0 * m / hash;
        let floor = nodes as f64 * per_node / cores.min(nodes) as f64;
        println!(
            "{name}: seal {:.2} GB/s (one core); {nodes} nodes x {floats} floats on {cores} \
             cores: {per_node:.3} s of crypto and hashing per node, floor {floor:.3} s per \
             all-reduce",
            seal / 1e9
        );
    }
    Ok(())
}

fn seal_bytes_per_s(
    algorithm: &'static Algorithm,
    record: usize,
) -> Result<f64, ring::error::Unspecified> {
    let key = LessSafeKey::new(UnboundKey::new(algorithm, &[7; 32])?);
    let mut message = vec![1u8; record];
    let count = SAMPLE_BYTES / record;
    let started = Instant::now();
    for i in 0..count as u64 {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&i.to_le_bytes());
        let tag = key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut message,
        )?;
        let _ = std::hint::black_box(tag);
    }
    Ok((count * record) as f64 / started.elapsed().as_secs_f64())
}

fn blake3_bytes_per_s() -> f64 {
    let data = vec![3u8; SAMPLE_BYTES];
    let started = Instant::now();
    std::hint::black_box(blake3::hash(&data));
    SAMPLE_BYTES as f64 / started.elapsed().as_secs_f64()
}
