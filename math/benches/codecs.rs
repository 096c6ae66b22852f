//! Encode and decode throughput of every codec on one span of 16 Mi floats drawn from a standard
//! normal with a fixed seed, reported in GB/s of f32 input (4 bytes per float, decimal GB).
//!
//! Before timing it prints each codec's compression ratio and the relative L2 error of one
//! encode/decode from a fresh codec on the same vector; `docs/codecs.md` records both.
//!
//! `cargo bench -p gradmesh-kernels --bench codecs -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use gradmesh_math::codec::CodecKind;

/// The unit tests' seeded sample data, compiled into the bench too so both measure the same
/// vectors. The bench uses only `gaussian`; the error measures stay for the tests.
#[path = "../src/codec/sample.rs"]
#[allow(dead_code)]
mod sample;

use sample::gaussian;

const SPAN_LEN: usize = 16 << 20;
const SEED: u64 = 42;
const CODECS: [&str; 7] = [
    "none",
    "fp16",
    "bf16",
    "int8:64",
    "int8:256",
    "topk:0.01",
    "powersgd:4",
];

fn rel_l2_error(input: &[f32], decoded: &[f32]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in input.iter().zip(decoded) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        err += (x - y) * (x - y);
        norm += x * x;
    }
    (err / norm).sqrt()
}

fn print_quality(input: &[f32]) {
    println!("codec        ratio   rel_l2_error   (n = {SPAN_LEN}, seed {SEED}, one step)");
    let (mut bytes, mut decoded) = (Vec::new(), vec![0.0; input.len()]);
    for name in CODECS {
        let kind: CodecKind = name.parse().expect("valid codec name");
        let mut codec = kind.build(input.len(), SEED).expect("span fits");
        codec.encode(input, &mut bytes).expect("finite input");
        kind.decode(&bytes, &mut decoded).expect("own encoding");
        let err = rel_l2_error(input, &decoded);
        let ratio = kind.compression_ratio(input.len());
        println!("{name:<11} {ratio:>7.2}   {err:.3e}");
    }
}

fn bench_codecs(c: &mut Criterion) {
    let input = gaussian(SEED, SPAN_LEN);
    print_quality(&input);
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::BytesDecimal(4 * SPAN_LEN as u64));
    // One iteration takes tens to hundreds of milliseconds: ten flat samples are enough.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let mut decoded = vec![0.0f32; SPAN_LEN];
    for name in CODECS {
        let kind: CodecKind = name.parse().expect("valid codec name");
        let mut codec = kind.build(SPAN_LEN, SEED).expect("span fits");
        let mut bytes = Vec::new();
        // Error-feedback codecs run in steady state: each iteration is one more step.
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                codec
                    .encode(black_box(&input), &mut bytes)
                    .expect("finite input")
            });
        });
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                kind.decode(black_box(&bytes), &mut decoded)
                    .expect("own encoding")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_codecs);
criterion_main!(benches);
