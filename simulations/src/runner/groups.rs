//! Which participants all-reduce together in a round: everyone, or Moshpit grid groups.

use crate::net::PeerIdx;
use std::collections::BTreeMap;

/// Grid dimensions for `n` peers in groups of `g`: the smallest d with g^d ≥ n (at least 1).
/// After d rounds, one along each dimension, every peer holds the global mean on a full grid.
#[must_use]
pub fn grid_dims(n: usize, g: usize) -> u32 {
    let mut dims = 1;
    let mut capacity = g.max(2);
    while capacity < n {
        capacity = capacity.saturating_mul(g.max(2));
        dims += 1;
    }
    dims
}

/// Moshpit groups for `round`: participant k (in rank order) sits at the base-`g` digits of k
/// on a `grid_dims`-dimensional grid; a group is the peers that differ only in digit
/// `round mod dims`. Groups are returned in order of their remaining coordinates.
#[must_use]
pub fn moshpit_groups(participants: &[PeerIdx], g: usize, round: u32) -> Vec<Vec<PeerIdx>> {
    let g = g.max(2) as u64;
    let dims = grid_dims(participants.len(), g as usize);
    let dim = round % dims;
    let stride = g.pow(dim);
    let mut groups: BTreeMap<u64, Vec<PeerIdx>> = BTreeMap::new();
    for (k, &peer) in (0_u64..).zip(participants) {
        let digit = (k / stride) % g;
        let key = k - digit * stride;
        groups.entry(key).or_default().push(peer);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_groups_cover_everyone_once_and_rotate() {
        let peers: Vec<PeerIdx> = (0..64).map(PeerIdx).collect();
        assert_eq!(grid_dims(64, 4), 3);
        for round in 0..3 {
            let groups = moshpit_groups(&peers, 4, round);
            assert_eq!(groups.len(), 16);
            assert!(groups.iter().all(|g| g.len() == 4));
            let mut all: Vec<_> = groups.concat();
            all.sort();
            assert_eq!(all, peers);
        }
        assert_eq!(moshpit_groups(&peers, 4, 0)[0], [0, 1, 2, 3].map(PeerIdx));
        assert_eq!(moshpit_groups(&peers, 4, 1)[0], [0, 4, 8, 12].map(PeerIdx));
    }

    /// Averaging within groups along each dimension in turn reaches the exact global mean after
    /// `grid_dims` rounds on a full grid.
    #[test]
    fn grid_averaging_reaches_the_global_mean_in_dims_rounds() {
        let n = 125;
        let peers: Vec<PeerIdx> = (0..n).map(PeerIdx).collect();
        let mut x: Vec<f64> = (0..n).map(|i| f64::from(i * i % 17)).collect();
        let mean = x.iter().sum::<f64>() / f64::from(n);
        for round in 0..grid_dims(n as usize, 5) {
            for group in moshpit_groups(&peers, 5, round) {
                let avg = group.iter().map(|p| x[p.get()]).sum::<f64>() / group.len() as f64;
                for p in group {
                    x[p.get()] = avg;
                }
            }
        }
        assert!(x.iter().all(|v| (v - mean).abs() < 1e-9));
    }
}
