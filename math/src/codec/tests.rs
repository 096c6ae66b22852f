//! Properties every codec shares: exact encoded length, error within the documented bound,
//! determinism, typed rejection of non-finite input, and no panic on hostile bytes.
//!
//! Proptest prints a failing case and persists its seed next to this file
//! (`tests.proptest-regressions`, replayed first on every run); set `PROPTEST_RNG_SEED` to replay
//! a whole run. A failure that mattered also becomes a named unit test below.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::sample::{gaussian, rel_l2_error};
use super::{CodecError, CodecKind, ErrorBound, MAX_SPAN_LEN};

const NAMES: [&str; 9] = [
    "none",
    "fp16",
    "bf16",
    "int8:64",
    "int8:7",
    "topk:0.1",
    "topk:1",
    "powersgd:1",
    "powersgd:3",
];

/// `cases` cases, with failures persisted beside this source file rather than in a crate-level
/// `proptest-regressions/` directory.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn kinds() -> Vec<CodecKind> {
    NAMES.iter().map(|name| name.parse().unwrap()).collect()
}

/// Finite values from f32's subnormals up to 2^15 (inside fp16's range), with exact zeros.
fn values(len_max: usize) -> impl Strategy<Value = Vec<f32>> {
    let element = prop_oneof![
        8 => (-1.0f32..1.0, -30i32..15).prop_map(|(m, e)| m * 2f32.powi(e)),
        1 => Just(0.0f32),
        1 => -1e-6f32..1e-6,
        // Down to f32's subnormals, where flush and subnormal rounding rules apply.
        1 => (-1.0f32..1.0, -149i32..-90).prop_map(|(m, e)| m * 2f32.powi(e)),
    ];
    prop::collection::vec(element, 0..len_max)
}

fn encode_fresh(kind: CodecKind, input: &[f32], seed: u64) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::new();
    kind.build(input.len(), seed)?.encode(input, &mut bytes)?;
    Ok(bytes)
}

/// Checks `decoded` against `input` under `bound`, for a codec with no accumulated residual.
fn assert_within_bound(bound: ErrorBound, input: &[f32], decoded: &[f32]) {
    match bound {
        ErrorBound::Exact => {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(input), bits(decoded));
        }
        ErrorBound::PerElement { rel, abs } => {
            for (x, y) in input.iter().zip(decoded) {
                let err = (f64::from(*x) - f64::from(*y)).abs();
                assert!(err <= (rel * f64::from(x.abs())).max(abs), "{x} -> {y}");
            }
        }
        ErrorBound::BlockAbsMax { block, rel, abs } => {
            for (xs, ys) in input.chunks(block).zip(decoded.chunks(block)) {
                let absmax = xs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                for (x, y) in xs.iter().zip(ys) {
                    let err = (f64::from(*x) - f64::from(*y)).abs();
                    let bound = (rel * f64::from(absmax)).max(abs);
                    assert!(err <= bound, "{x} -> {y} (absmax {absmax})");
                }
            }
        }
        ErrorBound::ErrorFeedback { contraction } => {
            let norm = input
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum::<f64>()
                .sqrt();
            let err = input
                .iter()
                .zip(decoded)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                err <= contraction * norm * (1.0 + 1e-4) + 1e-30,
                "{err} vs {norm}"
            );
        }
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn round_trip_is_within_documented_bound(input in values(300), seed in any::<u64>()) {
        for kind in kinds() {
            let bytes = encode_fresh(kind, &input, seed).unwrap();
            prop_assert_eq!(bytes.len(), kind.encoded_len(input.len()));
            prop_assert_eq!(&encode_fresh(kind, &input, seed).unwrap(), &bytes, "deterministic");
            let mut decoded = vec![f32::NAN; input.len()];
            kind.decode(&bytes, &mut decoded).unwrap();
            assert_within_bound(kind.error_bound(input.len()), &input, &decoded);
        }
    }
}

/// Random, truncated, padded and bit-flipped buffers: every decode is `Ok` with finite output
/// or a typed `Err`, never a panic. 10,000 cases, each run against every codec.
mod hostile {
    use super::*;

    /// `len` bytes cycled from `pool` (zeros if the pool is empty).
    fn bytes_from(pool: &[u8], len: usize) -> Vec<u8> {
        if pool.is_empty() {
            return vec![0; len];
        }
        pool.iter().copied().cycle().take(len).collect()
    }

    fn assert_decode_is_safe(kind: CodecKind, bytes: &[u8], span_len: usize) {
        let mut out = vec![0.0; span_len];
        if kind.decode(bytes, &mut out).is_ok() {
            assert!(
                out.iter().all(|x| x.is_finite()),
                "{kind}: Ok with non-finite output"
            );
        }
    }

    proptest! {
        #![proptest_config(config(10_000))]

        #[test]
        fn random_bytes_never_panic(
            span_len in 0usize..200,
            pool in prop::collection::vec(any::<u8>(), 0..1800),
            length_mode in 0u8..4,
        ) {
            for kind in kinds() {
                let exact = kind.encoded_len(span_len);
                let len = match length_mode {
                    0 => exact,
                    1 => exact.saturating_sub(1),
                    2 => exact + 1,
                    _ => pool.len(),
                };
                assert_decode_is_safe(kind, &bytes_from(&pool, len), span_len);
            }
        }

        #[test]
        fn flipped_bits_never_panic(input in values(120), position in any::<usize>(), flip in 1u8..=255) {
            for kind in kinds() {
                let mut bytes = encode_fresh(kind, &input, 1).unwrap();
                if !bytes.is_empty() {
                    let at = position % bytes.len();
                    bytes[at] ^= flip;
                }
                assert_decode_is_safe(kind, &bytes, input.len());
            }
        }
    }
}

/// Regression (found by the round-trip property): an empty span encodes to zero bytes, decodes
/// to nothing, and its error-feedback bound must not divide by a zero norm.
#[test]
fn empty_spans_round_trip() {
    for kind in kinds() {
        let bytes = encode_fresh(kind, &[], 0).unwrap();
        assert!(bytes.is_empty(), "{kind}");
        kind.decode(&bytes, &mut []).unwrap();
        assert_within_bound(kind.error_bound(0), &[], &[]);
        assert!(kind.decode(&[0], &mut []).is_err(), "{kind}");
    }
}

#[test]
fn non_finite_input_is_rejected_without_touching_state() {
    let input = gaussian(3, 50);
    for kind in kinds() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut poisoned = input.clone();
            poisoned[17] = bad;
            let mut codec = kind.build(input.len(), 8).unwrap();
            let mut bytes = Vec::new();
            let err = codec.encode(&poisoned, &mut bytes).unwrap_err();
            assert!(
                matches!(err, CodecError::NonFiniteInput { index: 17, .. }),
                "{kind}: {err:?}"
            );
            // The failed call left no residual behind: the next encode matches a fresh codec's.
            codec.encode(&input, &mut bytes).unwrap();
            assert_eq!(bytes, encode_fresh(kind, &input, 8).unwrap(), "{kind}");
        }
    }
}

/// After `reset` an all-zero step sends nothing; without it, it sends the carried residual.
#[test]
fn reset_drops_error_feedback() {
    let input = gaussian(5, 400);
    let zeros = vec![0.0; input.len()];
    for kind in kinds().into_iter().filter(|kind| kind.is_stateful()) {
        let mut decoded = vec![0.0; input.len()];
        for reset in [false, true] {
            let mut codec = kind.build(input.len(), 2).unwrap();
            let mut bytes = Vec::new();
            codec.encode(&input, &mut bytes).unwrap();
            if reset {
                codec.reset();
            }
            codec.encode(&zeros, &mut bytes).unwrap();
            codec.decode(&bytes, &mut decoded).unwrap();
            let sent_anything = decoded.iter().any(|&x| x != 0.0);
            // `topk:1` sends everything at once, so it never carries a residual.
            let carries =
                kind.error_bound(input.len()) != ErrorBound::ErrorFeedback { contraction: 0.0 };
            assert_eq!(sent_anything, !reset && carries, "{kind}, reset {reset}");
        }
    }
}

#[test]
fn span_length_mismatches_are_errors() {
    for kind in kinds() {
        let mut codec = kind.build(10, 0).unwrap();
        let mut bytes = Vec::new();
        let err = codec.encode(&[1.0; 9], &mut bytes).unwrap_err();
        assert_eq!(
            err,
            CodecError::SpanLenMismatch {
                expected: 10,
                actual: 9
            }
        );
        codec.encode(&[1.0; 10], &mut bytes).unwrap();
        let err = codec.decode(&bytes, &mut [0.0; 11]).unwrap_err();
        assert_eq!(
            err,
            CodecError::SpanLenMismatch {
                expected: 10,
                actual: 11
            }
        );
        // The stateless decoder only sees lengths: PowerSGD's 10 and 11 floats share a 3x4
        // matrix and byte count, which is why the span length must come from the protocol.
        if kind.encoded_len(11) != bytes.len() {
            let err = kind.decode(&bytes, &mut [0.0; 11]).unwrap_err();
            assert!(
                matches!(err, CodecError::EncodedLenMismatch { .. }),
                "{kind}"
            );
        }
        let err = kind.build(MAX_SPAN_LEN + 1, 0).unwrap_err();
        assert!(matches!(err, CodecError::SpanTooLong { .. }));
    }
}

/// Compression ratio and relative L2 error of one step on a fixed-seed Gaussian vector, for the
/// figures in `docs/codecs.md` (`cargo test -p gradmesh-kernels codec_quality -- --nocapture`).
#[test]
fn codec_quality_on_gaussian() {
    let n = 1 << 20;
    let input = gaussian(42, n);
    let names = [
        "none",
        "fp16",
        "bf16",
        "int8:64",
        "int8:256",
        "topk:0.01",
        "topk:0.1",
        "powersgd:4",
    ];
    println!("codec        ratio   rel_l2_error   (n = {n}, seed 42)");
    for name in names {
        let kind: CodecKind = name.parse().unwrap();
        let bytes = encode_fresh(kind, &input, 42).unwrap();
        let mut decoded = vec![0.0; n];
        kind.decode(&bytes, &mut decoded).unwrap();
        let err = rel_l2_error(&input, &decoded);
        println!("{name:<11} {:>7.2}   {err:.3e}", kind.compression_ratio(n));
        assert_within_bound(kind.error_bound(n), &input, &decoded);
        if name.starts_with("int8") {
            assert!(err <= 0.01, "{name}: {err}");
        }
    }
}
