//! Data partitioners: how a labelled training set is split across federated clients.
//!
//! Every scheme is a pure function of `(labels, classes, clients, scheme, seed)`: the stream is
//! ChaCha8 (its algorithm is fixed, unlike `StdRng`), shuffles are our own Fisher–Yates, and cuts
//! are computed from cumulative proportions in a fixed order, so the same seed gives the same
//! index lists on every machine. The result always covers every sample exactly once (clients may
//! be empty when there are more clients than samples or α is small, as in real federations).
//!
//! Schemes (the usual benchmark set, e.g. Hsu et al. 2019 for Dirichlet label skew and
//! McMahan et al. 2017 for pathological shards):
//! - [`PartitionScheme::Iid`]: one shuffle, equal cuts.
//! - [`PartitionScheme::Dirichlet`]: for each class, client proportions ~ Dir(α); small α puts
//!   most of a class on few clients (label skew).
//! - [`PartitionScheme::Shards`]: each class is cut into single-label shards and every client is
//!   dealt `k` of them, so no client holds more than `k` labels.
//! - [`PartitionScheme::Quantity`]: IID labels, client sizes ~ Dir(α) (quantity skew).

use core::fmt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use thiserror::Error;

/// How to split the samples.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PartitionScheme {
    /// Uniformly shuffled, equal-sized (±1) clients.
    Iid,
    /// Label skew: per class, client shares ~ Dirichlet(α·1).
    Dirichlet {
        /// Concentration α > 0 (0.1 = strongly skewed, 100 ≈ IID).
        alpha: f64,
    },
    /// Pathological non-IID: every client gets `classes_per_client` single-label shards.
    Shards {
        /// Shards (hence at most this many labels) per client, ≥ 1.
        classes_per_client: usize,
    },
    /// Quantity skew: IID labels, client sizes proportional to a Dirichlet(α·1) draw.
    Quantity {
        /// Concentration α > 0 of the size proportions.
        alpha: f64,
    },
}

/// A partition request that cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// Zero clients requested.
    #[error("a partition needs at least one client")]
    NoClients,
    /// Zero classes declared.
    #[error("a partition needs at least one class")]
    NoClasses,
    /// A Dirichlet concentration that is not a positive finite number.
    #[error("dirichlet alpha must be positive and finite, got {alpha}")]
    BadAlpha {
        /// The value given.
        alpha: f64,
    },
    /// `classes_per_client` is zero.
    #[error("shards: classes_per_client must be >= 1")]
    NoShards,
    /// Fewer shards in total than classes present, so some samples could not be dealt.
    #[error("shards: {shards} shards cannot cover {classes} classes present")]
    TooFewShards {
        /// clients × classes_per_client.
        shards: usize,
        /// Classes with at least one sample.
        classes: usize,
    },
    /// A label is not below the declared class count.
    #[error("sample {index}: label {label} is not below {classes}")]
    LabelOutOfRange {
        /// The sample.
        index: usize,
        /// Its label.
        label: u32,
        /// The declared class count.
        classes: usize,
    },
}

/// Per-client sample indices into the training set: disjoint, covering every sample, each list
/// sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    clients: Vec<Vec<usize>>,
}

impl Partition {
    /// Splits the samples with `labels` (each `< classes`) across `clients` clients.
    pub fn new(
        labels: &[u32],
        classes: usize,
        clients: usize,
        scheme: PartitionScheme,
        seed: u64,
    ) -> Result<Self, PartitionError> {
        check_inputs(labels, classes, clients)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut lists = match scheme {
            PartitionScheme::Iid => {
                let mut all: Vec<usize> = (0..labels.len()).collect();
                shuffle(&mut all, &mut rng);
                cut(&all, &vec![1.0; clients])
            }
            PartitionScheme::Dirichlet { alpha } => {
                dirichlet_labels(labels, classes, clients, alpha, &mut rng)?
            }
            PartitionScheme::Shards { classes_per_client } => {
                shards(labels, classes, clients, classes_per_client, &mut rng)?
            }
            PartitionScheme::Quantity { alpha } => {
                let mut all: Vec<usize> = (0..labels.len()).collect();
                shuffle(&mut all, &mut rng);
                cut(&all, &dirichlet(clients, alpha, &mut rng)?)
            }
        };
        for list in &mut lists {
            list.sort_unstable();
        }
        Ok(Self { clients: lists })
    }

    /// Every client's indices.
    #[must_use]
    pub fn clients(&self) -> &[Vec<usize>] {
        &self.clients
    }

    /// The number of clients.
    #[must_use]
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there are no clients (never true for a built partition).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Per-client label counts (labels must be the ones the partition was built from).
    #[must_use]
    pub fn histogram(&self, labels: &[u32], classes: usize) -> LabelHistogram {
        let counts = self
            .clients
            .iter()
            .map(|list| {
                let mut row = vec![0_u32; classes];
                for &i in list {
                    if let Some(c) = labels.get(i).and_then(|&l| row.get_mut(l as usize)) {
                        *c += 1;
                    }
                }
                row
            })
            .collect();
        LabelHistogram { counts }
    }
}

fn check_inputs(labels: &[u32], classes: usize, clients: usize) -> Result<(), PartitionError> {
    if clients == 0 {
        return Err(PartitionError::NoClients);
    }
    if classes == 0 {
        return Err(PartitionError::NoClasses);
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= classes)
    {
        return Err(PartitionError::LabelOutOfRange {
            index,
            label,
            classes,
        });
    }
    Ok(())
}

/// Fisher–Yates with the given stream (our own loop, so the order never depends on a crate's
/// shuffle implementation).
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}

/// Cuts `items` into `weights.len()` consecutive pieces proportional to `weights` (cut points
/// are `round(cumulative share · n)`, so the pieces cover `items` exactly).
fn cut(items: &[usize], weights: &[f64]) -> Vec<Vec<usize>> {
    let total: f64 = weights.iter().sum();
    let n = items.len();
    let mut out = Vec::with_capacity(weights.len());
    let (mut acc, mut start) = (0.0, 0_usize);
    for (j, w) in weights.iter().enumerate() {
        acc += w;
        let end = if j + 1 == weights.len() {
            n
        } else {
            ((acc / total * n as f64).round() as usize).clamp(start, n)
        };
        out.push(items[start..end].to_vec());
        start = end;
    }
    out
}

/// One Dirichlet(α·1) draw of dimension `k` via normalized Gamma(α, 1) draws. If every draw
/// underflows to zero (possible for tiny α), all mass goes to one uniformly chosen component.
fn dirichlet(k: usize, alpha: f64, rng: &mut ChaCha8Rng) -> Result<Vec<f64>, PartitionError> {
    let gamma = Gamma::new(alpha, 1.0)
        .ok()
        .filter(|_| alpha.is_finite() && alpha > 0.0)
        .ok_or(PartitionError::BadAlpha { alpha })?;
    let mut draws: Vec<f64> = (0..k).map(|_| gamma.sample(rng)).collect();
    let sum: f64 = draws.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        for d in &mut draws {
            *d /= sum;
        }
    } else {
        draws.iter_mut().for_each(|d| *d = 0.0);
        draws[rng.random_range(0..k)] = 1.0;
    }
    Ok(draws)
}

/// Indices of each class, in index order.
fn by_class(labels: &[u32], classes: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        out[l as usize].push(i);
    }
    out
}

fn dirichlet_labels(
    labels: &[u32],
    classes: usize,
    clients: usize,
    alpha: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    let mut lists = vec![Vec::new(); clients];
    for mut members in by_class(labels, classes) {
        shuffle(&mut members, rng);
        let shares = dirichlet(clients, alpha, rng)?;
        for (list, piece) in lists.iter_mut().zip(cut(&members, &shares)) {
            list.extend(piece);
        }
    }
    Ok(lists)
}

fn shards(
    labels: &[u32],
    classes: usize,
    clients: usize,
    per_client: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    if per_client == 0 {
        return Err(PartitionError::NoShards);
    }
    let members = by_class(labels, classes);
    let total = clients.saturating_mul(per_client);
    let counts = shard_counts(&members, total)?;
    // Single-label shards: each class is cut into its share of near-equal pieces.
    let mut pieces: Vec<Vec<usize>> = Vec::with_capacity(total);
    for (mut m, &count) in members.into_iter().zip(&counts) {
        shuffle(&mut m, rng);
        pieces.extend(cut(&m, &vec![1.0; count]));
    }
    shuffle(&mut pieces, rng);
    let mut lists = vec![Vec::new(); clients];
    for (i, piece) in pieces.into_iter().enumerate() {
        lists[i / per_client].extend(piece);
    }
    Ok(lists)
}

/// Shards per class: one for every class present, the rest by largest remainder of the classes'
/// sample shares (ties to the lower class), so the counts sum to `total` exactly.
fn shard_counts(members: &[Vec<usize>], total: usize) -> Result<Vec<usize>, PartitionError> {
    let present = members.iter().filter(|m| !m.is_empty()).count();
    if total < present {
        return Err(PartitionError::TooFewShards {
            shards: total,
            classes: present,
        });
    }
    let n: usize = members.iter().map(Vec::len).sum();
    let spare = total - present;
    let mut counts: Vec<usize> = members.iter().map(|m| usize::from(!m.is_empty())).collect();
    if n == 0 {
        return Ok(counts);
    }
    let exact: Vec<f64> = members
        .iter()
        .map(|m| spare as f64 * m.len() as f64 / n as f64)
        .collect();
    for (c, e) in counts.iter_mut().zip(&exact) {
        *c += e.floor() as usize;
    }
    let mut left = total - counts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..members.len())
        .filter(|&c| !members[c].is_empty())
        .collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    for &c in order.iter().cycle() {
        if left == 0 {
            break;
        }
        counts[c] += 1;
        left -= 1;
    }
    Ok(counts)
}

/// Label counts per client: `counts()[client][class]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelHistogram {
    counts: Vec<Vec<u32>>,
}

impl LabelHistogram {
    /// The counts, one row per client.
    #[must_use]
    pub fn counts(&self) -> &[Vec<u32>] {
        &self.counts
    }

    /// How many distinct labels `client` holds.
    #[must_use]
    pub fn labels_of(&self, client: usize) -> usize {
        self.counts
            .get(client)
            .map_or(0, |row| row.iter().filter(|&&c| c > 0).count())
    }

    /// The mean over non-empty clients of (largest class count / client size): 1/classes for a
    /// perfectly balanced client, 1.0 for a single-label one. `None` when every client is empty.
    #[must_use]
    pub fn mean_max_class_share(&self) -> Option<f64> {
        let shares: Vec<f64> = self
            .counts
            .iter()
            .filter_map(|row| {
                let n: u32 = row.iter().sum();
                let max = row.iter().copied().max().unwrap_or(0);
                (n > 0).then(|| f64::from(max) / f64::from(n))
            })
            .collect();
        (!shares.is_empty()).then(|| shares.iter().sum::<f64>() / shares.len() as f64)
    }

    /// A fixed-width table of the first `rows_max` clients (then a line saying how many were
    /// left out): client, size, one column per class.
    #[must_use]
    pub fn table(&self, rows_max: usize) -> String {
        use fmt::Write as _;
        let classes = self.counts.first().map_or(0, Vec::len);
        let mut s = format!("{:>7} {:>6}", "client", "n");
        for c in 0..classes {
            let _ = write!(s, " {:>5}", format!("c{c}"));
        }
        s.push('\n');
        for (i, row) in self.counts.iter().enumerate().take(rows_max) {
            let _ = write!(s, "{i:>7} {:>6}", row.iter().sum::<u32>());
            for c in row {
                let _ = write!(s, " {c:>5}");
            }
            s.push('\n');
        }
        if self.counts.len() > rows_max {
            let _ = writeln!(s, "… {} more clients", self.counts.len() - rows_max);
        }
        s
    }
}

impl fmt::Display for LabelHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table(usize::MAX))
    }
}

#[cfg(test)]
mod tests;
