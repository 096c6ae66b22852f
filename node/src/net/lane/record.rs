//! Sealed frames: how a frame travels on a lane.
//!
//! Every record is AES-256-GCM ciphertext followed by its 16-byte tag. Nonces are never sent:
//! both ends count records per direction (`direction: u32 | counter: u64`, little-endian), so a
//! replayed, dropped or reordered record fails authentication. Lengths are not sent either,
//! except inside the first record of a frame, the sealed [frame prefix](super::super::frame):
//! the receiver opens it, checks both lengths against its caps, and only then allocates and
//! reads the meta and payload records (at most [`RECORD_BYTES`] each), decrypting each one in
//! place in the buffer it will hand on. The sender copies each record once into a scratch
//! buffer (frames are shared `Bytes`) and seals it there.

use std::io::{self, Read, Write};

use bytes::Bytes;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};

use super::super::frame::{
    FRAME_ACK, Frame, FrameCaps, FrameError, PREFIX_BYTES, decode_prefix, encode_prefix,
};

/// Length of a lane key (AES-256).
pub(crate) const KEY_BYTES: usize = 32;
/// Plaintext bytes per record: small enough that the scratch buffer stays in L2.
pub(crate) const RECORD_BYTES: usize = 256 * 1024;
/// Length of a GCM tag.
const TAG_BYTES: usize = 16;
/// A sealed acknowledgement on the wire.
pub(crate) const SEALED_ACK_BYTES: usize = 1 + TAG_BYTES;

/// Which way records go on a lane; each direction has its own nonce sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Frames, from the lane's dialer to its acceptor.
    Frames = 0,
    /// Acknowledgements, back.
    Acks = 1,
}

/// Why a lane stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LaneError {
    /// The socket failed or the peer closed it.
    #[error("lane i/o: {0}")]
    Io(#[from] io::Error),
    /// A record failed authentication: forged, replayed, reordered or truncated bytes.
    #[error("a lane record failed authentication")]
    Forged,
    /// The sealed prefix announced a frame above the caps, or was malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The acknowledgement byte is not [`FRAME_ACK`].
    #[error("bad acknowledgement on a lane")]
    BadAck,
    /// The key was refused by the cipher (never for a 32-byte key).
    #[error("lane key refused")]
    BadKey,
    /// 2^64 records went one way; the lane must be replaced.
    #[error("lane nonces exhausted")]
    NoncesExhausted,
}

impl LaneError {
    /// A read that timed out (a socket read timeout), as opposed to a broken lane.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, Self::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// One direction of a lane's AEAD: the key and the next record's counter.
pub(crate) struct Cipher {
    key: LessSafeKey,
    direction: Direction,
    counter: u64,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("direction", &self.direction)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Cipher {
    pub(crate) fn new(key: &[u8; KEY_BYTES], direction: Direction) -> Result<Self, LaneError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| LaneError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            direction,
            counter: 0,
        })
    }

    fn next_nonce(&mut self) -> Result<Nonce, LaneError> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&(self.direction as u32).to_le_bytes());
        nonce[4..].copy_from_slice(&self.counter.to_le_bytes());
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(LaneError::NoncesExhausted)?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    fn seal(&mut self, in_out: &mut [u8]) -> Result<Tag, LaneError> {
        let nonce = self.next_nonce()?;
        self.key
            .seal_in_place_separate_tag(nonce, Aad::empty(), in_out)
            .map_err(|_| LaneError::Forged)
    }

    fn open(&mut self, in_out: &mut [u8], tag: &[u8; TAG_BYTES]) -> Result<(), LaneError> {
        let nonce = self.next_nonce()?;
        let tag = Tag::from(*tag);
        self.key
            .open_in_place_separate_tag(nonce, Aad::empty(), tag, in_out, 0..)
            .map(|_| ())
            .map_err(|_| LaneError::Forged)
    }
}

/// Seals `plain` (at most [`RECORD_BYTES`]) through `scratch` and writes it.
pub(crate) fn write_record<W: Write>(
    w: &mut W,
    cipher: &mut Cipher,
    plain: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), LaneError> {
    scratch.clear();
    scratch.extend_from_slice(plain);
    let tag = cipher.seal(scratch)?;
    scratch.extend_from_slice(tag.as_ref());
    w.write_all(scratch)?;
    Ok(())
}

/// Reads one record of `buf.len()` plaintext bytes into `buf` and opens it in place.
fn read_record<R: Read>(r: &mut R, cipher: &mut Cipher, buf: &mut [u8]) -> Result<(), LaneError> {
    let mut tag = [0u8; TAG_BYTES];
    r.read_exact(buf)?;
    r.read_exact(&mut tag)?;
    cipher.open(buf, &tag)
}

/// Writes one frame as sealed records: the prefix, then the meta and payload in records of at
/// most [`RECORD_BYTES`]. Checks the frame against `caps` first.
pub(crate) fn write_frame<W: Write>(
    w: &mut W,
    cipher: &mut Cipher,
    frame: &Frame,
    caps: &FrameCaps,
    scratch: &mut Vec<u8>,
) -> Result<(), LaneError> {
    let prefix = encode_prefix(frame, caps)?;
    write_record(w, cipher, &prefix, scratch)?;
    for part in [&frame.meta, &frame.payload] {
        for chunk in part.chunks(RECORD_BYTES) {
            write_record(w, cipher, chunk, scratch)?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Reads and opens a sealed prefix; returns the checked `(meta_len, payload_len)`. Nothing is
/// allocated for a prefix above the caps.
pub(crate) fn read_prefix<R: Read>(
    r: &mut R,
    cipher: &mut Cipher,
    caps: &FrameCaps,
) -> Result<(usize, usize), LaneError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    read_record(r, cipher, &mut prefix)?;
    Ok(decode_prefix(&prefix, caps)?)
}

/// Reads the meta and payload records announced by [`read_prefix`], each decrypted where it
/// lands. The buffer grows one record at a time, so memory follows the bytes that arrived and
/// each record is decrypted while its pages are hot; it is never zeroed (a zeroed `calloc`
/// allocation is served from fresh pages, each one a page fault).
pub(crate) fn read_body<R: Read>(
    r: &mut R,
    cipher: &mut Cipher,
    (meta_len, payload_len): (usize, usize),
) -> Result<Frame, LaneError> {
    let mut read_part = |len: usize| -> Result<Bytes, LaneError> {
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let start = buf.len();
            let record = RECORD_BYTES.min(len - start);
            // `read_to_end` reads into the spare capacity without zeroing it first.
            r.by_ref().take(record as u64).read_to_end(&mut buf)?;
            if buf.len() != start + record {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            let mut tag = [0u8; TAG_BYTES];
            r.read_exact(&mut tag)?;
            cipher.open(&mut buf[start..], &tag)?;
        }
        Ok(Bytes::from(buf))
    };
    let meta = read_part(meta_len)?;
    let payload = read_part(payload_len)?;
    Ok(Frame { meta, payload })
}

/// Writes a sealed acknowledgement.
pub(crate) fn write_ack<W: Write>(w: &mut W, cipher: &mut Cipher) -> Result<(), LaneError> {
    let mut ack = [0u8; SEALED_ACK_BYTES];
    ack[0] = FRAME_ACK;
    let tag = cipher.seal(&mut ack[..1])?;
    ack[1..].copy_from_slice(tag.as_ref());
    w.write_all(&ack)?;
    w.flush()?;
    Ok(())
}

/// Reads sealed acknowledgements from a socket with a read timeout: a timeout in the middle of
/// one keeps the bytes read so far, so polling never desynchronises the stream.
#[derive(Debug)]
pub(crate) struct AckReader {
    cipher: Cipher,
    buf: [u8; SEALED_ACK_BYTES],
    filled: usize,
}

impl AckReader {
    pub(crate) const fn new(cipher: Cipher) -> Self {
        Self {
            cipher,
            buf: [0; SEALED_ACK_BYTES],
            filled: 0,
        }
    }

    /// Waits for the next acknowledgement; a timeout comes back as an error for which
    /// [`LaneError::is_timeout`] holds, and the next call resumes.
    pub(crate) fn next<R: Read>(&mut self, r: &mut R) -> Result<(), LaneError> {
        while self.filled < SEALED_ACK_BYTES {
            match r.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.filled = 0;
        let (byte, tag) = self.buf.split_at_mut(1);
        let tag: &[u8; TAG_BYTES] = (&*tag).try_into().map_err(|_| LaneError::BadAck)?;
        self.cipher.open(byte, tag)?;
        if byte[0] == FRAME_ACK {
            Ok(())
        } else {
            Err(LaneError::BadAck)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::frame::FrameError;
    use super::*;

    const KEY: [u8; KEY_BYTES] = [7; KEY_BYTES];

    fn frame(meta: usize, payload: usize) -> Frame {
        let bytes = |n: usize, seed: u8| {
            Bytes::from(
                (0..n)
                    .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                    .collect::<Vec<_>>(),
            )
        };
        Frame {
            meta: bytes(meta, 1),
            payload: bytes(payload, 2),
        }
    }

    fn seal(frames: &[Frame], key: &[u8; KEY_BYTES]) -> Vec<u8> {
        let mut cipher = Cipher::new(key, Direction::Frames).expect("key");
        let (mut wire, mut scratch) = (Vec::new(), Vec::new());
        for f in frames {
            write_frame(
                &mut wire,
                &mut cipher,
                f,
                &FrameCaps::default(),
                &mut scratch,
            )
            .expect("sealed");
        }
        wire
    }

    fn open_all(wire: &[u8], key: &[u8; KEY_BYTES], n: usize) -> Result<Vec<Frame>, LaneError> {
        let mut cipher = Cipher::new(key, Direction::Frames).expect("key");
        let mut r = wire;
        (0..n)
            .map(|_| {
                let lens = read_prefix(&mut r, &mut cipher, &FrameCaps::default())?;
                read_body(&mut r, &mut cipher, lens)
            })
            .collect()
    }

    #[test]
    fn frames_round_trip_across_record_boundaries() {
        let frames = [
            frame(0, 0),
            frame(13, 1),
            frame(200, RECORD_BYTES),
            frame(1, 3 * RECORD_BYTES + 5),
        ];
        let wire = seal(&frames, &KEY);
        // Prefix, meta and payload records; empty parts have none.
        let records = 1 + 3 + 3 + (2 + 4);
        let plain: usize = frames
            .iter()
            .map(|f| 16 + f.meta.len() + f.payload.len())
            .sum();
        assert_eq!(wire.len(), plain + TAG_BYTES * records);
        assert_eq!(open_all(&wire, &KEY, frames.len()).expect("opened"), frames);
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let wire = seal(&[frame(40, 3000)], &KEY);
        for at in [0, 20, 40, 100, wire.len() - 1] {
            let mut bad = wire.clone();
            bad[at] ^= 0x10;
            let err = open_all(&bad, &KEY, 1).expect_err("tampered");
            assert!(matches!(err, LaneError::Forged), "byte {at}: {err}");
        }
    }

    #[test]
    fn wrong_key_replay_and_truncation_fail() {
        let wire = seal(&[frame(8, 100), frame(8, 100)], &KEY);
        let other = [8; KEY_BYTES];
        assert!(matches!(open_all(&wire, &other, 1), Err(LaneError::Forged)));
        // The second frame replayed as the first: its records carry later nonces.
        let half = wire.len() / 2;
        assert!(matches!(
            open_all(&wire[half..], &KEY, 1),
            Err(LaneError::Forged)
        ));
        assert!(matches!(
            open_all(&wire[..half - 1], &KEY, 1),
            Err(LaneError::Io(_))
        ));
        // Acks use their own nonce sequence: a frame record is no ack.
        let mut acks = AckReader::new(Cipher::new(&KEY, Direction::Acks).expect("key"));
        let mut sent = Vec::new();
        write_ack(
            &mut sent,
            &mut Cipher::new(&KEY, Direction::Frames).expect("key"),
        )
        .expect("ack");
        assert!(matches!(acks.next(&mut &sent[..]), Err(LaneError::Forged)));
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocation() {
        let caps = FrameCaps::new(1024).expect("caps");
        let mut cipher = Cipher::new(&KEY, Direction::Frames).expect("key");
        let (mut wire, mut scratch) = (Vec::new(), Vec::new());
        write_frame(
            &mut wire,
            &mut cipher,
            &frame(0, 4096),
            &FrameCaps::default(),
            &mut scratch,
        )
        .expect("sealed under the sender's caps");
        let mut opener = Cipher::new(&KEY, Direction::Frames).expect("key");
        let err = read_prefix(&mut &wire[..], &mut opener, &caps).expect_err("over the cap");
        assert!(
            matches!(err, LaneError::Frame(FrameError::TooLarge(_))),
            "{err}"
        );
    }

    /// A reader that hands out at most `step` bytes per call and times out between calls.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        timed_out: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.timed_out = !self.timed_out;
            if self.timed_out {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn acks_survive_read_timeouts_mid_record() {
        let mut sealer = Cipher::new(&KEY, Direction::Acks).expect("key");
        let mut wire = Vec::new();
        for _ in 0..3 {
            write_ack(&mut wire, &mut sealer).expect("ack");
        }
        let mut r = Trickle {
            bytes: &wire,
            step: 5,
            timed_out: false,
        };
        let mut acks = AckReader::new(Cipher::new(&KEY, Direction::Acks).expect("key"));
        let (mut got, mut timeouts) = (0, 0);
        while got < 3 {
            match acks.next(&mut r) {
                Ok(()) => got += 1,
                Err(e) if e.is_timeout() => timeouts += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(timeouts >= 3 * 4, "{timeouts}");
        let end = loop {
            match acks.next(&mut r) {
                Err(e) if e.is_timeout() => {}
                other => break other,
            }
        };
        assert!(matches!(end, Err(LaneError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof));
    }
}
