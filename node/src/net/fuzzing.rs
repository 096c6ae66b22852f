//! Entry points for the cargo-fuzz targets in `fuzz/` (docs/fuzzing.md): each feeds arbitrary
//! bytes to one decoder the network reaches, the way the node does. Not an API; every function
//! returns whether the input was accepted, and none may panic.

use bytes::Bytes;
use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::identity::ed25519;
use libp2p::request_response::Codec;

use super::announce::Sealer;
use super::frame::{FRAME_PROTOCOL, FrameCaps, FrameCodec, InboundBudget};
use super::lane::record::{self, Cipher, Direction, KEY_BYTES, RECORD_BYTES};
use super::lane::{LANE_PROTOCOL, OfferCodec};

/// Caps small enough that a fuzzer reaches their edges.
fn caps() -> FrameCaps {
    FrameCaps::new(1 << 16).unwrap_or_default()
}

/// A frame on a libp2p stream, read by the node's codec within an inbound budget.
pub fn frame(bytes: &[u8]) -> bool {
    let mut codec = FrameCodec::new(caps(), InboundBudget::new(0, &caps()));
    block_on(codec.read_request(&FRAME_PROTOCOL, &mut Cursor::new(bytes))).is_ok()
}

/// A lane offer, read by the node's codec.
pub fn offer(bytes: &[u8]) -> bool {
    block_on(OfferCodec.read_request(&LANE_PROTOCOL, &mut Cursor::new(bytes))).is_ok()
}

/// A lane's byte stream whose records were sealed under the lane key: the input is the
/// plaintext, cut into a 16-byte prefix record and meta and payload records of up to
/// [`RECORD_BYTES`], so the
/// fuzzer reaches the frame decoding behind the AEAD rather than only failing tags. The first
/// input byte, when odd, flips a bit of the sealed stream.
pub fn lane_records(bytes: &[u8]) -> bool {
    let Some((&flip, plain)) = bytes.split_first() else {
        return false;
    };
    let key = [7u8; KEY_BYTES];
    let (Ok(mut seal), Ok(mut open)) = (
        Cipher::new(&key, Direction::Frames),
        Cipher::new(&key, Direction::Frames),
    ) else {
        return false;
    };
    let (prefix, rest) = plain.split_at(plain.len().min(16));
    // Records split where a sender splits them: the meta part (its length as the prefix
    // declares it) and the payload part are sealed separately.
    let meta_len = prefix
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize);
    let (meta, payload) = rest.split_at(meta_len.min(rest.len()));
    let mut wire = Vec::new();
    let mut scratch = Vec::new();
    let records = std::iter::once(prefix)
        .chain(meta.chunks(RECORD_BYTES))
        .chain(payload.chunks(RECORD_BYTES));
    for part in records {
        if record::write_record(&mut wire, &mut seal, part, &mut scratch).is_err() {
            return false;
        }
    }
    if flip & 1 == 1 && !wire.is_empty() {
        let at = usize::from(flip >> 1) % wire.len();
        wire[at] ^= 1;
    }
    let mut reader = wire.as_slice();
    let Ok(lens) = record::read_prefix(&mut reader, &mut open, &caps()) else {
        return false;
    };
    record::read_body(&mut reader, &mut open, lens).is_ok()
}

/// A gossip message, opened as a relayed copy (its seal checked) and its body decoded as an
/// announcement, as `PeerActor` does. With an even first byte the rest is sealed under the test
/// key first, so the fuzzer reaches the announcement decoder behind the signature; with an odd
/// one the rest is opened as it is (forged or truncated seals).
pub fn announcement(bytes: &[u8]) -> bool {
    let Some(((&mode, rest), sealer)) = bytes.split_first().zip(sealer()) else {
        return false;
    };
    let data = if mode & 1 == 0 {
        sealer.seal(rest)
    } else {
        rest.to_vec()
    };
    let Ok((_, body)) = sealer.open(Bytes::from(data), None) else {
        return false;
    };
    body.get(8..).is_some_and(|frame| {
        gradmesh_protocol::wire::decode(frame, gradmesh_protocol::wire::ANNOUNCE_FRAME_BYTES_MAX)
            .is_ok()
    })
}

/// Seals `body` as this test key's announcement, for seeding the corpus.
pub fn sealed_announcement(body: &[u8]) -> Vec<u8> {
    sealer().map(|s| s.seal(body)).unwrap_or_default()
}

/// A fixed key's sealer on topic `t`.
fn sealer() -> Option<Sealer> {
    let secret = ed25519::SecretKey::try_from_bytes([1u8; 32]).ok()?;
    Some(Sealer::new(ed25519::Keypair::from(secret), "t"))
}

#[cfg(test)]
mod tests {
    use gradmesh_protocol::wire::{Announce, Body, Envelope, encode};
    use gradmesh_protocol::{PeerId, RoundId};

    use super::*;

    /// Each entry point accepts what an honest peer sends and refuses junk, so the fuzz
    /// targets reach past the first check.
    #[test]
    fn entry_points_accept_honest_bytes_and_refuse_junk() {
        let frame_bytes = {
            let f = super::super::Frame {
                meta: Bytes::from_static(b"meta"),
                payload: Bytes::from(vec![5u8; 1000]),
            };
            let mut out = Vec::new();
            block_on(super::super::frame::write_frame(&mut out, &f, &caps())).expect("encode");
            out
        };
        assert!(frame(&frame_bytes));
        assert!(!frame(&frame_bytes[..frame_bytes.len() - 1]));
        assert!(offer(&[0u8; 66]));
        assert!(!offer(&[0u8; 65]));
        let mut plain = frame_bytes.clone();
        plain.insert(0, 0);
        assert!(lane_records(&plain));
        plain[0] = 1;
        assert!(!lane_records(&plain), "a flipped bit is caught");
        let announce = Announce {
            state: None,
            ready_for: Some(RoundId(1)),
            wants_to_join: false,
            bandwidth_bytes_per_s: 1,
            samples_per_s: 1,
            samples_per_step: 1,
            lock: None,
            seq: 1,
            attestation: None,
        };
        let envelope = Envelope::new(PeerId::from_index(1), RoundId(1), Body::Announce(announce));
        let mut body = vec![0u8; 8];
        body.extend(encode(&envelope).expect("encode"));
        let sealed = sealed_announcement(&body);
        let mut raw = vec![1u8];
        raw.extend_from_slice(&sealed);
        assert!(
            announcement(&raw),
            "a sealed announcement opens and decodes"
        );
        raw.pop();
        assert!(!announcement(&raw), "a cut seal does not");
        let mut plain = vec![0u8];
        plain.extend_from_slice(&body);
        assert!(
            announcement(&plain),
            "a body sealed by the entry point decodes"
        );
    }
}
