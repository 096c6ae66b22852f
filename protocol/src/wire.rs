//! Wire messages: one versioned envelope, a bincode-2 header and a raw payload.
//!
//! A frame is `[header_len: u32 LE][header: bincode 2][payload: raw bytes]`. The header carries
//! every field except bulk data; gradient spans travel as raw little-endian `f32`s (or, with a
//! span codec, as the codec's bytes; the header names the codec) and state chunks as raw bytes
//! after it. Bulk data never goes element by element through serde (that costs more
//! than the network on a fast link), and its length is declared in the header and checked against
//! the frame *before* anything is allocated for it.
//!
//! Decoding is total: any byte string yields `Ok(Envelope)` or a [`WireError`], never a panic.
//! Payloads are allocated only after their declared length matched the frame. Inside the header,
//! serde may reserve up to 1 MiB for a claimed list before bincode finds the bytes missing, so a
//! decode allocates at most about the frame's length plus [`HEADER_BYTES_MAX`];
//! `protocol/tests/wire_props.rs` measures this with a counting allocator.

use std::sync::Arc;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::CodecKind;
use crate::floats::Floats;
use crate::ids::{Digest, PeerId, RoundId};
use crate::keys::Seal;

/// Version of the wire format; a frame of another version is refused. Version 2 added the span
/// codec to `Contribution` and `Reduced` headers and the vote lock and sequence number to
/// `Announce`; version 3 signs votes: `Commit` names the voters and a receiver missing some of
/// their votes fetches the seals (`SealRequest`, `Seals`); version 4 attests states: an
/// announcement carries the sender's signature on the state it holds, and a manifest the
/// attestations its donor heard; version 5 carries a lineage with the manifest (earlier states
/// and their attestations, committee by committee) and splits a state's digest into its content
/// and its committee.
pub const PROTOCOL_VERSION: u16 = 5;
/// Largest bincode header. Every header kind fits: a proposal for [`ROSTER_MEMBERS_MAX`] members
/// is ~200 KiB and a manifest of [`STATE_CHUNKS_MAX`] digests with its committee and
/// attestations ~750 KiB.
pub const HEADER_BYTES_MAX: usize = 1 << 20;
/// Largest roster a proposal may name.
pub const ROSTER_MEMBERS_MAX: usize = 4096;
/// Largest span, in floats (256 MiB of payload).
pub const SPAN_FLOATS_MAX: u32 = 1 << 26;
/// Largest state chunk, in bytes.
pub const STATE_CHUNK_BYTES_MAX: u32 = 8 << 20;
/// Largest number of chunks in a state manifest (128 GiB of state at the largest chunk size).
pub const STATE_CHUNKS_MAX: usize = 16_384;
/// Largest number of attestations a manifest carries: enough for a majority of any committee
/// a joiner needs vouching ([`crate::sync::Vouchers`]), while a manifest of [`STATE_CHUNKS_MAX`]
/// chunks with them still fits [`HEADER_BYTES_MAX`].
pub const ATTESTATIONS_MAX: usize = 1024;
/// Most links in a manifest's lineage.
pub const LINEAGE_LINKS_MAX: usize = 32;
/// Largest announcement frame: announcements go over gossip, whose messages are small.
pub const ANNOUNCE_FRAME_BYTES_MAX: usize = 1024;

type HeaderConfig = Configuration<LittleEndian, Varint, Limit<HEADER_BYTES_MAX>>;
const HEADER_CONFIG: HeaderConfig = bincode::config::standard().with_limit::<HEADER_BYTES_MAX>();

/// Everything a peer says, addressed by sender and round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// Who sent it. The shell checks this against the authenticated transport identity.
    pub sender: PeerId,
    /// The round this message belongs to.
    pub round: RoundId,
    /// What it says.
    pub body: Body,
}

impl Envelope {
    /// An envelope of the current protocol version.
    #[must_use]
    pub const fn new(sender: PeerId, round: RoundId, body: Body) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            sender,
            round,
            body,
        }
    }
}

/// The kinds of message. Announcements go over gossip; everything else is sent peer to peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Body {
    /// Periodic and on-change membership beacon.
    Announce(Announce),
    /// A leader's roster for the envelope's round.
    Proposal(Proposal),
    /// Reduce-scatter: the sender's slice of one span, for that span's (acting) owner.
    Contribution(Contribution),
    /// All-gather: a span's reduced (weighted-mean) values, from its (acting) owner.
    Reduced(Reduced),
    /// The sender still lacks this reduced span at the failover deadline; a member holding it
    /// answers with [`Body::Reduced`].
    SpanRequest(SpanRequest),
    /// The sender's digest of the full reduced vector, signed.
    Vote(Vote),
    /// The sender saw this digest decided and committed it, by the votes it names. It commits
    /// nothing by itself: a receiver that lacks some of those votes asks for their seals.
    Commit(CommitNotice),
    /// The sender lacks these votes for a committed digest and asks for their seals.
    SealRequest(SealRequest),
    /// Sealed votes for a digest, answering a [`Body::SealRequest`]; a receiver counts each one
    /// whose seal verifies as if it had heard the voter.
    Seals(Certificate),
    /// A joiner asks a donor for part of a committed state.
    StateRequest(StateRequest),
    /// A donor's list of chunk digests for a committed state.
    StateManifest(StateManifest),
    /// One chunk of a committed state.
    StateChunk(StateChunk),
    /// The donor no longer holds the state of the envelope's round.
    StateUnavailable,
}

/// A committed state: the round whose result it includes, and its digest
/// ([`crate::sync::StateSnapshot::summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StateSummary {
    /// The last round applied to this state (`RoundId(0)` is the initial state).
    pub round: RoundId,
    /// Digest of the state's manifest.
    pub digest: Digest,
}

/// A peer's membership beacon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The state the peer holds, if any.
    pub state: Option<StateSummary>,
    /// The round for which the peer holds a gradient and is waiting for a roster.
    pub ready_for: Option<RoundId>,
    /// The peer needs the mesh's state (new, or diverged) and asks to be included as observer.
    pub wants_to_join: bool,
    /// Self-reported usable bandwidth, bytes per second; sizes the span the peer owns.
    pub bandwidth_bytes_per_s: u64,
    /// Self-reported compute speed, samples per second.
    pub samples_per_s: u32,
    /// Samples behind each gradient the peer contributes.
    pub samples_per_step: u32,
    /// The peer's last vote on `state` (docs/protocol.md §5.2); `None` if it has not voted on
    /// that state.
    pub lock: Option<VoteLock>,
    /// Counts the sender's announcements; a receiver ignores one older than the last it kept
    /// (the network may reorder them).
    pub seq: u64,
    /// The sender's attestation of `state` ([`crate::keys::PeerKey::seal_state`]), which donors
    /// of that state forward to joiners.
    pub attestation: Option<Seal>,
}

/// A contributor's last vote on the state it announces (docs/protocol.md §5.2): it voted
/// `digest` in `round`. Kept until the peer's state changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteLock {
    /// The round of the vote.
    pub round: RoundId,
    /// The result digest voted for.
    pub digest: Digest,
    /// The vote carried an earlier round's result (`false`: the round's own reduction).
    pub carried: bool,
    /// Bitmap over the state's committee, in its order (bit `i` of byte `i / 8`): the members
    /// that are contributors of the voted round's roster, the only ones whose votes count for
    /// `digest`. Empty for the initial state (no committee). At most
    /// [`ROSTER_MEMBERS_MAX`]` / 8` bytes.
    pub backers: Vec<u8>,
}

/// A member's part in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Contributes a gradient, owns a span, votes in the quorum.
    Contributor,
    /// Receives the all-gather while it syncs state; owns nothing and does not count in quorums.
    Observer,
}

/// One roster entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member.
    pub peer: PeerId,
    /// Its role this round.
    pub role: Role,
    /// Bandwidth it announced, which sizes its span.
    pub bandwidth_bytes_per_s: u64,
}

/// A leader's roster for a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The state every contributor must hold; the round's result is applied on top of it.
    pub base: StateSummary,
    /// Length of the flat vector being averaged.
    pub vector_len: u64,
    /// Members, sorted by peer id (the rank order).
    pub members: Vec<Member>,
}

/// A sender's slice of one span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The roster this belongs to ([`crate::roster::Roster::digest`]): rosters of one round can
    /// differ while leaders disagree, and a slice must never be averaged into another roster's
    /// span of the same index.
    pub roster: Digest,
    /// Which span.
    pub span: u32,
    /// Samples behind this gradient (its weight in the mean).
    pub weight: u32,
    /// How the values travel: [`CodecKind::None`] in `data`, a stateless codec in `encoded`.
    pub codec: CodecKind,
    /// Number of floats in the span, checked against the payload.
    pub floats: u32,
    /// The values when `codec` is [`CodecKind::None`] (else empty), sent raw after the header.
    #[serde(skip)]
    pub data: Floats,
    /// The codec's bytes for the values when `codec` is not [`CodecKind::None`] (else empty):
    /// exactly `codec.encoded_len(floats)` bytes, sent after the header.
    #[serde(skip)]
    pub encoded: Arc<[u8]>,
}

/// A span's reduced values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reduced {
    /// The roster this belongs to.
    pub roster: Digest,
    /// Which span.
    pub span: u32,
    /// Bitmap over roster ranks of the contributors included.
    pub contributors: Vec<u8>,
    /// Sum of the included contributors' weights.
    pub total_weight: u64,
    /// How the values travel: [`CodecKind::None`] in `data`, a stateless codec in `encoded`.
    pub codec: CodecKind,
    /// Number of floats in the span, checked against the payload.
    pub floats: u32,
    /// The weighted mean when `codec` is [`CodecKind::None`] (else empty), sent raw after the
    /// header.
    #[serde(skip)]
    pub data: Floats,
    /// The owner's encoding of the span when `codec` is not [`CodecKind::None`] (else empty):
    /// exactly `codec.encoded_len(floats)` bytes, relayed verbatim by every holder.
    #[serde(skip)]
    pub encoded: Arc<[u8]>,
}

/// A request for a reduced span the sender still lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRequest {
    /// The roster it belongs to.
    pub roster: Digest,
    /// Which span.
    pub span: u32,
}

/// A digest of a round's full result, sealed by the voter
/// ([`crate::keys::PeerKey::seal_vote`] over the roster's digest and `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// [`crate::reduce::ReduceRound`]'s result digest.
    pub result: Digest,
    /// The voter's key and signature.
    pub seal: Seal,
}

/// A commit notice: the sender committed `result`. `voters` is a bitmap over the roster's
/// contributor ranks (bit `i` of byte `i / 8`) of the votes for it the sender holds; at most
/// [`ROSTER_MEMBERS_MAX`]` / 8` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitNotice {
    /// The committed result digest.
    pub result: Digest,
    /// Who voted for it, as far as the sender knows.
    pub voters: Vec<u8>,
}

/// Asks for the seals of the votes for `result` by the contributors in `voters` (a bitmap over
/// contributor ranks, at most [`ROSTER_MEMBERS_MAX`]` / 8` bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealRequest {
    /// The digest.
    pub result: Digest,
    /// The voters whose seals are wanted.
    pub voters: Vec<u8>,
}

/// Votes for `result` in a round, each sealed by its voter: whoever holds enough of them can check
/// that the result was decided (a roster quorum and a strict majority of the base state's
/// committee) without trusting the sender. At most [`ROSTER_MEMBERS_MAX`] seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The committed result digest.
    pub result: Digest,
    /// One seal per vote for `result`, in the voters' rank order.
    pub seals: Vec<Seal>,
}

/// What a joiner asks a donor for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateRequest {
    /// The manifest of the envelope round's committed state.
    Manifest,
    /// One chunk of it.
    Chunk(u32),
}

/// The chunk digests of a committed state; its digest is the state's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateManifest {
    /// Total state size.
    pub total_bytes: u64,
    /// Size of every chunk but the last.
    pub chunk_bytes: u32,
    /// blake3 of each chunk, in order.
    pub chunks: Vec<Digest>,
    /// Contributors of the round that produced this state, in rank order: the *committee* whose
    /// majority must vote for the next result built on it (see [`crate::reduce`]). Empty for
    /// the initial state.
    pub committee: Vec<PeerId>,
    /// Attestations of the state by the peers that hold it, as its donor heard and verified
    /// them (at most [`ATTESTATIONS_MAX`]). Not part of the state's digest: a joiner checks
    /// each signature and counts the signers it trusts ([`crate::sync::Vouchers`]).
    pub attestations: Vec<Seal>,
    /// Earlier committed states the donor held, oldest first, each with attestations: the
    /// chain along which a peer whose committee has since been replaced checks, committee by
    /// committee, that the state descends from its own (at most [`LINEAGE_LINKS_MAX`]; not part
    /// of the digest).
    pub lineage: Vec<LineageLink>,
}

/// A committed state in a manifest's lineage: its round, what its digest is made of, and the
/// attestations of it that its donor heard. A peer that trusts a committee `C` (the
/// committee of a state it holds or has checked) learns from a link that more members of `C`
/// attested than a dishonest minority of `C` can count that the link's state is committed, and
/// then trusts the link's committee in turn ([`crate::sync::Vouchers::chains`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageLink {
    /// The round that produced the state.
    pub round: RoundId,
    /// blake3 of the state's size, chunk size and chunk digests
    /// ([`crate::sync::content_digest`]); with `committee` it gives the state's digest.
    pub content: Digest,
    /// The state's committee: the contributors of `round`.
    pub committee: Vec<PeerId>,
    /// Attestations of the state (at most [`ATTESTATIONS_MAX`]).
    pub attestations: Vec<Seal>,
}

/// One chunk of a committed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChunk {
    /// Chunk index.
    pub index: u32,
    /// Number of bytes in `data`, checked against the payload.
    pub bytes: u32,
    /// The chunk, sent raw after the header.
    #[serde(skip)]
    pub data: Arc<[u8]>,
}

/// Why a frame was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The frame is larger than the caller's limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Frame length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The frame ends before its declared header.
    #[error("frame truncated: {len} bytes")]
    Truncated {
        /// Frame length.
        len: usize,
    },
    /// The declared header is larger than [`HEADER_BYTES_MAX`] or the frame.
    #[error("header length {len} is invalid")]
    BadHeaderLength {
        /// Declared header length.
        len: u64,
    },
    /// The header does not decode.
    #[error("header does not decode: {0}")]
    Header(String),
    /// The sender speaks another protocol version.
    #[error("protocol version {got}, expected {PROTOCOL_VERSION}")]
    Version {
        /// Version in the frame.
        got: u16,
    },
    /// A field is outside its documented bound.
    #[error("{field} = {value} exceeds its bound {max}")]
    OutOfBounds {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Its bound.
        max: u64,
    },
    /// The payload length disagrees with the length declared in the header.
    #[error("payload of {got} bytes, header declares {declared}")]
    PayloadLength {
        /// Bytes present.
        got: usize,
        /// Bytes declared.
        declared: u64,
    },
    /// The header could not be encoded (a bound was violated by the local sender).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A span names a codec that keeps per-peer state (top-k, PowerSGD): spans on the wire only
    /// use stateless codecs.
    #[error("span codec {0} is stateful and not allowed on the wire")]
    StatefulCodec(String),
}

/// A lineage ([`crate::peer::Peer::lineage`]) as bytes for a file beside a checkpoint: the
/// protocol version, then the links as bincode.
///
/// # Errors
/// [`WireError::OutOfBounds`] above [`LINEAGE_LINKS_MAX`] + 1 links (the links and the state
/// held) or a link's bounds, [`WireError::Encode`] above [`HEADER_BYTES_MAX`].
pub fn encode_lineage(links: &[LineageLink]) -> Result<Vec<u8>, WireError> {
    check_lineage(links, LINEAGE_LINKS_MAX + 1)?;
    bincode::serde::encode_to_vec((PROTOCOL_VERSION, links), HEADER_CONFIG)
        .map_err(|e| WireError::Encode(e.to_string()))
}

/// The lineage [`encode_lineage`] wrote, checked as a manifest's is.
///
/// # Errors
/// [`WireError`] for bytes of another version, that do not decode or break a bound.
pub fn decode_lineage(bytes: &[u8]) -> Result<Vec<LineageLink>, WireError> {
    if bytes.len() > HEADER_BYTES_MAX {
        return Err(WireError::BadHeaderLength {
            len: bytes.len() as u64,
        });
    }
    let ((version, links), used): ((u16, Vec<LineageLink>), usize) =
        bincode::serde::decode_from_slice(bytes, HEADER_CONFIG)
            .map_err(|e| WireError::Header(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version { got: version });
    }
    if used != bytes.len() {
        return Err(WireError::Header(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    check_lineage(&links, LINEAGE_LINKS_MAX + 1)?;
    Ok(links)
}

fn check_lineage(links: &[LineageLink], max: usize) -> Result<(), WireError> {
    bound("manifest.lineage", links.len(), max)?;
    for link in links {
        bound(
            "lineage.committee",
            link.committee.len(),
            ROSTER_MEMBERS_MAX,
        )?;
        bound(
            "lineage.attestations",
            link.attestations.len(),
            ATTESTATIONS_MAX,
        )?;
    }
    Ok(())
}

/// Encodes an envelope into a new frame.
///
/// # Errors
/// [`WireError::OutOfBounds`] if a field exceeds its bound (the receiver would refuse it anyway),
/// [`WireError::Encode`] if the header does not fit in [`HEADER_BYTES_MAX`].
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, WireError> {
    let header = encode_header(envelope)?;
    let mut frame = Vec::with_capacity(4 + header.len() + payload_bytes(&envelope.body));
    let header_len = u32::try_from(header.len()).map_err(|e| WireError::Encode(e.to_string()))?;
    frame.extend_from_slice(&header_len.to_le_bytes());
    frame.extend_from_slice(&header);
    write_payload(&envelope.body, &mut frame);
    Ok(frame)
}

/// The two parts of a frame for transports that carry a header and a payload separately (the
/// node's frame protocol): the bincode header (without the length prefix of [`encode`]) and
/// the raw payload bytes, which share the message's buffers instead of copying them.
///
/// # Errors
/// As [`encode`].
pub fn encode_parts(envelope: &Envelope) -> Result<(Vec<u8>, Payload), WireError> {
    let header = encode_header(envelope)?;
    Ok((header, Payload::of(&envelope.body)))
}

/// A frame's payload from [`encode_parts`]: the span's floats or the message's bytes, shared
/// (reference-counted), read as little-endian bytes through [`AsRef<[u8]>`].
#[derive(Debug, Clone)]
pub struct Payload(PayloadRepr);

#[derive(Debug, Clone)]
enum PayloadRepr {
    Empty,
    /// Raw floats; only on little-endian machines, where their bytes are the wire's.
    Floats(Floats),
    Bytes(Arc<[u8]>),
}

impl Payload {
    fn of(body: &Body) -> Self {
        let repr = match body {
            Body::Contribution(Contribution { data, encoded, .. })
            | Body::Reduced(Reduced { data, encoded, .. }) => {
                match (data.is_empty(), encoded.is_empty()) {
                    (true, true) => PayloadRepr::Empty,
                    (true, false) => PayloadRepr::Bytes(encoded.clone()),
                    (false, true) if cfg!(target_endian = "little") => {
                        PayloadRepr::Floats(data.clone())
                    }
                    _ => {
                        let mut bytes = Vec::with_capacity(payload_bytes(body));
                        write_payload(body, &mut bytes);
                        PayloadRepr::Bytes(Arc::from(bytes))
                    }
                }
            }
            Body::StateChunk(c) => PayloadRepr::Bytes(c.data.clone()),
            _ => PayloadRepr::Empty,
        };
        Self(repr)
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        match &self.0 {
            PayloadRepr::Empty => &[],
            PayloadRepr::Floats(floats) => bytemuck::cast_slice(&floats[..]),
            PayloadRepr::Bytes(bytes) => bytes,
        }
    }
}

fn encode_header(envelope: &Envelope) -> Result<Vec<u8>, WireError> {
    check_bounds(&envelope.body)?;
    let header = bincode::serde::encode_to_vec(envelope, HEADER_CONFIG)
        .map_err(|e| WireError::Encode(e.to_string()))?;
    if header.len() > HEADER_BYTES_MAX {
        return Err(WireError::BadHeaderLength {
            len: header.len() as u64,
        });
    }
    Ok(header)
}

/// Size of the frame [`encode`] would produce, computed without encoding the payload. The
/// simulator charges this many bytes to the network.
#[must_use]
pub fn encoded_len(envelope: &Envelope) -> usize {
    let mut counter = bincode::enc::write::SizeWriter::default();
    let header =
        bincode::serde::encode_into_writer(envelope, &mut counter, HEADER_CONFIG).map(|()| counter);
    let header_bytes = header.map_or(HEADER_BYTES_MAX, |c| c.bytes_written);
    4 + header_bytes + payload_bytes(&envelope.body)
}

/// Decodes one frame of at most `frame_bytes_max` bytes.
///
/// # Errors
/// A [`WireError`] naming the first problem found; nothing is allocated beyond `frame.len()`.
pub fn decode(frame: &[u8], frame_bytes_max: usize) -> Result<Envelope, WireError> {
    if frame.len() > frame_bytes_max {
        return Err(WireError::FrameTooLarge {
            len: frame.len(),
            max: frame_bytes_max,
        });
    }
    let (len_bytes, rest) = frame
        .split_first_chunk::<4>()
        .ok_or(WireError::Truncated { len: frame.len() })?;
    let header_len = u32::from_le_bytes(*len_bytes);
    let header_usize = usize::try_from(header_len).unwrap_or(usize::MAX);
    if header_usize > HEADER_BYTES_MAX || header_usize > rest.len() {
        return Err(WireError::BadHeaderLength {
            len: u64::from(header_len),
        });
    }
    let (header, payload) = rest.split_at(header_usize);
    decode_parts(header, payload)
}

/// Decodes a frame received as two parts (see [`encode_parts`]). The header is checked against
/// [`HEADER_BYTES_MAX`] and every bound before the payload is copied.
///
/// # Errors
/// As [`decode`].
pub fn decode_parts(header: &[u8], payload: &[u8]) -> Result<Envelope, WireError> {
    decode_header_then(header, PayloadIn::Borrowed(payload))
}

/// As [`decode_parts`], keeping a span's raw floats in `payload` itself (shared, not copied)
/// when it is 4-aligned, as received frames are.
///
/// # Errors
/// As [`decode`].
pub fn decode_parts_shared(header: &[u8], payload: bytes::Bytes) -> Result<Envelope, WireError> {
    decode_header_then(header, PayloadIn::Shared(payload))
}

/// A received payload: borrowed (copied into the message) or shared.
enum PayloadIn<'a> {
    Borrowed(&'a [u8]),
    Shared(bytes::Bytes),
}

impl PayloadIn<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Borrowed(b) => b,
            Self::Shared(b) => b,
        }
    }

    /// The payload's little-endian floats, `declared` bytes of them: shared, or copied once
    /// when borrowed.
    fn into_floats(self, declared: u64) -> Result<Floats, WireError> {
        let bytes = match self {
            Self::Borrowed(b) => bytes::Bytes::copy_from_slice(b),
            Self::Shared(b) => b,
        };
        let got = bytes.len();
        Floats::from_le_bytes(bytes).ok_or(WireError::PayloadLength { got, declared })
    }
}

fn decode_header_then(header: &[u8], payload: PayloadIn<'_>) -> Result<Envelope, WireError> {
    if header.len() > HEADER_BYTES_MAX {
        return Err(WireError::BadHeaderLength {
            len: header.len() as u64,
        });
    }
    let (mut envelope, used): (Envelope, usize) =
        bincode::serde::decode_from_slice(header, HEADER_CONFIG)
            .map_err(|e| WireError::Header(e.to_string()))?;
    if used != header.len() {
        return Err(WireError::Header(format!(
            "{} trailing header bytes",
            header.len() - used
        )));
    }
    if envelope.version != PROTOCOL_VERSION {
        return Err(WireError::Version {
            got: envelope.version,
        });
    }
    check_bounds(&envelope.body)?;
    attach_payload(&mut envelope.body, payload)?;
    Ok(envelope)
}

fn bound(field: &'static str, value: usize, max: usize) -> Result<(), WireError> {
    if value > max {
        return Err(WireError::OutOfBounds {
            field,
            value: value as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// Semantic bounds that hold for any message of a kind, whatever the receiver's state.
fn check_bounds(body: &Body) -> Result<(), WireError> {
    let span_max = SPAN_FLOATS_MAX as usize;
    match body {
        Body::Proposal(p) => bound("proposal.members", p.members.len(), ROSTER_MEMBERS_MAX),
        Body::Contribution(c) => {
            bound("contribution.floats", c.floats as usize, span_max)?;
            check_values(c.codec, c.floats, &c.data, &c.encoded)
        }
        Body::Reduced(r) => {
            bound(
                "reduced.contributors",
                r.contributors.len(),
                ROSTER_MEMBERS_MAX / 8,
            )?;
            bound("reduced.floats", r.floats as usize, span_max)?;
            check_values(r.codec, r.floats, &r.data, &r.encoded)
        }
        Body::StateManifest(m) => {
            bound("manifest.chunks", m.chunks.len(), STATE_CHUNKS_MAX)?;
            bound("manifest.committee", m.committee.len(), ROSTER_MEMBERS_MAX)?;
            bound(
                "manifest.attestations",
                m.attestations.len(),
                ATTESTATIONS_MAX,
            )?;
            check_lineage(&m.lineage, LINEAGE_LINKS_MAX)?;
            bound(
                "manifest.chunk_bytes",
                m.chunk_bytes as usize,
                STATE_CHUNK_BYTES_MAX as usize,
            )
        }
        Body::StateChunk(c) => {
            bound(
                "chunk.bytes",
                c.bytes as usize,
                STATE_CHUNK_BYTES_MAX as usize,
            )?;
            bound("chunk.data", c.data.len(), c.bytes as usize)
        }
        Body::Announce(a) => bound(
            "announce.lock.backers",
            a.lock.as_ref().map_or(0, |l| l.backers.len()),
            ROSTER_MEMBERS_MAX / 8,
        ),
        Body::Commit(c) => bound("commit.voters", c.voters.len(), ROSTER_MEMBERS_MAX / 8),
        Body::SealRequest(r) => bound(
            "seal_request.voters",
            r.voters.len(),
            ROSTER_MEMBERS_MAX / 8,
        ),
        Body::Seals(c) => bound("seals.seals", c.seals.len(), ROSTER_MEMBERS_MAX),
        Body::SpanRequest(_) | Body::Vote(_) | Body::StateRequest(_) | Body::StateUnavailable => {
            Ok(())
        }
    }
}

/// A span's codec must be stateless, and only the field its codec names may hold values (at most
/// `floats` of them; the decoder then requires exactly that many).
fn check_values(
    codec: CodecKind,
    floats: u32,
    data: &[f32],
    encoded: &[u8],
) -> Result<(), WireError> {
    if codec.is_stateful() {
        return Err(WireError::StatefulCodec(codec.to_string()));
    }
    let floats = floats as usize;
    if codec == CodecKind::None {
        bound("span.data", data.len(), floats)?;
        bound("span.encoded", encoded.len(), 0)
    } else {
        bound("span.data", data.len(), 0)?;
        bound("span.encoded", encoded.len(), codec.encoded_len(floats))
    }
}

/// Bytes of a message's raw payload (gradient values or state bytes), carried after the header.
#[must_use]
pub fn payload_bytes(body: &Body) -> usize {
    match body {
        Body::Contribution(c) => c.data.len() * 4 + c.encoded.len(),
        Body::Reduced(r) => r.data.len() * 4 + r.encoded.len(),
        Body::StateChunk(c) => c.data.len(),
        _ => 0,
    }
}

fn write_payload(body: &Body, out: &mut Vec<u8>) {
    match body {
        Body::Contribution(Contribution { data, encoded, .. })
        | Body::Reduced(Reduced { data, encoded, .. }) => {
            out.extend_from_slice(f32_bytes(data).as_ref());
            out.extend_from_slice(encoded);
        }
        Body::StateChunk(c) => out.extend_from_slice(&c.data),
        _ => {}
    }
}

fn attach_payload(body: &mut Body, source: PayloadIn<'_>) -> Result<(), WireError> {
    let payload = source.bytes();
    match body {
        Body::Contribution(Contribution {
            codec,
            floats,
            data,
            encoded,
            ..
        })
        | Body::Reduced(Reduced {
            codec,
            floats,
            data,
            encoded,
            ..
        }) => {
            // `floats` passed `check_bounds` (at most SPAN_FLOATS_MAX), so this cannot saturate.
            let declared = codec.encoded_len(*floats as usize) as u64;
            if payload.len() as u64 != declared {
                return Err(WireError::PayloadLength {
                    got: payload.len(),
                    declared,
                });
            }
            if *codec == CodecKind::None {
                *data = source.into_floats(declared)?;
            } else {
                *encoded = Arc::from(payload);
            }
        }
        Body::StateChunk(c) => {
            if payload.len() as u64 != u64::from(c.bytes) {
                return Err(WireError::PayloadLength {
                    got: payload.len(),
                    declared: c.bytes.into(),
                });
            }
            c.data = Arc::from(payload);
        }
        _ if !payload.is_empty() => {
            return Err(WireError::PayloadLength {
                got: payload.len(),
                declared: 0,
            });
        }
        _ => {}
    }
    Ok(())
}

/// The little-endian bytes of `data`, borrowed where the machine is little-endian.
#[must_use]
pub fn f32_bytes(data: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(data))
    } else {
        std::borrow::Cow::Owned(data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PeerKey;

    fn peer(i: u64) -> PeerId {
        PeerId::from_index(i)
    }

    fn announce(state: StateSummary) -> Announce {
        Announce {
            state: Some(state),
            ready_for: Some(RoundId(4)),
            wants_to_join: false,
            bandwidth_bytes_per_s: 1 << 30,
            samples_per_s: 900,
            samples_per_step: 64,
            lock: Some(VoteLock {
                round: RoundId(2),
                digest: Digest::of(b"r"),
                carried: true,
                backers: vec![0b101],
            }),
            seq: 9,
            attestation: Some(PeerKey::from_index(4).seal_state(state.round, state.digest)),
        }
    }

    pub(crate) fn samples() -> Vec<Envelope> {
        let summary = StateSummary {
            round: RoundId(3),
            digest: Digest::of(b"s"),
        };
        let mut bodies = vec![
            Body::Announce(announce(summary)),
            Body::Proposal(Proposal {
                base: summary,
                vector_len: 10,
                members: vec![Member {
                    peer: peer(1),
                    role: Role::Contributor,
                    bandwidth_bytes_per_s: 7,
                }],
            }),
        ];
        bodies.extend(span_samples());
        bodies.extend([
            Body::SpanRequest(SpanRequest {
                roster: Digest::of(b"r"),
                span: 2,
            }),
            Body::Vote(Vote {
                result: Digest::of(b"v"),
                seal: PeerKey::from_index(1).seal_vote(Digest::of(b"r"), Digest::of(b"v")),
            }),
            Body::Commit(CommitNotice {
                result: Digest::of(b"c"),
                voters: vec![0b1011],
            }),
            Body::SealRequest(SealRequest {
                result: Digest::of(b"c"),
                voters: vec![0b1],
            }),
            Body::Seals(Certificate {
                result: Digest::of(b"c"),
                seals: (1..=3)
                    .map(|i| PeerKey::from_index(i).seal_vote(Digest::of(b"r"), Digest::of(b"c")))
                    .collect(),
            }),
            Body::StateRequest(StateRequest::Chunk(9)),
            Body::StateManifest(StateManifest {
                total_bytes: 5,
                chunk_bytes: 4,
                chunks: vec![Digest::of(b"a"); 2],
                committee: vec![peer(3)],
                attestations: vec![PeerKey::from_index(3).seal_state(RoundId(4), Digest::of(b"s"))],
                lineage: vec![LineageLink {
                    round: RoundId(2),
                    content: Digest::of(b"content"),
                    committee: vec![peer(3), peer(4)],
                    attestations: vec![
                        PeerKey::from_index(4).seal_state(RoundId(2), Digest::of(b"l")),
                    ],
                }],
            }),
            Body::StateChunk(StateChunk {
                index: 1,
                bytes: 1,
                data: Arc::from(vec![7u8]),
            }),
            Body::StateUnavailable,
        ]);
        bodies
            .into_iter()
            .map(|b| Envelope::new(peer(0), RoundId(4), b))
            .collect()
    }

    /// Contribution and Reduced, raw and encoded.
    fn span_samples() -> Vec<Body> {
        vec![
            Body::Contribution(Contribution {
                roster: Digest::of(b"r"),
                span: 1,
                weight: 64,
                codec: CodecKind::None,
                floats: 3,
                data: vec![1.0, -2.5, f32::MIN_POSITIVE].into(),
                encoded: Arc::from(Vec::new()),
            }),
            Body::Contribution(Contribution {
                roster: Digest::of(b"r"),
                span: 1,
                weight: 64,
                codec: CodecKind::Fp16,
                floats: 3,
                data: Floats::default(),
                encoded: Arc::from(vec![1, 2, 3, 4, 5, 6]),
            }),
            Body::Reduced(Reduced {
                roster: Digest::of(b"r"),
                span: 0,
                contributors: vec![0b101],
                total_weight: 128,
                codec: CodecKind::None,
                floats: 2,
                data: vec![0.5, 0.25].into(),
                encoded: Arc::from(Vec::new()),
            }),
            Body::Reduced(Reduced {
                roster: Digest::of(b"r"),
                span: 0,
                contributors: vec![0b101],
                total_weight: 128,
                codec: "int8:2".parse().expect("valid"),
                floats: 3,
                data: Floats::default(),
                encoded: Arc::from(vec![9u8; 3 + 2 * 4]),
            }),
        ]
    }

    #[test]
    fn parts_round_trip_like_whole_frames() {
        for envelope in samples() {
            let (header, payload) = encode_parts(&envelope).expect("encodes");
            let payload = payload.as_ref();
            let whole = encode(&envelope).expect("encodes");
            assert_eq!(whole.len(), 4 + header.len() + payload.len());
            assert_eq!(&whole[4 + header.len()..], payload);
            assert_eq!(decode_parts(&header, payload).expect("decodes"), envelope);
            if !payload.is_empty() {
                assert!(decode_parts(&header, &payload[1..]).is_err());
            }
        }
        assert!(matches!(
            decode_parts(&vec![0; HEADER_BYTES_MAX + 1], &[]),
            Err(WireError::BadHeaderLength { .. })
        ));
    }

    #[test]
    fn every_kind_round_trips_and_len_is_exact() {
        for envelope in samples() {
            let frame = encode(&envelope).expect("encodes");
            assert_eq!(encoded_len(&envelope), frame.len(), "{envelope:?}");
            let back = decode(&frame, frame.len()).expect("decodes");
            assert_eq!(back, envelope);
        }
    }

    #[test]
    fn refuses_oversize_frame_before_reading_it() {
        let frame = encode(&samples()[0]).expect("encodes");
        let err = decode(&frame, frame.len() - 1).expect_err("too large");
        assert!(matches!(err, WireError::FrameTooLarge { .. }));
    }

    #[test]
    fn refuses_declared_header_beyond_frame() {
        let mut frame = encode(&samples()[7]).expect("encodes");
        frame[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&frame, usize::MAX),
            Err(WireError::BadHeaderLength { .. })
        ));
    }

    #[test]
    fn refuses_payload_length_mismatch() {
        let mut frame = encode(&samples()[2]).expect("encodes");
        frame.pop();
        assert!(matches!(
            decode(&frame, usize::MAX),
            Err(WireError::PayloadLength { .. })
        ));
        let mut frame = encode(&samples()[7]).expect("encodes");
        frame.push(0);
        assert!(matches!(
            decode(&frame, usize::MAX),
            Err(WireError::PayloadLength { .. })
        ));
    }

    #[test]
    fn encoded_spans_need_their_exact_length_and_a_stateless_codec() {
        for i in [3, 5] {
            let envelope = samples().remove(i);
            let (header, payload) = encode_parts(&envelope).expect("encodes");
            let payload = payload.as_ref();
            assert!(payload.len() < 4 * 3, "smaller than raw f32");
            for bad in [&payload[1..], &[payload, &[0]].concat()[..]] {
                assert!(matches!(
                    decode_parts(&header, bad),
                    Err(WireError::PayloadLength { .. })
                ));
            }
            // The sender refuses values in the field its codec does not name.
            let mut wrong = envelope.clone();
            if let Body::Contribution(Contribution { data, .. })
            | Body::Reduced(Reduced { data, .. }) = &mut wrong.body
            {
                *data = vec![1.0].into();
            }
            assert!(matches!(encode(&wrong), Err(WireError::OutOfBounds { .. })));
            // A stateful codec named in a header is refused on both sides.
            let mut stateful = envelope;
            if let Body::Contribution(Contribution { codec, .. })
            | Body::Reduced(Reduced { codec, .. }) = &mut stateful.body
            {
                *codec = "topk:0.5".parse().expect("valid");
            }
            assert!(matches!(
                encode(&stateful),
                Err(WireError::StatefulCodec(_))
            ));
            let header = bincode::serde::encode_to_vec(&stateful, HEADER_CONFIG).expect("encodes");
            assert!(matches!(
                decode_parts(&header, payload),
                Err(WireError::StatefulCodec(_))
            ));
        }
    }

    #[test]
    fn refuses_other_version() {
        let mut envelope = samples().remove(7);
        envelope.version = 9;
        let frame = encode(&envelope).expect("encodes");
        assert_eq!(
            decode(&frame, usize::MAX),
            Err(WireError::Version { got: 9 })
        );
    }

    /// `encode` refuses `envelope`, and so does `decode` of its header written without checks.
    fn refused_on_both_sides(envelope: &Envelope) {
        assert!(matches!(
            encode(envelope),
            Err(WireError::OutOfBounds { .. })
        ));
        let header = bincode::serde::encode_to_vec(envelope, HEADER_CONFIG).expect("encodes");
        let mut frame = (header.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&header);
        assert!(matches!(
            decode(&frame, usize::MAX),
            Err(WireError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn refuses_roster_above_bound_on_both_sides() {
        let member = Member {
            peer: peer(1),
            role: Role::Observer,
            bandwidth_bytes_per_s: 1,
        };
        let proposal = Proposal {
            base: StateSummary {
                round: RoundId(0),
                digest: Digest::default(),
            },
            vector_len: 1,
            members: vec![member; ROSTER_MEMBERS_MAX + 1],
        };
        let envelope = Envelope::new(peer(0), RoundId(1), Body::Proposal(proposal));
        refused_on_both_sides(&envelope);
    }

    #[test]
    fn refuses_a_certificate_above_the_roster_bound_on_both_sides() {
        let seal = PeerKey::from_index(1).seal_vote(Digest::of(b"r"), Digest::of(b"c"));
        let envelope = Envelope::new(
            peer(0),
            RoundId(1),
            Body::Seals(Certificate {
                result: Digest::of(b"c"),
                seals: vec![seal; ROSTER_MEMBERS_MAX + 1],
            }),
        );
        refused_on_both_sides(&envelope);
    }

    #[test]
    fn a_lineage_file_round_trips_and_junk_or_another_version_is_refused() {
        let links = vec![LineageLink {
            round: RoundId(7),
            content: Digest::of(b"content"),
            committee: vec![peer(1), peer(2)],
            attestations: vec![PeerKey::from_index(1).seal_state(RoundId(7), Digest::of(b"s"))],
        }];
        let bytes = encode_lineage(&links).expect("encodes");
        assert_eq!(decode_lineage(&bytes).expect("decodes"), links);
        assert!(decode_lineage(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_lineage(&[0xff; 16]).is_err());
        let mut other = bytes.clone();
        other[0] ^= 1;
        assert!(matches!(
            decode_lineage(&other),
            Err(WireError::Version { .. })
        ));
        let mut trailing = bytes;
        trailing.push(0);
        assert!(decode_lineage(&trailing).is_err());
    }

    #[test]
    fn refuses_a_lineage_above_its_bound_on_both_sides() {
        let link = LineageLink {
            round: RoundId(1),
            content: Digest::of(b"content"),
            committee: vec![peer(1)],
            attestations: Vec::new(),
        };
        let manifest = StateManifest {
            total_bytes: 1,
            chunk_bytes: 1,
            chunks: vec![Digest::of(b"a")],
            committee: Vec::new(),
            attestations: Vec::new(),
            lineage: vec![link; LINEAGE_LINKS_MAX + 1],
        };
        refused_on_both_sides(&Envelope::new(
            peer(0),
            RoundId(1),
            Body::StateManifest(manifest),
        ));
    }
}
