//! One client's side of a secure-aggregation round.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use x25519_dalek::{PublicKey, StaticSecret};

use super::shamir::{self, Share};
use super::{
    Advertisement, ClientId, FixedPoint, Roster, SecAggError, apply_mask, mask_commitment,
    pair_seed, self_seed,
};

/// The shares one client sends another in the share-keys step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareBundle {
    /// The client whose secrets these are shares of.
    pub from: ClientId,
    /// The addressee (its point is the shares' `x`).
    pub to: ClientId,
    /// Share of `from`'s X25519 secret key.
    pub key_share: Share,
    /// Share of `from`'s self-mask seed.
    pub mask_share: Share,
}

/// A client's masked, fixed-point encoded update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedInput {
    /// The sender.
    pub from: ClientId,
    /// The clients it exchanged pairwise masks with (those whose bundles it received).
    pub neighbours: BTreeSet<ClientId>,
    /// `encode(x) + PRG(b) + Σ ±PRG(s_ij)` modulo 2^64.
    pub values: Vec<u64>,
}

/// A survivor's answer in the unmask step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    /// The revealing client.
    pub from: ClientId,
    /// Shares of the secret keys of dropped neighbours.
    pub key_shares: BTreeMap<ClientId, Share>,
    /// Shares of the self-mask seeds of surviving neighbours (and of `from` itself).
    pub mask_shares: BTreeMap<ClientId, Share>,
}

/// A client's state for one round: its key pair and self-mask seed, the roster, and the shares
/// it holds for the others. Secrets are never printed by `Debug`.
pub struct SecAggClient {
    id: ClientId,
    round: u64,
    pub(super) secret: StaticSecret,
    public: PublicKey,
    mask_seed: [u8; 32],
    rng: ChaCha20Rng,
    roster: Option<Roster>,
    held: BTreeMap<ClientId, ShareBundle>,
    /// Set by the first `reveal`: answering twice (for two different survivor sets) would hand
    /// out both the self-mask and the key share of some client, which unmasks its update.
    has_revealed: bool,
    /// Set by the first `mask`: two messages under the same masks would reveal the difference of
    /// their updates.
    has_masked: bool,
}

impl fmt::Debug for SecAggClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecAggClient")
            .field("id", &self.id)
            .field("round", &self.round)
            .field("public", &self.public)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SecAggClient {
    /// Draws the round's X25519 secret key, self-mask seed and Shamir coefficients from a
    /// ChaCha20 stream seeded with `seed` (fresh OS randomness in production).
    #[must_use]
    pub fn new(id: ClientId, round: u64, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let secret = StaticSecret::from(key);
        let public = PublicKey::from(&secret);
        let mut mask_seed = [0u8; 32];
        rng.fill_bytes(&mut mask_seed);
        Self {
            id,
            round,
            secret,
            public,
            mask_seed,
            rng,
            roster: None,
            held: BTreeMap::new(),
            has_revealed: false,
            has_masked: false,
        }
    }

    /// This client's id.
    #[must_use]
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The advertise step's message.
    #[must_use]
    pub fn advertise(&self) -> Advertisement {
        Advertisement {
            id: self.id,
            public_key: self.public.to_bytes(),
            mask_commitment: mask_commitment(&self.mask_seed, self.round),
        }
    }

    /// The share-keys step: adopts `roster` (which must hold this client's advertisement for
    /// this round) and returns one bundle per other member; this client keeps its own.
    pub fn share_keys(&mut self, roster: &Roster) -> Result<Vec<ShareBundle>, SecAggError> {
        if self.roster.is_some() {
            return Err(SecAggError::OutOfOrder("share_keys called twice"));
        }
        if roster.round() != self.round || *roster.member(self.id)? != self.advertise() {
            return Err(SecAggError::UnknownClient(self.id));
        }
        let ids: Vec<ClientId> = roster.ids().collect();
        let xs: Vec<u64> = ids.iter().map(|id| id.share_point()).collect();
        let t = roster.threshold();
        let key_shares = shamir::split(&self.secret.to_bytes(), &xs, t, &mut self.rng);
        let mask_shares = shamir::split(&self.mask_seed, &xs, t, &mut self.rng);
        let mut bundles = Vec::with_capacity(ids.len());
        for ((&to, key_share), mask_share) in ids.iter().zip(key_shares).zip(mask_shares) {
            let bundle = ShareBundle {
                from: self.id,
                to,
                key_share,
                mask_share,
            };
            if to == self.id {
                self.held.insert(self.id, bundle);
            } else {
                bundles.push(bundle);
            }
        }
        self.roster = Some(roster.clone());
        Ok(bundles)
    }

    /// Stores a bundle received from another member; duplicates and misaddressed bundles are
    /// refused.
    pub fn receive_share(&mut self, bundle: ShareBundle) -> Result<(), SecAggError> {
        let roster = self
            .roster
            .as_ref()
            .ok_or(SecAggError::OutOfOrder("receive_share"))?;
        roster.member(bundle.from)?;
        let point = self.id.share_point();
        if bundle.to != self.id
            || bundle.key_share.x != point
            || bundle.mask_share.x != point
            || self.held.contains_key(&bundle.from)
        {
            return Err(SecAggError::UnexpectedMessage {
                from: bundle.from,
                to: bundle.to,
            });
        }
        self.held.insert(bundle.from, bundle);
        Ok(())
    }

    /// The masked-input step: encodes `update` and adds the self mask and one pairwise mask per
    /// neighbour (every member whose bundle arrived). Needs at least `t` holders of its shares
    /// including itself. A client masks once per round (a second call is refused).
    pub fn mask(&mut self, fixed: &FixedPoint, update: &[f32]) -> Result<MaskedInput, SecAggError> {
        if self.has_masked {
            return Err(SecAggError::OutOfOrder("mask called twice"));
        }
        let roster = self
            .roster
            .as_ref()
            .ok_or(SecAggError::OutOfOrder("mask"))?;
        if self.held.len() < roster.threshold() {
            return Err(SecAggError::TooFewShares {
                have: self.held.len(),
                threshold: roster.threshold(),
            });
        }
        let mut values = fixed.encode(update)?;
        apply_mask(&mut values, self_seed(&self.mask_seed, self.round), false);
        let neighbours: BTreeSet<ClientId> = self
            .held
            .keys()
            .copied()
            .filter(|&j| j != self.id)
            .collect();
        for &j in &neighbours {
            let their = PublicKey::from(roster.member(j)?.public_key);
            let shared = self.secret.diffie_hellman(&their);
            if !shared.was_contributory() {
                return Err(SecAggError::WeakPublicKey(j));
            }
            let seed = pair_seed(shared.as_bytes(), self.round, self.id, j);
            apply_mask(&mut values, seed, self.id > j);
        }
        self.has_masked = true;
        Ok(MaskedInput {
            from: self.id,
            neighbours,
            values,
        })
    }

    /// The unmask step for the announced `survivors` (clients whose masked inputs arrived, this
    /// one included): the self-mask share of every surviving holder and the key share of every
    /// dropped one. Each client's secrets are revealed one way only: the two sets are disjoint
    /// and a client answers once per round (a second call is refused). At least `t` survivors
    /// are required.
    pub fn reveal(&mut self, survivors: &BTreeSet<ClientId>) -> Result<Reveal, SecAggError> {
        if self.has_revealed {
            return Err(SecAggError::OutOfOrder("reveal called twice"));
        }
        let roster = self
            .roster
            .as_ref()
            .ok_or(SecAggError::OutOfOrder("reveal"))?;
        if !survivors.contains(&self.id) {
            return Err(SecAggError::UnknownClient(self.id));
        }
        if let Some(&unknown) = survivors.iter().find(|&&s| roster.member(s).is_err()) {
            return Err(SecAggError::UnknownClient(unknown));
        }
        if survivors.len() < roster.threshold() {
            return Err(SecAggError::TooFewShares {
                have: survivors.len(),
                threshold: roster.threshold(),
            });
        }
        let mut reveal = Reveal {
            from: self.id,
            key_shares: BTreeMap::new(),
            mask_shares: BTreeMap::new(),
        };
        for (&owner, bundle) in &self.held {
            if survivors.contains(&owner) {
                reveal.mask_shares.insert(owner, bundle.mask_share);
            } else {
                reveal.key_shares.insert(owner, bundle.key_share);
            }
        }
        self.has_revealed = true;
        Ok(reveal)
    }
}
