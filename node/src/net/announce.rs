//! Signed announcements on anonymous gossipsub.
//!
//! gossipsub's own signing (`MessageAuthenticity::Signed` with strict validation) verifies the
//! author's ed25519 signature in the connection's codec, once for *every copy* a peer receives,
//! before duplicates are dropped. In a dense mesh each announcement arrives once from its author
//! and once more from each relaying mesh peer, so a 4-node all-reduce round spent ~11 % of all
//! CPU in signature verification (docs/benchmarks.md). Here gossipsub runs anonymous and the
//! node seals each announcement itself:
//!
//! ```text
//! author ed25519 public key (32) | body | signature (64) over DOMAIN ‖ topic ‖ key ‖ body
//! ```
//!
//! A receiver opens only the first copy (gossipsub has deduplicated by content hash by then).
//! When that copy came straight from its author, the noise-authenticated connection already
//! proves who sent it and the signature is not checked; a relayed copy is verified. Either
//! way the body is attributed to the key it carries, so a relay can neither forge nor alter an
//! announcement. The topic is part of what is signed: an announcement cannot be replayed into
//! another mesh's topic.

use bytes::Bytes;
use gradmesh_protocol::PeerId;
use libp2p::identity::ed25519;

/// Bytes of the author's public key in front of the body.
const KEY_BYTES: usize = 32;
/// Bytes of the signature after the body.
const SIGNATURE_BYTES: usize = 64;
/// What sealing adds to a body.
pub(crate) const SEAL_OVERHEAD: usize = KEY_BYTES + SIGNATURE_BYTES;
/// Separates these signatures from any other use of the node's key.
const DOMAIN: &[u8] = b"gradmesh/announce/2\0";

/// Why a received announcement was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Too short to hold a key and a signature.
    #[error("announcement of {len} bytes is shorter than its key and signature")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// The key bytes are not an ed25519 public key.
    #[error("announcement carries no valid ed25519 key")]
    BadKey,
    /// A relayed announcement whose signature does not verify.
    #[error("announcement signature does not verify")]
    BadSignature,
}

/// Seals this node's announcements for one topic.
pub(crate) struct Sealer {
    keypair: ed25519::Keypair,
    topic: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("topic", &String::from_utf8_lossy(&self.topic))
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub(crate) fn new(keypair: ed25519::Keypair, topic: &str) -> Self {
        Self {
            keypair,
            topic: topic.as_bytes().to_vec(),
        }
    }

    /// `key | body | signature`.
    pub(crate) fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(SEAL_OVERHEAD + body.len());
        data.extend_from_slice(&self.keypair.public().to_bytes());
        data.extend_from_slice(body);
        let signature = self.keypair.sign(&signed_message(&self.topic, &data));
        data.extend_from_slice(&signature);
        data
    }

    /// The author and body of a received announcement, `data` as gossipsub delivered it.
    /// `relayed_by` is the peer the copy came from; when it is the author itself the signature
    /// is not checked (noise authenticated that connection).
    pub(crate) fn open(
        &self,
        data: Bytes,
        relayed_by: Option<PeerId>,
    ) -> Result<(PeerId, Bytes), OpenError> {
        let len = data.len();
        if len < SEAL_OVERHEAD {
            return Err(OpenError::Truncated { len });
        }
        let (signed, signature) = data.split_at(len - SIGNATURE_BYTES);
        let key = &signed[..KEY_BYTES];
        let author = PeerId::from_key_bytes(key);
        if relayed_by != Some(author) {
            let public = ed25519::PublicKey::try_from_bytes(key).map_err(|_| OpenError::BadKey)?;
            if !public.verify(&signed_message(&self.topic, signed), signature) {
                return Err(OpenError::BadSignature);
            }
        }
        Ok((author, data.slice(KEY_BYTES..len - SIGNATURE_BYTES)))
    }
}

fn signed_message(topic: &[u8], data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + 8 + topic.len() + data.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(&(topic.len() as u64).to_le_bytes());
    message.extend_from_slice(topic);
    message.extend_from_slice(data);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(topic: &str) -> (Sealer, PeerId) {
        let keypair = ed25519::Keypair::generate();
        let id = PeerId::from_key_bytes(&keypair.public().to_bytes());
        (Sealer::new(keypair, topic), id)
    }

    #[test]
    fn relayed_and_direct_copies_open_to_author_and_body() {
        let (alice, alice_id) = sealer("t");
        let (bob, bob_id) = sealer("t");
        let data = Bytes::from(alice.seal(b"hello"));
        assert_eq!(data.len(), 5 + SEAL_OVERHEAD);
        for relay in [Some(alice_id), Some(bob_id), None] {
            let (author, body) = bob.open(data.clone(), relay).unwrap();
            assert_eq!((author, &body[..]), (alice_id, &b"hello"[..]));
        }
    }

    #[test]
    fn a_relay_cannot_alter_or_forge() {
        let (alice, alice_id) = sealer("t");
        let (bob, bob_id) = sealer("t");
        let mut data = alice.seal(b"ready for 7");
        data[KEY_BYTES + 10] ^= 1;
        assert_eq!(
            bob.open(Bytes::from(data.clone()), Some(bob_id)),
            Err(OpenError::BadSignature)
        );
        // The same bytes straight from the author are the author's word: accepted.
        assert!(bob.open(Bytes::from(data), Some(alice_id)).is_ok());
        // Bob signing a body under Alice's key.
        let mut forged = bob.seal(b"ready for 7");
        forged[..KEY_BYTES].copy_from_slice(&alice.keypair.public().to_bytes());
        assert_eq!(
            bob.open(Bytes::from(forged), Some(bob_id)),
            Err(OpenError::BadSignature)
        );
    }

    #[test]
    fn another_topic_does_not_verify() {
        let (alice, _) = sealer("mesh-a");
        let (bob, bob_id) = sealer("mesh-b");
        let data = Bytes::from(alice.seal(b"x"));
        assert_eq!(bob.open(data, Some(bob_id)), Err(OpenError::BadSignature));
    }

    #[test]
    fn short_or_keyless_data_is_refused() {
        let (bob, _) = sealer("t");
        for len in [0, 1, SEAL_OVERHEAD - 1] {
            assert_eq!(
                bob.open(Bytes::from(vec![0u8; len]), None),
                Err(OpenError::Truncated { len })
            );
        }
        // Zero signature under a key that is not (or not validly signing as) the author's.
        let mut data = vec![0u8; SEAL_OVERHEAD];
        data[0] = 2;
        assert!(matches!(
            bob.open(Bytes::from(data), None),
            Err(OpenError::BadKey | OpenError::BadSignature)
        ));
    }
}
