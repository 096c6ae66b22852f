//! Shamir secret sharing of 32-byte secrets over the prime field GF(2^61 − 1).
//!
//! A secret is cut into five limbs of at most 56 bits (7, 7, 7, 7 and 4 bytes), each shared with
//! its own random polynomial of degree `threshold − 1`; a share is the evaluation of all five at
//! `x = id + 1` (never 0, which holds the secret). Any `threshold` shares reconstruct the secret
//! by Lagrange interpolation at 0; fewer reveal nothing about it.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::RngCore;

use super::SecAggError;

/// The Mersenne prime 2^61 − 1.
const P: u64 = (1 << 61) - 1;
/// Limbs per 32-byte secret.
const LIMBS: usize = 5;
/// Bytes per limb (the last limb holds the remaining 4).
const LIMB_BYTES: usize = 7;

/// One participant's share of a 32-byte secret: the evaluation point and one value per limb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Evaluation point (`id + 1` of the holder), never 0.
    pub x: u64,
    /// Polynomial values at `x`, one per limb, each below 2^61 − 1.
    pub y: [u64; LIMBS],
}

/// Splits `secret` into one share per evaluation point in `xs` (all non-zero and distinct),
/// any `threshold` of which reconstruct it. Coefficients come from `rng`.
pub(crate) fn split(
    secret: &[u8; 32],
    xs: &[u64],
    threshold: usize,
    rng: &mut ChaCha20Rng,
) -> Vec<Share> {
    let limbs = to_limbs(secret);
    // coefficients[limb][k] for k = 1..threshold (k = 0 is the limb itself).
    let coefficients: Vec<Vec<u64>> = (0..LIMBS)
        .map(|_| (1..threshold).map(|_| random_element(rng)).collect())
        .collect();
    xs.iter()
        .map(|&x| {
            let mut y = [0u64; LIMBS];
            for (limb, value) in y.iter_mut().enumerate() {
                // Horner: ((c_{t-1} x + c_{t-2}) x + ...) x + c_0.
                let mut acc = 0u64;
                for &c in coefficients[limb].iter().rev() {
                    acc = add(mul(acc, x), c);
                }
                *value = add(mul(acc, x), limbs[limb]);
            }
            Share { x, y }
        })
        .collect()
}

/// Reconstructs the secret from at least `threshold` shares (the `threshold` with the smallest
/// `x` are used, so the result does not depend on arrival order). Duplicate points with
/// different values, a zero point, too few shares, or a result that is not a valid limb
/// encoding are errors.
pub(crate) fn reconstruct(shares: &[Share], threshold: usize) -> Result<[u8; 32], SecAggError> {
    let mut by_x: BTreeMap<u64, &Share> = BTreeMap::new();
    for share in shares {
        if share.x == 0 || share.x >= P || share.y.iter().any(|&v| v >= P) {
            return Err(SecAggError::MalformedShare { x: share.x });
        }
        if let Some(previous) = by_x.insert(share.x, share)
            && previous.y != share.y
        {
            return Err(SecAggError::MalformedShare { x: share.x });
        }
    }
    if by_x.len() < threshold {
        return Err(SecAggError::TooFewShares {
            have: by_x.len(),
            threshold,
        });
    }
    let used: Vec<&Share> = by_x.values().take(threshold).copied().collect();
    let mut limbs = [0u64; LIMBS];
    for (i, share_i) in used.iter().enumerate() {
        // Lagrange basis at 0: Π_{j≠i} x_j / (x_j − x_i).
        let mut num = 1u64;
        let mut den = 1u64;
        for (j, share_j) in used.iter().enumerate() {
            if i != j {
                num = mul(num, share_j.x);
                den = mul(den, sub(share_j.x, share_i.x));
            }
        }
        let basis = mul(num, inverse(den));
        for (limb, value) in limbs.iter_mut().enumerate() {
            *value = add(*value, mul(basis, share_i.y[limb]));
        }
    }
    from_limbs(&limbs)
}

fn to_limbs(secret: &[u8; 32]) -> [u64; LIMBS] {
    let mut limbs = [0u64; LIMBS];
    for (limb, chunk) in limbs.iter_mut().zip(secret.chunks(LIMB_BYTES)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        *limb = u64::from_le_bytes(bytes);
    }
    limbs
}

fn from_limbs(limbs: &[u64; LIMBS]) -> Result<[u8; 32], SecAggError> {
    let mut secret = [0u8; 32];
    for (limb, chunk) in limbs.iter().zip(secret.chunks_mut(LIMB_BYTES)) {
        let bytes = limb.to_le_bytes();
        if bytes[chunk.len()..].iter().any(|&b| b != 0) {
            return Err(SecAggError::InconsistentShares);
        }
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    Ok(secret)
}

/// A uniform field element by rejection sampling 61-bit draws.
fn random_element(rng: &mut ChaCha20Rng) -> u64 {
    loop {
        let candidate = rng.next_u64() >> 3;
        if candidate < P {
            return candidate;
        }
    }
}

fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P { s - P } else { s }
}

fn sub(a: u64, b: u64) -> u64 {
    add(a, P - b)
}

fn mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    // 2^61 ≡ 1 (mod P): fold the high bits onto the low bits twice. Both casts keep < 2^62.
    let folded = (product & u128::from(P)) + (product >> 61);
    let folded = ((folded & u128::from(P)) + (folded >> 61)) as u64;
    if folded >= P { folded - P } else { folded }
}

/// `a^(P−2)`, the inverse of a non-zero `a` by Fermat's little theorem.
fn inverse(a: u64) -> u64 {
    let mut result = 1u64;
    let mut base = a;
    let mut exponent = P - 2;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        exponent >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn field_arithmetic_is_consistent() {
        for a in [1u64, 2, 12345, P - 1, 1 << 60] {
            assert_eq!(mul(a, inverse(a)), 1, "{a}");
            assert_eq!(add(sub(a, 7), 7), a);
        }
        assert_eq!(mul(P - 1, P - 1), 1);
    }

    #[test]
    fn any_threshold_subset_reconstructs() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let xs: Vec<u64> = (1..=7).collect();
        let shares = split(&secret, &xs, 4, &mut rng);
        for start in 0..4 {
            assert_eq!(reconstruct(&shares[start..start + 4], 4).unwrap(), secret);
        }
        let scattered = [shares[6], shares[0], shares[4], shares[2]];
        assert_eq!(reconstruct(&scattered, 4).unwrap(), secret);
        assert_eq!(
            reconstruct(&shares[..3], 4),
            Err(SecAggError::TooFewShares {
                have: 3,
                threshold: 4
            })
        );
    }

    /// A corrupted share does not silently reconstruct the secret: it is either rejected as an
    /// invalid limb encoding or yields a different value (which the aggregator then catches
    /// against the public key or the mask commitment).
    #[test]
    fn corrupted_shares_do_not_reconstruct() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let secret = [7u8; 32];
        let mut shares = split(&secret, &[1, 2, 3, 4], 3, &mut rng);
        shares[1].y[2] = add(shares[1].y[2], 1);
        match reconstruct(&shares[..3], 3) {
            Ok(value) => assert_ne!(value, secret),
            Err(err) => assert_eq!(err, SecAggError::InconsistentShares),
        }
        // The uncorrupted triple still works.
        let good = [shares[0], shares[2], shares[3]];
        assert_eq!(reconstruct(&good, 3).unwrap(), secret);
        let duplicate = [
            shares[0],
            Share {
                x: 1,
                y: [0; LIMBS],
            },
        ];
        assert_eq!(
            reconstruct(&duplicate, 1),
            Err(SecAggError::MalformedShare { x: 1 })
        );
    }
}
