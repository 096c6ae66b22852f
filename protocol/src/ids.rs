//! Typed identifiers: peers, rounds and content digests.

use serde::{Deserialize, Serialize};

/// A peer's identity: blake3 of its ed25519 public key (the node's libp2p identity key; in the
/// simulator and tests a key derived from the peer's index, [`crate::keys::PeerKey::from_index`]). Ordered bytewise, which fixes roster ranks and reduction order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// A peer id derived from arbitrary bytes (e.g. a public key) with blake3.
    #[must_use]
    pub fn from_key_bytes(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The id of simulated or test peer number `index`: that of
    /// [`crate::keys::PeerKey::from_index`].
    #[must_use]
    pub fn from_index(index: u64) -> Self {
        crate::keys::PeerKey::from_index(index).id()
    }
}

impl core::fmt::Debug for PeerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self}")
    }
}

impl core::fmt::Display for PeerId {
    /// The first 4 bytes in hex: enough to tell peers apart in logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A training round. Round `r` averages the gradients computed on the state committed by `r - 1`.
///
/// The id packs an *epoch* above [`EPOCH_SHIFT`] bits of round *count*: a mesh that lost the
/// majority of its committee and was re-founded (docs/protocol.md §5.6) goes on in the next
/// epoch, and since ids compare as integers, every state of a later epoch is newer than any
/// state of an earlier one, whatever their counts. A mesh that never re-founds stays in epoch 0,
/// where the id is the count.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct RoundId(pub u64);

/// The bits of a [`RoundId`] that count rounds within an epoch (2^40 rounds: 35,000 years at
/// 1,000 rounds a second); the bits above number the epoch.
pub const EPOCH_SHIFT: u32 = 40;

impl RoundId {
    /// The round after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The epoch: how many times the mesh was re-founded before this round.
    #[must_use]
    pub const fn epoch(self) -> u64 {
        self.0 >> EPOCH_SHIFT
    }

    /// Rounds counted since the mesh was founded, across re-foundings.
    #[must_use]
    pub const fn count(self) -> u64 {
        self.0 & ((1 << EPOCH_SHIFT) - 1)
    }

    /// The same count in the next epoch: the round id of a state re-founded from this one.
    #[must_use]
    pub const fn next_epoch(self) -> Self {
        Self(((self.epoch() + 1) << EPOCH_SHIFT) | self.count())
    }
}

impl core::fmt::Display for RoundId {
    /// `r152`, or `r152/e1` in epoch 1.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.epoch() {
            0 => write!(f, "r{}", self.count()),
            e => write!(f, "r{}/e{e}", self.count()),
        }
    }
}

/// A blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// blake3 of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex of all 32 bytes.
    #[must_use]
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl core::fmt::Debug for Digest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self}")
    }
}

impl core::fmt::Display for Digest {
    /// The first 8 bytes in hex.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
