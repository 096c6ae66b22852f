//! Property tests for the wire decoder: exact round trips for every body kind (spans raw or in
//! each stateless codec), and totality plus bounded allocation on random and mutated frames,
//! hostile codec tags and hostile span lengths included.
//!
//! Deterministic: the proptest RNG is seeded from `GRADMESH_WIRE_SEED` (default below) and the
//! base case count comes from `GRADMESH_WIRE_CASES`. Everything runs in one `#[test]` so the
//! counting allocator sees only the decoder under test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gradmesh_protocol::config::CodecKind;
use gradmesh_protocol::keys::Seal;
use gradmesh_protocol::wire::{
    Announce, Body, Certificate, CommitNotice, Contribution, Envelope, HEADER_BYTES_MAX,
    LineageLink, Member, PROTOCOL_VERSION, Proposal, Reduced, Role, SealRequest, SpanRequest,
    StateChunk, StateManifest, StateRequest, StateSummary, Vote, VoteLock, WireError, decode,
    encode, encoded_len,
};
use gradmesh_protocol::{Digest, PeerId, RoundId};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Counts live and peak heap bytes so a test can bound what one decode allocates.
struct CountingAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SEED_DEFAULT: u64 = 0x6772_6164_6d65_7368;
const CASES_DEFAULT: u32 = 25_000;
/// Slack for a decode that fails: bincode's serde path may pre-size a `Vec` from a claimed length
/// (serde caps that at 1 MiB), and error strings are small.
const ALLOC_SLACK_BYTES: usize = HEADER_BYTES_MAX + 64 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(seed: u64, salt: u64, cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&salt.to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key))
}

/// Decodes with allocation accounting; returns the result and the peak bytes it allocated.
fn decode_counted(frame: &[u8], max: usize) -> (Result<Envelope, WireError>, usize) {
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(base, Ordering::Relaxed);
    let result = decode(frame, max);
    let peak = PEAK_BYTES.load(Ordering::Relaxed).saturating_sub(base);
    (result, peak)
}

fn check_decode_total(frame: &[u8], inputs: &Cell<u64>, peak_max: &Cell<usize>) {
    let (result, peak) = decode_counted(frame, usize::MAX);
    inputs.set(inputs.get() + 1);
    peak_max.set(peak_max.get().max(peak.saturating_sub(frame.len())));
    assert!(
        peak <= 4 * frame.len() + ALLOC_SLACK_BYTES,
        "decode of {} bytes allocated {peak} bytes ({result:?})",
        frame.len()
    );
    if let Ok(envelope) = result {
        // Whatever decodes must re-encode to a frame that decodes to the same thing.
        let again = encode(&envelope).expect("a decoded envelope re-encodes");
        let back = decode(&again, usize::MAX).expect("a re-encoded envelope decodes");
        assert_eq!(canonical(&back), canonical(&envelope));
    }
}

fn peer() -> impl Strategy<Value = PeerId> {
    any::<[u8; 32]>().prop_map(PeerId)
}

/// Any 96 bytes as a seal: the wire does not verify signatures (the round does).
fn seal() -> impl Strategy<Value = Seal> {
    any::<([u8; 32], [u8; 32], [u8; 32])>().prop_map(|(key, r, s)| Seal { key, r, s })
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn summary() -> impl Strategy<Value = StateSummary> {
    (any::<u64>(), digest()).prop_map(|(r, digest)| StateSummary {
        round: RoundId(r),
        digest,
    })
}

fn floats() -> impl Strategy<Value = Arc<[f32]>> {
    vec(any::<u32>(), 0..48).prop_map(|bits| bits.into_iter().map(f32::from_bits).collect())
}

fn announce() -> impl Strategy<Value = Body> {
    (
        proptest::option::of(summary()),
        proptest::option::of(any::<u64>().prop_map(RoundId)),
        any::<bool>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of((
            any::<u64>(),
            digest(),
            any::<bool>(),
            vec(any::<u8>(), 0..4),
        )),
        any::<u64>(),
        proptest::option::of(seal()),
    )
        .prop_map(
            |(state, ready_for, wants_to_join, bw, sps, spstep, lock, seq, attestation)| {
                Body::Announce(Announce {
                    state,
                    ready_for,
                    wants_to_join,
                    bandwidth_bytes_per_s: bw,
                    samples_per_s: sps,
                    samples_per_step: spstep,
                    lock: lock.map(|(round, digest, carried, backers)| VoteLock {
                        round: RoundId(round),
                        digest,
                        carried,
                        backers,
                    }),
                    seq,
                    attestation,
                })
            },
        )
}

fn proposal() -> impl Strategy<Value = Body> {
    let member = (peer(), any::<bool>(), any::<u64>()).prop_map(|(peer, c, bw)| Member {
        peer,
        role: if c { Role::Contributor } else { Role::Observer },
        bandwidth_bytes_per_s: bw,
    });
    (summary(), any::<u64>(), vec(member, 0..8)).prop_map(|(base, vector_len, members)| {
        Body::Proposal(Proposal {
            base,
            vector_len,
            members,
        })
    })
}

/// A span's values on the wire: `(codec, floats, raw data, encoded bytes)`. Raw f32 with any
/// bit patterns, or a stateless codec with arbitrary bytes of exactly its encoded length (the wire
/// carries them without interpreting them; the round decodes and checks them).
type SpanValues = (CodecKind, u32, Arc<[f32]>, Arc<[u8]>);

fn span_values() -> impl Strategy<Value = SpanValues> {
    let codec = prop_oneof![
        Just(CodecKind::Fp16),
        Just(CodecKind::Bf16),
        (1u32..=300).prop_map(|b| format!("int8:{b}").parse().expect("valid block")),
    ];
    let encoded = (codec, 0usize..48).prop_flat_map(|(codec, n)| {
        vec(any::<u8>(), codec.encoded_len(n)).prop_map(move |bytes| {
            let n = u32::try_from(n).expect("small");
            (codec, n, Arc::from(Vec::new()), Arc::from(bytes))
        })
    });
    let raw = floats().prop_map(|data| {
        let n = u32::try_from(data.len()).expect("small");
        (CodecKind::None, n, data, Arc::from(Vec::new()))
    });
    prop_oneof![raw, encoded]
}

fn contribution() -> impl Strategy<Value = Body> {
    (digest(), any::<u32>(), any::<u32>(), span_values()).prop_map(
        |(roster, span, weight, (codec, floats, data, encoded))| {
            Body::Contribution(Contribution {
                roster,
                span,
                weight,
                codec,
                floats,
                data: data.into(),
                encoded,
            })
        },
    )
}

fn reduced() -> impl Strategy<Value = Body> {
    (
        digest(),
        any::<u32>(),
        vec(any::<u8>(), 0..16),
        any::<u64>(),
        span_values(),
    )
        .prop_map(
            |(roster, span, contributors, total_weight, (codec, floats, data, encoded))| {
                Body::Reduced(Reduced {
                    roster,
                    span,
                    contributors,
                    total_weight,
                    codec,
                    floats,
                    data: data.into(),
                    encoded,
                })
            },
        )
}

fn state_bodies() -> impl Strategy<Value = Body> {
    prop_oneof![
        proptest::option::of(any::<u32>()).prop_map(|c| Body::StateRequest(
            c.map_or(StateRequest::Manifest, StateRequest::Chunk)
        )),
        (
            any::<u64>(),
            0..=(8u32 << 20),
            vec(digest(), 0..6),
            vec(peer(), 0..6),
            vec(seal(), 0..4),
            vec(
                (any::<u64>(), digest(), vec(peer(), 0..4), vec(seal(), 0..3)),
                0..3
            )
        )
            .prop_map(
                |(total_bytes, chunk_bytes, chunks, committee, attestations, links)| {
                    let lineage = links
                        .into_iter()
                        .map(|(round, content, committee, attestations)| LineageLink {
                            round: RoundId(round),
                            content,
                            committee,
                            attestations,
                        })
                        .collect();
                    Body::StateManifest(StateManifest {
                        total_bytes,
                        chunk_bytes,
                        chunks,
                        committee,
                        attestations,
                        lineage,
                    })
                }
            ),
        (any::<u32>(), vec(any::<u8>(), 0..128)).prop_map(|(index, data)| {
            Body::StateChunk(StateChunk {
                index,
                bytes: u32::try_from(data.len()).expect("small"),
                data: Arc::from(data),
            })
        }),
        Just(Body::StateUnavailable),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        announce(),
        proposal(),
        contribution(),
        reduced(),
        (digest(), any::<u32>())
            .prop_map(|(roster, span)| Body::SpanRequest(SpanRequest { roster, span })),
        (digest(), seal()).prop_map(|(result, seal)| Body::Vote(Vote { result, seal })),
        (digest(), vec(any::<u8>(), 0..4))
            .prop_map(|(result, voters)| Body::Commit(CommitNotice { result, voters })),
        (digest(), vec(any::<u8>(), 0..4))
            .prop_map(|(result, voters)| Body::SealRequest(SealRequest { result, voters })),
        (digest(), vec(seal(), 0..6))
            .prop_map(|(result, seals)| Body::Seals(Certificate { result, seals })),
        state_bodies(),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (peer(), any::<u64>(), body()).prop_map(|(p, r, b)| Envelope::new(p, RoundId(r), b))
}

/// The envelope with its float payload replaced by bit patterns, so NaNs compare equal.
fn canonical(envelope: &Envelope) -> (Envelope, Vec<u32>) {
    let mut e = envelope.clone();
    let bits = match &mut e.body {
        Body::Contribution(Contribution { data, .. }) | Body::Reduced(Reduced { data, .. }) => {
            let bits = data.iter().map(|f| f.to_bits()).collect();
            *data = Vec::new().into();
            bits
        }
        _ => Vec::new(),
    };
    (e, bits)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        xor: u8,
    },
    Truncate {
        at: usize,
    },
    Extend {
        bytes: Vec<u8>,
    },
    /// A huge header length prefix.
    HeaderLen {
        len: u32,
    },
    /// A huge bincode varint (`0xFD` + u64) written over, or spliced into, the header.
    InnerLen {
        at: usize,
        len: u64,
        splice: bool,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        vec(any::<u8>(), 1..16).prop_map(|bytes| Mutation::Extend { bytes }),
        prop_oneof![any::<u32>(), (1u32 << 20)..=u32::MAX]
            .prop_map(|len| Mutation::HeaderLen { len }),
        (
            any::<usize>(),
            prop_oneof![any::<u64>(), (1u64 << 32)..=u64::MAX],
            any::<bool>()
        )
            .prop_map(|(at, len, splice)| Mutation::InnerLen { at, len, splice }),
    ]
}

fn apply(frame: &mut Vec<u8>, m: &Mutation) {
    let n = frame.len();
    match m {
        Mutation::Flip { at, xor } if n > 0 => frame[at % n] ^= xor,
        Mutation::Truncate { at } if n > 0 => frame.truncate(at % n),
        Mutation::Extend { bytes } => frame.extend_from_slice(bytes),
        Mutation::HeaderLen { len } if n >= 4 => frame[..4].copy_from_slice(&len.to_le_bytes()),
        Mutation::InnerLen { at, len, splice } if n > 4 => {
            let mut varint = vec![0xFD];
            varint.extend_from_slice(&len.to_le_bytes());
            let at = 4 + at % (n - 4);
            if *splice {
                frame.splice(at..at, varint);
                let header_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
                let fixed = header_len.saturating_add(9);
                frame[..4].copy_from_slice(&fixed.to_le_bytes());
            } else {
                let end = (at + varint.len()).min(n);
                frame[at..end].copy_from_slice(&varint[..end - at]);
            }
        }
        _ => {}
    }
}

#[test]
fn wire_decoder_properties() {
    let seed = env_u64("GRADMESH_WIRE_SEED", SEED_DEFAULT);
    let cases = u32::try_from(env_u64("GRADMESH_WIRE_CASES", CASES_DEFAULT.into()))
        .unwrap_or(CASES_DEFAULT);
    println!(
        "wire props: seed {seed:#x} (GRADMESH_WIRE_SEED), cases {cases} (GRADMESH_WIRE_CASES)"
    );
    let inputs = Cell::new(0u64);
    let overhead_max = Cell::new(0usize);

    // 1. Round trips, exact to the bit, with an exact `encoded_len`.
    runner(seed, 1, cases)
        .run(&envelope(), |e| {
            let frame = encode(&e).expect("generated envelopes are in bounds");
            prop_assert_eq!(encoded_len(&e), frame.len());
            let back = decode(&frame, frame.len()).expect("own frames decode");
            inputs.set(inputs.get() + 1);
            prop_assert_eq!(canonical(&back), canonical(&e));
            let too_small = decode(&frame, frame.len() - 1);
            inputs.set(inputs.get() + 1);
            let refused = matches!(too_small, Err(WireError::FrameTooLarge { .. }));
            prop_assert!(refused, "{:?}", too_small);
            Ok(())
        })
        .expect("round trip");

    // 2. Random byte strings, some with a plausible header length prefix.
    runner(seed, 2, cases)
        .run(
            &(vec(any::<u8>(), 0..256), any::<bool>()),
            |(mut bytes, fix)| {
                if fix && bytes.len() >= 4 {
                    let len = u32::try_from(bytes.len() - 4).expect("small");
                    bytes[..4].copy_from_slice(&len.to_le_bytes());
                }
                check_decode_total(&bytes, &inputs, &overhead_max);
                Ok(())
            },
        )
        .expect("random bytes");

    // 3. Mutated valid frames: every prefix of mutations is a decoder input.
    runner(seed, 3, cases)
        .run(&(envelope(), vec(mutation(), 1..4)), |(e, mutations)| {
            let mut frame = encode(&e).expect("in bounds");
            for m in &mutations {
                apply(&mut frame, m);
                check_decode_total(&frame, &inputs, &overhead_max);
            }
            Ok(())
        })
        .expect("mutated frames");

    let mut overhead = overhead_max.get();
    let inputs = inputs.get()
        + huge_claimed_lengths_are_refused(&mut overhead)
        + hostile_span_headers_are_refused(&mut overhead);
    println!("wire decoder inputs: {inputs}");
    println!("wire decoder max allocation beyond frame length: {overhead} bytes");
    assert!(inputs >= u64::from(cases) * 4, "too few inputs: {inputs}");
}

/// Every `Vec` length prefix of a proposal/manifest header claims 2^62 elements in a tiny frame.
fn huge_claimed_lengths_are_refused(overhead_max: &mut usize) -> u64 {
    let summary = StateSummary {
        round: RoundId(1),
        digest: Digest::default(),
    };
    let bodies = [
        span_body(false, "int8:64"),
        span_body(true, "fp16"),
        Body::Proposal(Proposal {
            base: summary,
            vector_len: 1,
            members: Vec::new(),
        }),
        Body::StateManifest(StateManifest {
            total_bytes: 0,
            chunk_bytes: 0,
            chunks: Vec::new(),
            committee: Vec::new(),
            attestations: Vec::new(),
            lineage: vec![LineageLink {
                round: RoundId(0),
                content: Digest::default(),
                committee: Vec::new(),
                attestations: Vec::new(),
            }],
        }),
        Body::Announce(Announce {
            state: Some(summary),
            ready_for: None,
            wants_to_join: false,
            bandwidth_bytes_per_s: 1,
            samples_per_s: 1,
            samples_per_step: 1,
            lock: Some(VoteLock {
                round: RoundId(1),
                digest: Digest::default(),
                carried: false,
                backers: Vec::new(),
            }),
            seq: 1,
            attestation: None,
        }),
    ];
    let mut inputs = 0;
    for body in bodies {
        let frame = encode(&Envelope::new(PeerId::from_index(0), RoundId(1), body)).expect("ok");
        // Each zero byte in the header may be an empty `Vec`'s length: replace it by a huge one.
        for at in 4..frame.len() {
            if frame[at] != 0 {
                continue;
            }
            let mut bad = frame.clone();
            let mut varint = vec![0xFD];
            varint.extend_from_slice(&(1u64 << 62).to_le_bytes());
            bad.splice(at..=at, varint);
            let header_len = u32::try_from(bad.len() - 4).expect("small");
            bad[..4].copy_from_slice(&header_len.to_le_bytes());
            let (result, peak) = decode_counted(&bad, usize::MAX);
            inputs += 1;
            *overhead_max = (*overhead_max).max(peak.saturating_sub(bad.len()));
            // A zero may be a scalar (then 2^62 is a legal value); a `Vec` length must fail.
            if let Ok(e) = result {
                assert_eq!(encoded_len(&e), bad.len(), "claimed 2^62 at {at}: {e:?}");
            }
            assert!(
                peak <= 4 * bad.len() + ALLOC_SLACK_BYTES,
                "allocated {peak}"
            );
        }
    }
    assert_eq!(PROTOCOL_VERSION, 5);
    inputs
}

/// A Contribution (or Reduced) of 5 floats in `codec`, with the codec's exact payload.
fn span_body(reduced: bool, codec: &str) -> Body {
    let codec: CodecKind = codec.parse().expect("valid");
    let raw = codec == CodecKind::None;
    let encoded: Arc<[u8]> = Arc::from(if raw {
        vec![]
    } else {
        vec![0u8; codec.encoded_len(5)]
    });
    let data: Arc<[f32]> = Arc::from(if raw { vec![0.5; 5] } else { vec![] });
    if reduced {
        Body::Reduced(Reduced {
            roster: Digest::default(),
            span: 0,
            contributors: vec![1],
            total_weight: 1,
            codec,
            floats: 5,
            data: data.into(),
            encoded,
        })
    } else {
        Body::Contribution(Contribution {
            roster: Digest::default(),
            span: 0,
            weight: 1,
            codec,
            floats: 5,
            data: data.into(),
            encoded,
        })
    }
}

/// Every byte of span headers (the codec tag, its block length and the float count among them)
/// replaced by every value: the decoder never panics, never allocates beyond the frame, and
/// whatever it accepts has a payload of exactly its codec's length for its float count and a
/// stateless codec. Then a span claiming the most floats the wire allows, in the codec with the
/// largest encoding (int8 with 1-float blocks, 5 bytes per float), in a small frame: refused
/// before its 320 MiB could be allocated.
fn hostile_span_headers_are_refused(overhead_max: &mut usize) -> u64 {
    let mut inputs = 0;
    for (reduced, codec) in [(false, "int8:64"), (true, "bf16"), (false, "none")] {
        let envelope = Envelope::new(PeerId::from_index(0), RoundId(1), span_body(reduced, codec));
        let frame = encode(&envelope).expect("ok");
        let header_len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        for at in 4..4 + header_len {
            for value in 0..=255u8 {
                let mut bad = frame.clone();
                bad[at] = value;
                let (result, peak) = decode_counted(&bad, usize::MAX);
                inputs += 1;
                *overhead_max = (*overhead_max).max(peak.saturating_sub(bad.len()));
                assert!(
                    peak <= 4 * bad.len() + ALLOC_SLACK_BYTES,
                    "allocated {peak}"
                );
                if let Ok(e) = result
                    && let Body::Contribution(Contribution { codec, floats, .. })
                    | Body::Reduced(Reduced { codec, floats, .. }) = e.body
                {
                    assert!(!codec.is_stateful(), "{codec}");
                    let payload = bad.len() - 4 - header_len;
                    assert_eq!(
                        payload,
                        codec.encoded_len(floats as usize),
                        "at {at}: {value}"
                    );
                }
            }
        }
    }
    let widest: CodecKind = "int8:1".parse().expect("valid");
    let max = gradmesh_protocol::wire::SPAN_FLOATS_MAX;
    for floats in [max, max + 1, u32::MAX] {
        let mut body = span_body(false, "int8:1");
        if let Body::Contribution(c) = &mut body {
            c.floats = floats;
            c.encoded = Arc::from(vec![0u8; 64]);
        }
        let envelope = Envelope::new(PeerId::from_index(0), RoundId(1), body);
        let header = bincode::serde::encode_to_vec(
            &envelope,
            bincode::config::standard().with_limit::<HEADER_BYTES_MAX>(),
        )
        .expect("encodes");
        let mut frame = u32::try_from(header.len())
            .expect("small")
            .to_le_bytes()
            .to_vec();
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&[0u8; 64]);
        let (result, peak) = decode_counted(&frame, usize::MAX);
        inputs += 1;
        assert!(
            matches!(
                result,
                Err(WireError::PayloadLength { .. } | WireError::OutOfBounds { .. })
            ),
            "{floats} floats in {widest}: {result:?}"
        );
        assert!(
            peak <= 4 * frame.len() + ALLOC_SLACK_BYTES,
            "allocated {peak}"
        );
        *overhead_max = (*overhead_max).max(peak.saturating_sub(frame.len()));
    }
    inputs
}
