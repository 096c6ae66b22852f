//! Peer keys and signed votes.
//!
//! A peer's id is blake3 of its ed25519 public key ([`PeerId::from_key_bytes`]), so a signed
//! statement carries its signer's public key and anyone can check both the signature and who
//! signed, without a directory of keys. The node signs with its libp2p identity key; the driver,
//! the simulator and the tests derive a key from a peer's index ([`PeerKey::from_index`]).
//!
//! What is signed is a contributor's vote: "in the round of roster `R` the result is `D`"
//! ([`vote_message`]). The roster's digest binds the round, the base state and the members, so
//! a vote cannot be replayed into another round or onto another base. A commit notice names
//! the voters it counted; a peer missing some of their votes fetches the seals
//! ([`crate::wire::Certificate`]) and counts those that verify as if it had heard each voter
//! itself, so no single peer's word commits anything (docs/protocol.md §3.3, §5.5).
//!
//! A peer also signs each state it holds ([`state_message`]: "I hold the state after round `r`
//! with digest `D`"), in the announcement it sends after installing it. Honest peers hold only
//! committed states, and committed states never fork, so one honest attestation names the
//! mesh's state of that round. A donor forwards the attestations it heard with the state's
//! manifest; a joiner fetches a state only if enough of the peers it must trust attested it
//! ([`crate::sync::Vouchers`], docs/protocol.md §3.5).

use std::cell::RefCell;
use std::collections::BTreeSet;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{Digest, PeerId, RoundId};

/// Domain separation of signed votes from every other use of the same key.
const VOTE_DOMAIN: &[u8; 16] = b"gradmesh-vote-v1";
/// Domain separation of state attestations.
const STATE_DOMAIN: &[u8; 16] = b"gradmesh-held-v1";

/// A peer's signing key; its id is blake3 of the public key.
#[derive(Clone)]
pub struct PeerKey {
    signing: SigningKey,
    id: PeerId,
}

impl core::fmt::Debug for PeerKey {
    /// The id only: the secret never goes to a log.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PeerKey({})", self.id)
    }
}

impl PeerKey {
    /// The key of a 32-byte ed25519 secret (the node passes its libp2p identity's secret).
    #[must_use]
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&secret);
        let id = PeerId::from_key_bytes(signing.verifying_key().as_bytes());
        Self { signing, id }
    }

    /// The deterministic key of simulated or test peer number `index` (its secret is derived
    /// from the index, so it protects nothing outside a simulation).
    #[must_use]
    pub fn from_index(index: u64) -> Self {
        Self::from_secret(blake3::derive_key(
            "gradmesh 2026 simulated peer key",
            &index.to_le_bytes(),
        ))
    }

    /// The key of `id` if it is that of test peer number `0..indices`.
    #[cfg(test)]
    pub(crate) fn find_index(id: PeerId, indices: u64) -> Option<Self> {
        (0..indices).map(Self::from_index).find(|k| k.id == id)
    }

    /// This key's peer id.
    #[must_use]
    pub const fn id(&self) -> PeerId {
        self.id
    }

    /// The 32-byte ed25519 public key.
    #[must_use]
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs a vote for `result` in the round of roster `roster`.
    #[must_use]
    pub fn seal_vote(&self, roster: Digest, result: Digest) -> Seal {
        self.seal(&vote_message(roster, result))
    }

    /// Attests that this peer holds the state after round `round` with digest `state`.
    #[must_use]
    pub fn seal_state(&self, round: RoundId, state: Digest) -> Seal {
        self.seal(&state_message(round, state))
    }

    fn seal(&self, message: &[u8]) -> Seal {
        let signature = self.signing.sign(message);
        Seal {
            key: self.public(),
            r: *signature.r_bytes(),
            s: *signature.s_bytes(),
        }
    }
}

/// A signer's public key and ed25519 signature (`R ‖ s`, 64 bytes, kept as two halves so that
/// serde encodes it as fixed arrays).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Seal {
    /// The signer's ed25519 public key; blake3 of it is the signer's [`PeerId`].
    pub key: [u8; 32],
    /// First half of the signature.
    pub r: [u8; 32],
    /// Second half of the signature.
    pub s: [u8; 32],
}

impl core::fmt::Debug for Seal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Seal({})", self.signer())
    }
}

impl Seal {
    /// Who signed: blake3 of the key.
    #[must_use]
    pub fn signer(&self) -> PeerId {
        PeerId::from_key_bytes(&self.key)
    }

    /// Whether this seals a vote for `result` in the round of roster `roster`. Strict
    /// verification: no malleable or small-order forms.
    #[must_use]
    pub fn seals_vote(&self, roster: Digest, result: Digest) -> bool {
        self.verifies(&vote_message(roster, result))
    }

    /// Whether this attests the state after round `round` with digest `state`.
    #[must_use]
    pub fn seals_state(&self, round: RoundId, state: Digest) -> bool {
        self.verifies(&state_message(round, state))
    }

    fn verifies(&self, message: &[u8]) -> bool {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.key).update(&self.r).update(&self.s);
        let id = *hasher.update(message).finalize().as_bytes();
        if VERIFIED.with_borrow(|v| v.contains(&id)) {
            return true;
        }
        let Ok(key) = VerifyingKey::from_bytes(&self.key) else {
            return false;
        };
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&self.r);
        bytes[32..].copy_from_slice(&self.s);
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        let valid = key.verify_strict(message, &signature).is_ok();
        if valid {
            VERIFIED.with_borrow_mut(|v| {
                if v.len() >= VERIFIED_MAX {
                    v.clear();
                }
                v.insert(id);
            });
        }
        valid
    }
}

/// Seals that verified, with what they signed, by blake3 of both: a seal carried by many
/// messages (votes relayed in certificates, attestations forwarded with every manifest) or
/// checked by many peers on one thread (the driver and the simulator run them all on one) is
/// verified once, not each time — ed25519 (signing and verifying) was the largest cost of the
/// fault schedules (perf, 2026-12-06). Verifying is a pure function, so the set changes no outcome: only
/// successes are kept (a forged seal is checked, and refused, every time it comes), and it is
/// emptied when full, which bounds it at [`VERIFIED_MAX`] entries of 32 bytes per thread.
const VERIFIED_MAX: usize = 1 << 14;

thread_local! {
    static VERIFIED: RefCell<BTreeSet<[u8; 32]>> = const { RefCell::new(BTreeSet::new()) };
}

/// The bytes a vote signs: domain ‖ roster digest ‖ result digest.
#[must_use]
pub fn vote_message(roster: Digest, result: Digest) -> [u8; 80] {
    let mut message = [0u8; 80];
    message[..16].copy_from_slice(VOTE_DOMAIN);
    message[16..48].copy_from_slice(&roster.0);
    message[48..].copy_from_slice(&result.0);
    message
}

/// The bytes a state attestation signs: domain ‖ round ‖ state digest.
#[must_use]
pub fn state_message(round: RoundId, state: Digest) -> [u8; 56] {
    let mut message = [0u8; 56];
    message[..16].copy_from_slice(STATE_DOMAIN);
    message[16..24].copy_from_slice(&round.0.to_le_bytes());
    message[24..].copy_from_slice(&state.0);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_verifies_only_the_vote_it_signed_and_names_its_signer() {
        let key = PeerKey::from_index(3);
        let (roster, result) = (Digest::of(b"roster"), Digest::of(b"result"));
        let seal = key.seal_vote(roster, result);
        assert_eq!(seal.signer(), key.id());
        assert_eq!(key.id(), PeerId::from_index(3));
        assert!(seal.seals_vote(roster, result));
        assert!(!seal.seals_vote(roster, Digest::of(b"other")));
        assert!(!seal.seals_vote(Digest::of(b"other roster"), result));
        let mut forged = seal;
        forged.s[0] ^= 1;
        assert!(!forged.seals_vote(roster, result));
        // Another peer's key with this signature: neither the signer nor valid.
        let mut stolen = seal;
        stolen.key = PeerKey::from_index(4).public();
        assert_ne!(stolen.signer(), key.id());
        assert!(!stolen.seals_vote(roster, result));
        // A key that is not a curve point.
        stolen.key = [0xff; 32];
        assert!(!stolen.seals_vote(roster, result));
    }

    #[test]
    fn a_state_attestation_is_not_a_vote_and_binds_round_and_digest() {
        let key = PeerKey::from_index(5);
        let state = Digest::of(b"state");
        let seal = key.seal_state(RoundId(9), state);
        assert!(seal.seals_state(RoundId(9), state));
        assert!(!seal.seals_state(RoundId(10), state));
        assert!(!seal.seals_state(RoundId(9), Digest::of(b"other")));
        // Domains differ: an attestation never verifies as a vote, nor a vote as one.
        let vote = key.seal_vote(Digest::of(b"roster"), state);
        assert!(!vote.seals_state(RoundId(9), state));
        assert!(!seal.seals_vote(Digest::of(b"roster"), state));
    }

    #[test]
    fn keys_from_indices_are_deterministic_and_distinct() {
        assert_eq!(
            PeerKey::from_index(7).public(),
            PeerKey::from_index(7).public()
        );
        assert_ne!(PeerKey::from_index(7).id(), PeerKey::from_index(8).id());
    }
}
