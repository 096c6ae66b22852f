//! The span owner's side of a compressed all-reduce: decode every contribution, sum in a fixed
//! order, re-encode once for the all-gather. See the module docs of [`codec`](super).

use super::{Codec, CodecError, CodecKind, check_decoded};

/// One sender's encoded contribution to a span and its weight in the sum (1.0 for a plain sum,
/// `1/peers` or a sample-count share for an average).
#[derive(Clone, Copy, Debug)]
pub struct Contribution<'a> {
    /// Bytes produced by an encoder of the reduction's [`CodecKind`] for this span.
    pub bytes: &'a [u8],
    /// Multiplier applied in fp32 before summing.
    pub weight: f32,
}

/// Sets `reduced` to `Σ weight_i * decode(bytes_i)`, summed in fp32 in the order of
/// `contributions`.
///
/// Callers pass contributions in roster-rank order, never arrival order: the sum is then a pure
/// function of the bytes and weights, so a replacement owner recomputes it bit for bit.
/// `scratch` is a reusable decode buffer (resized to the span, its capacity kept). Fails on the
/// first undecodable contribution, on a non-finite weight, or if the sum overflows.
pub fn reduce_encoded(
    kind: CodecKind,
    contributions: &[Contribution<'_>],
    reduced: &mut [f32],
    scratch: &mut Vec<f32>,
) -> Result<(), CodecError> {
    reduced.fill(0.0);
    scratch.clear();
    scratch.resize(reduced.len(), 0.0);
    for (position, contribution) in contributions.iter().enumerate() {
        let weight = contribution.weight;
        if !weight.is_finite() {
            return Err(CodecError::InvalidWeight { position, weight });
        }
        kind.decode(contribution.bytes, scratch)?;
        // Separate multiply and add: Rust never contracts them into an FMA, so every platform
        // rounds identically.
        for (sum, x) in reduced.iter_mut().zip(scratch.iter()) {
            *sum += weight * *x;
        }
    }
    check_decoded(reduced)
}

/// Encodes the reduced span into `wire` for the all-gather and replaces `reduced` by the decoding
/// of those bytes, so the owner holds exactly what every receiver will decode.
///
/// With an error-feedback codec, `gather_codec` is the owner's own instance for this span; its
/// residual carries what the all-gather dropped into the next step.
pub fn reencode_reduced(
    gather_codec: &mut dyn Codec,
    reduced: &mut [f32],
    wire: &mut Vec<u8>,
) -> Result<(), CodecError> {
    gather_codec.encode(reduced, wire)?;
    gather_codec.decode(wire, reduced)
}

#[cfg(test)]
mod tests {
    use super::super::sample::{gaussian, rel_l2_error};
    use super::*;

    const KINDS: [&str; 6] = ["none", "fp16", "bf16", "int8:64", "topk:0.1", "powersgd:2"];

    /// Four senders, one owner, two receivers: the receivers' floats equal each other's and the
    /// owner's bit for bit.
    #[test]
    fn receivers_decode_bit_identical_spans() {
        let n = 3001;
        for name in KINDS {
            let kind: CodecKind = name.parse().unwrap();
            let inputs: Vec<Vec<f32>> = (0..4).map(|rank| gaussian(50 + rank, n)).collect();
            let sent: Vec<Vec<u8>> = inputs
                .iter()
                .zip(0u64..)
                .map(|(input, seed)| {
                    let mut bytes = Vec::new();
                    kind.build(n, seed)
                        .unwrap()
                        .encode(input, &mut bytes)
                        .unwrap();
                    bytes
                })
                .collect();
            let contributions: Vec<Contribution<'_>> = sent
                .iter()
                .map(|bytes| Contribution {
                    bytes,
                    weight: 0.25,
                })
                .collect();
            let (mut reduced, mut scratch, mut wire) = (vec![0.0; n], Vec::new(), Vec::new());
            reduce_encoded(kind, &contributions, &mut reduced, &mut scratch).unwrap();
            let mut gather = kind.build(n, 77).unwrap();
            reencode_reduced(gather.as_mut(), &mut reduced, &mut wire).unwrap();

            // Receiver one decodes statelessly; receiver two through its own encoder instance,
            // built with another seed and already used for a step of its own: decoding must not
            // depend on either.
            let (mut first, mut second) = (vec![0.0; n], vec![1.0; n]);
            kind.decode(&wire, &mut first).unwrap();
            let mut receiver = kind.build(n, 12_345).unwrap();
            receiver.encode(&inputs[3], &mut Vec::new()).unwrap();
            receiver.decode(&wire.clone(), &mut second).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&first), bits(&second), "{name}");
            assert_eq!(bits(&first), bits(&reduced), "{name}");
        }
    }

    #[test]
    fn int8_reduction_is_close_to_the_exact_average() {
        let n = 10_000;
        let kind: CodecKind = "int8:64".parse().unwrap();
        let inputs: Vec<Vec<f32>> = (0..3).map(|rank| gaussian(rank, n)).collect();
        let exact: Vec<f32> = (0..n)
            .map(|i| inputs.iter().map(|v| v[i]).sum::<f32>() / 3.0)
            .collect();
        let sent: Vec<Vec<u8>> = inputs
            .iter()
            .map(|input| {
                let mut bytes = Vec::new();
                kind.build(n, 0).unwrap().encode(input, &mut bytes).unwrap();
                bytes
            })
            .collect();
        let contributions: Vec<_> = sent
            .iter()
            .map(|bytes| Contribution {
                bytes,
                weight: 1.0 / 3.0,
            })
            .collect();
        let mut reduced = vec![0.0; n];
        reduce_encoded(kind, &contributions, &mut reduced, &mut Vec::new()).unwrap();
        assert!(rel_l2_error(&exact, &reduced) < 0.01);
    }

    #[test]
    fn bad_contributions_are_errors() {
        let kind = CodecKind::None;
        let good = vec![0u8; 16];
        let mut reduced = vec![0.0; 4];
        let nan_weight = [Contribution {
            bytes: &good,
            weight: f32::NAN,
        }];
        let err = reduce_encoded(kind, &nan_weight, &mut reduced, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, CodecError::InvalidWeight { position: 0, .. }));
        let short = [Contribution {
            bytes: &good[..15],
            weight: 1.0,
        }];
        let err = reduce_encoded(kind, &short, &mut reduced, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, CodecError::EncodedLenMismatch { .. }));
        let big = f32::MAX.to_le_bytes().repeat(4);
        let overflow = [
            Contribution {
                bytes: &big,
                weight: 1.0,
            },
            Contribution {
                bytes: &big,
                weight: 1.0,
            },
        ];
        let err = reduce_encoded(kind, &overflow, &mut reduced, &mut Vec::new()).unwrap_err();
        assert_eq!(err, CodecError::NonFiniteDecoded { index: 0 });
    }
}
