//! Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning", honest-but-curious variant): whoever sums the clients'
//! messages learns only the sum of their updates, and the sum survives clients that drop after
//! masking.
//!
//! # Scheme
//! 1. **Advertise.** Each client draws a fresh X25519 key pair and a 32-byte self-mask seed `b_i`
//!    for the round and publishes its public key and a blake3 commitment to `b_i`
//!    ([`Advertisement`]). The advertisements form the [`Roster`], with threshold `t`.
//! 2. **Share keys.** Each client Shamir-splits its X25519 secret key and `b_i` into shares for
//!    every roster member (threshold `t`, field GF(2^61 − 1), see `shamir.rs`) and sends each
//!    member its [`ShareBundle`]. Bundles must travel over an authenticated, encrypted
//!    channel (a libp2p Noise connection between the two peers; a relaying server would have to
//!    encrypt them with the pair's agreed key).
//! 3. **Masked input.** Client `i` encodes its update in fixed point ([`FixedPoint`]) and adds,
//!    modulo 2^64, the self mask `PRG(b_i)` and for every neighbour `j` (a member whose bundle it
//!    received) the pairwise mask `±PRG(s_ij)`: `+` when `i < j`, `−` when `i > j`, where `s_ij`
//!    is the X25519 agreement of `i` and `j` hashed with the round id (blake3 `derive_key`) and
//!    PRG is ChaCha20. Pairwise masks cancel in the sum; the self mask keeps a late message of a
//!    client declared dropped from being unmasked by its revealed pairwise masks.
//! 4. **Unmask.** Given the set of clients whose masked inputs arrived (survivors), every
//!    survivor reveals, for each neighbour, either the share of its self-mask seed (survivors)
//!    or the share of its secret key (dropped clients) — never both for the same client
//!    ([`Reveal`]). With `t` reveals the aggregator ([`unmask`]) rebuilds the survivors' self
//!    masks and the dropped clients' secret keys, checks them against the commitments and public
//!    keys, removes all masks and decodes the exact fixed-point sum.
//!
//! # Limits
//! - Honest-but-curious: clients follow the protocol; an aggregator that lies about who dropped
//!   can learn an update unless `t > n/2` (enforced by [`Roster::new`]) — fewer than `t`
//!   colluding clients learn nothing. There are no signatures (Bonawitz's malicious variant), so
//!   a lying client can corrupt the sum (detected only when a reconstructed secret does not
//!   match its commitment).
//! - Fixed point over `Z/2^64`: 8 bytes per coordinate on the wire, twice an `f32`.
//! - The seeds given to [`SecAggClient::new`] must be fresh, secret and uniformly random in
//!   production (an OS CSPRNG); tests pass fixed seeds for reproducibility.
//! - Cost: each client expands one PRG stream per neighbour, `O(n·d)` per client and, for each
//!   dropped client, `O(n·d)` more at the aggregator. Real deployments bound `n` per group.

mod aggregate;
mod client;
mod fixed;
pub mod shamir;
#[cfg(test)]
mod tests;

pub use aggregate::{unmask, unmask_sum};
pub use client::{MaskedInput, Reveal, SecAggClient, ShareBundle};
pub use fixed::FixedPoint;

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use thiserror::Error;

/// A client's identity within one secure-aggregation group (its Shamir point is `id + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

impl ClientId {
    /// The Shamir evaluation point of this client (never 0).
    #[must_use]
    pub fn share_point(self) -> u64 {
        u64::from(self.0) + 1
    }
}

/// Why a secure-aggregation step failed. Variants name the client at fault where one is known.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum SecAggError {
    /// A value to encode is NaN, ±Inf or beyond the fixed-point range.
    #[error("coordinate {coordinate} holds {value}, outside the fixed-point range ±{max_abs}")]
    ValueOutOfRange {
        /// Coordinate index.
        coordinate: usize,
        /// The value (it may be NaN).
        value: f32,
        /// The encoder's bound.
        max_abs: f32,
    },
    /// The fixed-point parameters cannot hold the sum of `max_clients` values.
    #[error(
        "fixed point with {frac_bits} fraction bits, |x| <= {max_abs} and {max_clients} clients overflows 63 bits"
    )]
    FixedPointRange {
        /// Fraction bits.
        frac_bits: u32,
        /// Bound on each value.
        max_abs: f32,
        /// Number of clients whose sum must fit.
        max_clients: u32,
    },
    /// The roster repeats a client id.
    #[error("client {0:?} appears twice in the roster")]
    DuplicateClient(ClientId),
    /// The threshold is not in `(n/2, n]`.
    #[error("threshold {threshold} must satisfy n/2 < t <= n for n = {n}")]
    InvalidThreshold {
        /// Threshold given.
        threshold: usize,
        /// Roster size.
        n: usize,
    },
    /// A message names a client outside the roster (or the roster lacks this client).
    #[error("client {0:?} is not in the roster")]
    UnknownClient(ClientId),
    /// A message was addressed to another client or repeats an earlier one.
    #[error("unexpected message from {from:?} to {to:?}")]
    UnexpectedMessage {
        /// Sender.
        from: ClientId,
        /// Addressee.
        to: ClientId,
    },
    /// A peer's public key gives a non-contributory (low-order) X25519 agreement.
    #[error("public key of {0:?} is a low-order point")]
    WeakPublicKey(ClientId),
    /// A step was called out of order: before the roster was set by `share_keys`, or a second
    /// time where the protocol allows one call per round.
    #[error("out of order: {0}")]
    OutOfOrder(&'static str),
    /// Fewer neighbours, survivors or shares than the threshold.
    #[error("{have} available, threshold is {threshold}")]
    TooFewShares {
        /// Number available.
        have: usize,
        /// Threshold.
        threshold: usize,
    },
    /// A share has point 0, a value outside the field, or conflicts with another share.
    #[error("malformed share at point {x}")]
    MalformedShare {
        /// Its evaluation point.
        x: u64,
    },
    /// Reconstructed limbs do not encode a secret: some share was wrong.
    #[error("shares are inconsistent")]
    InconsistentShares,
    /// A reconstructed secret key or self-mask seed does not match the roster's public key or
    /// commitment for that client.
    #[error("reconstructed secret of {0:?} does not match its advertisement")]
    CommitmentMismatch(ClientId),
    /// Masked inputs differ in length, round, or their neighbour sets are not symmetric.
    #[error("masked input of {0:?} is inconsistent with the others")]
    InconsistentInput(ClientId),
}

/// What a client publishes in the advertise step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertisement {
    /// The client.
    pub id: ClientId,
    /// Its X25519 public key for this round.
    pub public_key: [u8; 32],
    /// blake3 commitment to its self-mask seed and the round id.
    pub mask_commitment: [u8; 32],
}

/// The advertisements of one round, ordered by client id, with the Shamir threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    round: u64,
    threshold: usize,
    members: BTreeMap<ClientId, Advertisement>,
}

impl Roster {
    /// Checks that ids are unique and `n/2 < threshold <= n`.
    pub fn new(
        round: u64,
        advertisements: &[Advertisement],
        threshold: usize,
    ) -> Result<Self, SecAggError> {
        let mut members = BTreeMap::new();
        for ad in advertisements {
            if members.insert(ad.id, *ad).is_some() {
                return Err(SecAggError::DuplicateClient(ad.id));
            }
        }
        let n = members.len();
        if threshold > n || 2 * threshold <= n {
            return Err(SecAggError::InvalidThreshold { threshold, n });
        }
        Ok(Self {
            round,
            threshold,
            members,
        })
    }

    /// The round these keys belong to.
    #[must_use]
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The Shamir threshold `t`.
    #[must_use]
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The advertisement of `id`.
    pub fn member(&self, id: ClientId) -> Result<&Advertisement, SecAggError> {
        self.members.get(&id).ok_or(SecAggError::UnknownClient(id))
    }

    /// Member ids in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.members.keys().copied()
    }
}

const PAIR_CONTEXT: &str = "gradmesh secagg v1 pairwise mask seed";
const SELF_CONTEXT: &str = "gradmesh secagg v1 self mask seed";
const COMMIT_CONTEXT: &str = "gradmesh secagg v1 self mask commitment";

/// Seed of the pairwise mask of `a` and `b` in `round`, from their X25519 agreement.
fn pair_seed(shared: &[u8; 32], round: u64, a: ClientId, b: ClientId) -> [u8; 32] {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut hasher = blake3::Hasher::new_derive_key(PAIR_CONTEXT);
    hasher.update(shared);
    hasher.update(&round.to_le_bytes());
    hasher.update(&lo.0.to_le_bytes());
    hasher.update(&hi.0.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// Seed of a client's self mask in `round`.
fn self_seed(seed: &[u8; 32], round: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(SELF_CONTEXT);
    hasher.update(seed);
    hasher.update(&round.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// Commitment to a self-mask seed (published in the advertisement).
fn mask_commitment(seed: &[u8; 32], round: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(COMMIT_CONTEXT);
    hasher.update(seed);
    hasher.update(&round.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// Adds (`negate = false`) or subtracts the ChaCha20 stream of `seed` to `values`, mod 2^64.
fn apply_mask(values: &mut [u64], seed: [u8; 32], negate: bool) {
    let mut prg = ChaCha20Rng::from_seed(seed);
    for v in values.iter_mut() {
        let m = prg.next_u64();
        *v = if negate {
            v.wrapping_sub(m)
        } else {
            v.wrapping_add(m)
        };
    }
}
