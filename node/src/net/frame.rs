//! The direct frame protocol: gradient spans and state chunks between two peers.
//!
//! A frame is a small opaque `meta` part (the protocol's own bincode header, at most
//! [`META_BYTES_MAX`]) followed by a raw `payload` (little-endian tensor bytes, never serde'd
//! element by element). On the wire it is a fixed 16-byte prefix, encoded with bincode 2 in
//! fixed-int little-endian form, then the two parts verbatim:
//!
//! ```text
//! magic: u32 = "GMF1" | meta_len: u32 | payload_len: u64 | meta bytes | payload bytes
//! ```
//!
//! The receiver reads the prefix, refuses it if either length is above its cap, and only then
//! allocates. The response is a single [`FRAME_ACK`] byte, written once the frame has been handed
//! to the node.

use std::io;
use std::sync::Arc;

use bincode::{Decode, Encode};
use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The request-response protocol name of frames.
pub const FRAME_PROTOCOL: StreamProtocol = StreamProtocol::new("/gradmesh/frame/1.0.0");
/// First four bytes of every frame.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"GMF1");
/// Encoded size of the frame prefix.
pub const PREFIX_BYTES: usize = 16;
/// Cap on the opaque meta part: it carries a protocol header, never tensor data, so it is the
/// protocol's own header bound (a roster of 4,096 members fits).
#[allow(clippy::cast_possible_truncation)] // 1 MiB fits a u32.
pub const META_BYTES_MAX: u32 = gradmesh_protocol::wire::HEADER_BYTES_MAX as u32;
/// Default cap on a frame's payload: 256 MiB.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;
/// No configuration may raise the payload cap above 1 GiB.
pub const PAYLOAD_BYTES_MAX_LIMIT: u64 = 1024 * 1024 * 1024;
/// The one-byte acknowledgement a receiver writes back.
pub const FRAME_ACK: u8 = 0xA5;

/// One frame: a small protocol header and raw payload bytes. Cloning is cheap (`Bytes`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The protocol's own (bincode) header, at most [`META_BYTES_MAX`] bytes.
    pub meta: Bytes,
    /// Raw payload, e.g. little-endian `f32`s; at most the configured payload cap.
    pub payload: Bytes,
}

/// Acknowledgement that the receiving node took the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAck;

/// Size caps a codec enforces in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCaps {
    payload_bytes_max: u64,
}

impl FrameCaps {
    /// Caps with the given payload limit; `None` when it is zero or above
    /// [`PAYLOAD_BYTES_MAX_LIMIT`].
    #[must_use]
    pub const fn new(payload_bytes_max: u64) -> Option<Self> {
        if payload_bytes_max == 0 || payload_bytes_max > PAYLOAD_BYTES_MAX_LIMIT {
            return None;
        }
        Some(Self { payload_bytes_max })
    }

    /// The payload cap in bytes.
    #[must_use]
    pub const fn payload_bytes_max(&self) -> u64 {
        self.payload_bytes_max
    }

    /// Checks a frame against the caps before it is sent.
    pub fn check(&self, frame: &Frame) -> Result<(), Oversize> {
        let meta_len = u64::try_from(frame.meta.len()).unwrap_or(u64::MAX);
        let payload_len = u64::try_from(frame.payload.len()).unwrap_or(u64::MAX);
        check_lengths(self, meta_len, payload_len)
    }
}

impl Default for FrameCaps {
    fn default() -> Self {
        Self {
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
        }
    }
}

/// Which part of a frame is over its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePart {
    /// The opaque header, capped at [`META_BYTES_MAX`].
    Meta,
    /// The payload, capped by [`FrameCaps`].
    Payload,
}

/// A frame part above its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame {part:?} of {len} bytes exceeds the cap of {max}")]
pub struct Oversize {
    /// Which part.
    pub part: FramePart,
    /// Its (announced) length.
    pub len: u64,
    /// The cap.
    pub max: u64,
}

/// Why a frame was refused or could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The prefix does not start with [`FRAME_MAGIC`].
    #[error("bad frame magic {found:#010x}")]
    BadMagic {
        /// The first four bytes, little-endian.
        found: u32,
    },
    /// The prefix could not be decoded.
    #[error("malformed frame prefix")]
    MalformedPrefix,
    /// A part is above its cap.
    #[error(transparent)]
    TooLarge(#[from] Oversize),
    /// The stream failed or ended early.
    #[error("frame i/o: {0}")]
    Io(#[from] io::Error),
}

impl From<FrameError> for io::Error {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Io(inner) => inner,
            other => Self::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// The fixed-size wire prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
struct FramePrefix {
    magic: u32,
    meta_len: u32,
    payload_len: u64,
}

fn prefix_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<PREFIX_BYTES>()
}

fn check_lengths(caps: &FrameCaps, meta_len: u64, payload_len: u64) -> Result<(), Oversize> {
    if meta_len > u64::from(META_BYTES_MAX) {
        return Err(Oversize {
            part: FramePart::Meta,
            len: meta_len,
            max: u64::from(META_BYTES_MAX),
        });
    }
    if payload_len > caps.payload_bytes_max {
        return Err(Oversize {
            part: FramePart::Payload,
            len: payload_len,
            max: caps.payload_bytes_max,
        });
    }
    Ok(())
}

/// Decodes and checks a prefix: a pure function of 16 bytes, so hostile lengths are refused
/// before anything is allocated. Returns `(meta_len, payload_len)`.
pub fn decode_prefix(
    bytes: &[u8; PREFIX_BYTES],
    caps: &FrameCaps,
) -> Result<(usize, usize), FrameError> {
    let (prefix, _): (FramePrefix, usize) = bincode::decode_from_slice(bytes, prefix_config())
        .map_err(|_| FrameError::MalformedPrefix)?;
    if prefix.magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic {
            found: prefix.magic,
        });
    }
    check_lengths(caps, u64::from(prefix.meta_len), prefix.payload_len)?;
    // Unreachable on 64-bit targets once the caps have passed; kept as an error, not a cast.
    let too_large = || Oversize {
        part: FramePart::Payload,
        len: prefix.payload_len,
        max: caps.payload_bytes_max,
    };
    let meta_len = usize::try_from(prefix.meta_len).map_err(|_| too_large())?;
    let payload_len = usize::try_from(prefix.payload_len).map_err(|_| too_large())?;
    Ok((meta_len, payload_len))
}

/// Encodes the prefix of `frame`, checking it against `caps` first.
pub fn encode_prefix(frame: &Frame, caps: &FrameCaps) -> Result<[u8; PREFIX_BYTES], FrameError> {
    caps.check(frame)?;
    let prefix = FramePrefix {
        magic: FRAME_MAGIC,
        meta_len: u32::try_from(frame.meta.len()).map_err(|_| FrameError::MalformedPrefix)?,
        payload_len: u64::try_from(frame.payload.len()).map_err(|_| FrameError::MalformedPrefix)?,
    };
    let mut out = [0u8; PREFIX_BYTES];
    let written = bincode::encode_into_slice(prefix, &mut out, prefix_config())
        .map_err(|_| FrameError::MalformedPrefix)?;
    debug_assert_eq!(written, PREFIX_BYTES, "fixed-int prefix has a fixed size");
    Ok(out)
}

/// Reads exactly `len` bytes. `len` has been checked against a cap by the caller. `vec![0; n]`
/// maps zeroed pages lazily, so a peer that announces a large frame and sends nothing costs
/// address space, not resident memory.
async fn read_exact_bytes<R: AsyncRead + Unpin + Send>(
    io: &mut R,
    len: usize,
) -> Result<Bytes, FrameError> {
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(Bytes::from(buf))
}

/// Reads one frame, refusing it before allocation when a length is above its cap.
pub async fn read_frame<R: AsyncRead + Unpin + Send>(
    io: &mut R,
    caps: &FrameCaps,
) -> Result<Frame, FrameError> {
    let (meta_len, payload_len) = read_lengths(io, caps).await?;
    read_parts(io, meta_len, payload_len).await
}

/// Reads one frame as [`read_frame`] does, and reserves its length from `budget` before
/// allocating anything for it, waiting while other frames hold the budget.
pub async fn read_frame_within<R: AsyncRead + Unpin + Send>(
    io: &mut R,
    caps: &FrameCaps,
    budget: &InboundBudget,
) -> Result<Frame, FrameError> {
    let (meta_len, payload_len) = read_lengths(io, caps).await?;
    let _reserved = budget.reserve(meta_len + payload_len).await;
    read_parts(io, meta_len, payload_len).await
}

async fn read_lengths<R: AsyncRead + Unpin + Send>(
    io: &mut R,
    caps: &FrameCaps,
) -> Result<(usize, usize), FrameError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    io.read_exact(&mut prefix).await?;
    decode_prefix(&prefix, caps)
}

async fn read_parts<R: AsyncRead + Unpin + Send>(
    io: &mut R,
    meta_len: usize,
    payload_len: usize,
) -> Result<Frame, FrameError> {
    let meta = read_exact_bytes(io, meta_len).await?;
    let payload = read_exact_bytes(io, payload_len).await?;
    Ok(Frame { meta, payload })
}

/// The bytes of inbound frames being read at once, over every peer and stream: a frame's
/// declared length is reserved from it before its buffer is allocated and given back once the
/// frame is read (or its stream fails). A reader waits while the budget is spent; the frame
/// timeout bounds the wait. Per peer, [`CONNECTIONS_PER_PEER_MAX`] connections ×
/// [`FRAME_STREAMS_MAX`] streams × the payload cap bound the share one peer can take.
///
/// [`CONNECTIONS_PER_PEER_MAX`]: super::behaviour::CONNECTIONS_PER_PEER_MAX
/// [`FRAME_STREAMS_MAX`]: super::behaviour::FRAME_STREAMS_MAX
#[derive(Debug, Clone)]
pub struct InboundBudget {
    /// One permit per [`BUDGET_UNIT`] bytes.
    units: Arc<Semaphore>,
    total: u32,
}

/// Granularity of the inbound budget, in bytes.
const BUDGET_UNIT: usize = 1024;

impl InboundBudget {
    /// A budget of `bytes` (rounded up to a KiB; at least one frame of `caps` always fits).
    #[must_use]
    pub fn new(bytes: u64, caps: &FrameCaps) -> Self {
        let frame_max = caps.payload_bytes_max() + u64::from(META_BYTES_MAX);
        let units = bytes.max(frame_max).div_ceil(BUDGET_UNIT as u64);
        let total = u32::try_from(units).unwrap_or(u32::MAX);
        Self {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// The budget in bytes.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        u64::from(self.total) * BUDGET_UNIT as u64
    }

    /// Bytes reserved by frames being read now.
    #[must_use]
    pub fn in_use(&self) -> u64 {
        let free = u64::try_from(self.units.available_permits()).unwrap_or(u64::MAX);
        (u64::from(self.total).saturating_sub(free)) * BUDGET_UNIT as u64
    }

    /// Waits until `bytes` fit and reserves them until the returned permit drops.
    async fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX)
            .min(self.total);
        // Never closed, so `None` is unreachable; a frame is then read unbudgeted rather than
        // refused.
        self.units.clone().acquire_many_owned(units).await.ok()
    }
}

impl Default for InboundBudget {
    fn default() -> Self {
        Self::new(0, &FrameCaps::default())
    }
}

/// Writes one frame: the prefix, then both parts without copying them.
pub async fn write_frame<W: AsyncWrite + Unpin + Send>(
    io: &mut W,
    frame: &Frame,
    caps: &FrameCaps,
) -> Result<(), FrameError> {
    let prefix = encode_prefix(frame, caps)?;
    io.write_all(&prefix).await?;
    io.write_all(&frame.meta).await?;
    io.write_all(&frame.payload).await?;
    io.flush().await?;
    Ok(())
}

/// The request-response codec of frames. Requests are [`Frame`]s, responses [`FrameAck`]s.
/// Clones (one per stream) share the inbound budget.
#[derive(Debug, Clone, Default)]
pub struct FrameCodec {
    caps: FrameCaps,
    budget: InboundBudget,
}

impl FrameCodec {
    /// A codec enforcing `caps` on reads and writes, reading within `budget`.
    #[must_use]
    pub const fn new(caps: FrameCaps, budget: InboundBudget) -> Self {
        Self { caps, budget }
    }
}

impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = FrameAck;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(read_frame_within(io, &self.caps, &self.budget).await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<FrameAck>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await?;
        if ack[0] == FRAME_ACK {
            Ok(FrameAck)
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame ack"))
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(write_frame(io, &req, &self.caps).await?)
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        _: FrameAck,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[FRAME_ACK]).await?;
        io.flush().await
    }
}

#[cfg(test)]
mod tests;
