//! The aggregator's side: sum the masked inputs and remove every mask that does not cancel.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::{PublicKey, StaticSecret};

use super::client::{MaskedInput, Reveal};
use super::shamir::{self, Share};
use super::{
    ClientId, FixedPoint, Roster, SecAggError, apply_mask, mask_commitment, pair_seed, self_seed,
};

/// Sums the survivors' masked inputs, removes their self masks and the pairwise masks they share
/// with dropped clients (using the revealed shares) and decodes the sum of their updates.
pub fn unmask(
    roster: &Roster,
    fixed: &FixedPoint,
    inputs: &[MaskedInput],
    reveals: &[Reveal],
) -> Result<Vec<f32>, SecAggError> {
    Ok(fixed.decode(&unmask_sum(roster, inputs, reveals)?))
}

/// As [`unmask`], returning the exact sum of the survivors' fixed-point encodings (mod 2^64).
pub fn unmask_sum(
    roster: &Roster,
    inputs: &[MaskedInput],
    reveals: &[Reveal],
) -> Result<Vec<u64>, SecAggError> {
    let survivors = check_inputs(roster, inputs)?;
    for reveal in reveals {
        if !survivors.contains_key(&reveal.from) {
            return Err(SecAggError::UnknownClient(reveal.from));
        }
    }
    let dim = inputs.first().map_or(0, |i| i.values.len());
    let mut sum = vec![0u64; dim];
    for input in survivors.values() {
        for (s, &v) in sum.iter_mut().zip(&input.values) {
            *s = s.wrapping_add(v);
        }
    }
    for &j in survivors.keys() {
        let shares: Vec<Share> = reveals
            .iter()
            .filter_map(|r| r.mask_shares.get(&j).copied())
            .collect();
        let seed = shamir::reconstruct(&shares, roster.threshold())?;
        if mask_commitment(&seed, roster.round()) != roster.member(j)?.mask_commitment {
            return Err(SecAggError::CommitmentMismatch(j));
        }
        apply_mask(&mut sum, self_seed(&seed, roster.round()), true);
    }
    let dropped: BTreeSet<ClientId> = survivors
        .values()
        .flat_map(|i| i.neighbours.iter().copied())
        .filter(|j| !survivors.contains_key(j))
        .collect();
    for &j in &dropped {
        remove_dropped_masks(roster, &survivors, reveals, j, &mut sum)?;
    }
    Ok(sum)
}

/// Rebuilds dropped client `j`'s secret key and cancels the pairwise mask it shares with every
/// survivor that masked with it.
fn remove_dropped_masks(
    roster: &Roster,
    survivors: &BTreeMap<ClientId, &MaskedInput>,
    reveals: &[Reveal],
    j: ClientId,
    sum: &mut [u64],
) -> Result<(), SecAggError> {
    let shares: Vec<Share> = reveals
        .iter()
        .filter_map(|r| r.key_shares.get(&j).copied())
        .collect();
    let secret = StaticSecret::from(shamir::reconstruct(&shares, roster.threshold())?);
    if PublicKey::from(&secret).to_bytes() != roster.member(j)?.public_key {
        return Err(SecAggError::CommitmentMismatch(j));
    }
    for (&k, input) in survivors {
        if !input.neighbours.contains(&j) {
            continue;
        }
        let shared = secret.diffie_hellman(&PublicKey::from(roster.member(k)?.public_key));
        if !shared.was_contributory() {
            return Err(SecAggError::WeakPublicKey(k));
        }
        // Survivor k subtracted the mask when k > j and added it otherwise: undo that.
        apply_mask(
            sum,
            pair_seed(shared.as_bytes(), roster.round(), j, k),
            k < j,
        );
    }
    Ok(())
}

/// Survivors by id after checking membership, uniqueness, equal lengths, the threshold and that
/// survivors' neighbour relations are symmetric (else their pairwise masks would not cancel).
fn check_inputs<'a>(
    roster: &Roster,
    inputs: &'a [MaskedInput],
) -> Result<BTreeMap<ClientId, &'a MaskedInput>, SecAggError> {
    let dim = inputs.first().map_or(0, |i| i.values.len());
    let mut survivors = BTreeMap::new();
    for input in inputs {
        roster.member(input.from)?;
        if input.values.len() != dim || survivors.insert(input.from, input).is_some() {
            return Err(SecAggError::InconsistentInput(input.from));
        }
        if let Some(&unknown) = input
            .neighbours
            .iter()
            .find(|&&j| roster.member(j).is_err())
        {
            return Err(SecAggError::UnknownClient(unknown));
        }
    }
    if survivors.len() < roster.threshold() {
        return Err(SecAggError::TooFewShares {
            have: survivors.len(),
            threshold: roster.threshold(),
        });
    }
    for (&k, input) in &survivors {
        for l in &input.neighbours {
            if let Some(other) = survivors.get(l)
                && !other.neighbours.contains(&k)
            {
                return Err(SecAggError::InconsistentInput(k));
            }
        }
    }
    Ok(survivors)
}
