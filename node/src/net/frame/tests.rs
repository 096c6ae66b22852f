use futures::executor::block_on;
use futures::io::Cursor;
use proptest::prelude::*;

use super::*;

fn caps(payload_bytes_max: u64) -> FrameCaps {
    FrameCaps::new(payload_bytes_max).expect("valid test caps")
}

fn raw_prefix(magic: u32, meta_len: u32, payload_len: u64) -> [u8; PREFIX_BYTES] {
    let mut out = [0u8; PREFIX_BYTES];
    out[..4].copy_from_slice(&magic.to_le_bytes());
    out[4..8].copy_from_slice(&meta_len.to_le_bytes());
    out[8..].copy_from_slice(&payload_len.to_le_bytes());
    out
}

fn encode(frame: &Frame, caps: &FrameCaps) -> Vec<u8> {
    let mut out = Vec::new();
    block_on(write_frame(&mut out, frame, caps)).expect("encode");
    out
}

#[test]
fn prefix_layout_is_fixed_little_endian() {
    let frame = Frame {
        meta: Bytes::from_static(b"abc"),
        payload: Bytes::from(vec![7u8; 1000]),
    };
    let prefix = encode_prefix(&frame, &FrameCaps::default()).expect("prefix");
    assert_eq!(prefix, raw_prefix(FRAME_MAGIC, 3, 1000));
}

#[test]
fn frame_round_trips() {
    let frame = Frame {
        meta: Bytes::from_static(b"span 3 of round 9"),
        payload: Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<_>>()),
    };
    let wire = encode(&frame, &FrameCaps::default());
    assert_eq!(
        wire.len(),
        PREFIX_BYTES + frame.meta.len() + frame.payload.len()
    );
    let back = block_on(read_frame(&mut Cursor::new(wire), &FrameCaps::default())).expect("decode");
    assert_eq!(back, frame);
}

#[test]
fn hostile_payload_lengths_are_refused_before_allocation() {
    let caps = caps(1024);
    // u64::MAX would abort the process if it reached `vec![0; len]`: refusing it proves the
    // check runs first.
    for len in [1025, 1 << 40, u64::MAX] {
        let err = decode_prefix(&raw_prefix(FRAME_MAGIC, 0, len), &caps).expect_err("refused");
        assert!(matches!(
            err,
            FrameError::TooLarge(Oversize { part: FramePart::Payload, len: l, max: 1024 }) if l == len
        ));
        let err = block_on(read_frame(
            &mut Cursor::new(raw_prefix(FRAME_MAGIC, 0, len)),
            &caps,
        ))
        .expect_err("refused");
        assert!(matches!(err, FrameError::TooLarge(_)), "{err:?}");
    }
    assert_eq!(
        decode_prefix(&raw_prefix(FRAME_MAGIC, 0, 1024), &caps).expect("at cap"),
        (0, 1024)
    );
}

#[test]
fn hostile_meta_lengths_and_bad_magic_are_refused() {
    let caps = FrameCaps::default();
    for meta_len in [META_BYTES_MAX + 1, u32::MAX] {
        let err = decode_prefix(&raw_prefix(FRAME_MAGIC, meta_len, 0), &caps);
        assert!(matches!(
            err,
            Err(FrameError::TooLarge(Oversize {
                part: FramePart::Meta,
                ..
            }))
        ));
    }
    let err = decode_prefix(&raw_prefix(0xdead_beef, 0, 0), &caps);
    assert!(matches!(
        err,
        Err(FrameError::BadMagic { found: 0xdead_beef })
    ));
}

#[test]
fn truncated_frames_are_errors() {
    let frame = Frame {
        meta: Bytes::from_static(b"m"),
        payload: Bytes::from(vec![1u8; 64]),
    };
    let wire = encode(&frame, &FrameCaps::default());
    for cut in [0, 3, PREFIX_BYTES, PREFIX_BYTES + 1, wire.len() - 1] {
        let res = block_on(read_frame(
            &mut Cursor::new(&wire[..cut]),
            &FrameCaps::default(),
        ));
        assert!(
            matches!(res, Err(FrameError::Io(_))),
            "cut at {cut}: {res:?}"
        );
    }
}

#[test]
fn oversized_frames_are_not_sent() {
    let frame = Frame {
        meta: Bytes::new(),
        payload: Bytes::from(vec![0u8; 2048]),
    };
    let mut out = Vec::new();
    let res = block_on(write_frame(&mut out, &frame, &caps(1024)));
    assert!(matches!(
        res,
        Err(FrameError::TooLarge(Oversize {
            part: FramePart::Payload,
            len: 2048,
            max: 1024
        }))
    ));
    assert!(out.is_empty(), "nothing written for a refused frame");
}

#[test]
fn caps_are_bounded() {
    assert!(FrameCaps::new(0).is_none());
    assert!(FrameCaps::new(PAYLOAD_BYTES_MAX_LIMIT + 1).is_none());
    assert!(FrameCaps::new(PAYLOAD_BYTES_MAX_LIMIT).is_some());
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = block_on(read_frame(&mut Cursor::new(bytes), &caps(1 << 20)));
    }

    #[test]
    fn valid_prefix_with_random_tail_never_panics(
        meta_len in 0u32..2048,
        payload_len in 0u64..(1 << 21),
        tail in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut wire = raw_prefix(FRAME_MAGIC, meta_len, payload_len).to_vec();
        wire.extend_from_slice(&tail);
        let res = block_on(read_frame(&mut Cursor::new(wire), &caps(1 << 20)));
        if let Ok(frame) = res {
            prop_assert_eq!(frame.meta.len() as u64, u64::from(meta_len));
            prop_assert_eq!(frame.payload.len() as u64, payload_len);
        }
    }
}

/// Row 5 of the hostile-peer table: frames announced on many streams were each given their
/// buffer at once. Now a frame waits for the inbound budget before its buffer is allocated, and
/// gives it back once read.
#[test]
fn frames_wait_for_the_inbound_budget() {
    use futures::{SinkExt, TryStreamExt, poll};

    let caps = caps(1 << 20);
    // Room for one frame at the cap, not two.
    let budget = InboundBudget::new(0, &caps);
    let big = Frame {
        meta: Bytes::from_static(b"m"),
        payload: Bytes::from(vec![3u8; 1 << 20]),
    };
    let wire = encode(&big, &caps);
    block_on(async {
        // A sender that declared a full-size frame and sends its body only later.
        let (mut tx, rx) = futures::channel::mpsc::unbounded::<std::io::Result<Vec<u8>>>();
        let mut slow = rx.into_async_read();
        tx.send(Ok(wire[..PREFIX_BYTES].to_vec()))
            .await
            .expect("send");
        let mut first = std::pin::pin!(read_frame_within(&mut slow, &caps, &budget));
        assert!(poll!(first.as_mut()).is_pending());
        assert!(budget.in_use() > 1 << 20, "{}", budget.in_use());
        // A second full-size frame, all there, waits for the budget.
        let mut fast = Cursor::new(wire.clone());
        let mut second = std::pin::pin!(read_frame_within(&mut fast, &caps, &budget));
        assert!(poll!(second.as_mut()).is_pending());
        tx.send(Ok(wire[PREFIX_BYTES..].to_vec()))
            .await
            .expect("send");
        assert_eq!(first.await.expect("first"), big);
        assert_eq!(second.await.expect("second"), big);
    });
    assert_eq!(budget.in_use(), 0);
    assert!(budget.bytes() >= (1 << 20) + u64::from(META_BYTES_MAX));
}
