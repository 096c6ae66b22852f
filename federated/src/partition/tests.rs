use super::*;
use crate::testdata::digits_train_labels;

const CLASSES: usize = 10;

fn assert_disjoint_cover(p: &Partition, n: usize) {
    let mut seen = vec![false; n];
    for list in p.clients() {
        for &i in list {
            assert!(!seen[i], "sample {i} given twice");
            seen[i] = true;
        }
    }
    assert!(
        seen.iter().all(|&s| s),
        "some sample was not given to any client"
    );
}

fn all_schemes() -> [PartitionScheme; 5] {
    [
        PartitionScheme::Iid,
        PartitionScheme::Dirichlet { alpha: 0.1 },
        PartitionScheme::Dirichlet { alpha: 100.0 },
        PartitionScheme::Shards {
            classes_per_client: 2,
        },
        PartitionScheme::Quantity { alpha: 0.5 },
    ]
}

#[test]
fn every_scheme_is_disjoint_covering_and_seeded() {
    let labels = digits_train_labels();
    for scheme in all_schemes() {
        for clients in [1, 7, 100, 1000] {
            if matches!(scheme, PartitionScheme::Shards { .. }) && clients == 1 {
                continue; // 2 shards cannot cover 10 classes (tested below)
            }
            let p = Partition::new(&labels, CLASSES, clients, scheme, 42).unwrap();
            assert_eq!(p.len(), clients);
            assert_disjoint_cover(&p, labels.len());
            let again = Partition::new(&labels, CLASSES, clients, scheme, 42).unwrap();
            assert_eq!(p, again, "{scheme:?}: same seed, different partition");
        }
        let a = Partition::new(&labels, CLASSES, 20, scheme, 1).unwrap();
        let b = Partition::new(&labels, CLASSES, 20, scheme, 2).unwrap();
        assert_ne!(a, b, "{scheme:?}: seed ignored");
    }
}

#[test]
fn iid_clients_are_balanced() {
    let labels = digits_train_labels();
    let p = Partition::new(&labels, CLASSES, 10, PartitionScheme::Iid, 3).unwrap();
    let h = p.histogram(&labels, CLASSES);
    println!("{}", h.table(10));
    for row in h.counts() {
        let n: u32 = row.iter().sum();
        assert!((143..=144).contains(&n), "IID size {n}");
        // ~14.4 per class expected; a multinomial draw of 144 stays well within [4, 28].
        assert!(
            row.iter().all(|&c| (4..=28).contains(&c)),
            "unbalanced IID row {row:?}"
        );
    }
    let share = h.mean_max_class_share().unwrap();
    assert!(share < 0.2, "IID mean max-class share {share}");
}

#[test]
fn small_alpha_is_skewed_and_large_alpha_is_not() {
    let labels = digits_train_labels();
    let share = |alpha| {
        let p = Partition::new(
            &labels,
            CLASSES,
            20,
            PartitionScheme::Dirichlet { alpha },
            5,
        )
        .unwrap();
        p.histogram(&labels, CLASSES)
            .mean_max_class_share()
            .unwrap()
    };
    let (skewed, flat) = (share(0.1), share(100.0));
    println!("mean max-class share: alpha 0.1 -> {skewed:.3}, alpha 100 -> {flat:.3}");
    assert!(skewed > 0.5, "alpha 0.1 share {skewed}");
    assert!(flat < 0.2, "alpha 100 share {flat}");
}

#[test]
fn shard_clients_hold_at_most_k_labels() {
    let labels = digits_train_labels();
    for k in [1, 2, 3] {
        for clients in [10, 50, 600] {
            let scheme = PartitionScheme::Shards {
                classes_per_client: k,
            };
            let p = Partition::new(&labels, CLASSES, clients, scheme, 9).unwrap();
            let h = p.histogram(&labels, CLASSES);
            for c in 0..clients {
                assert!(
                    h.labels_of(c) <= k,
                    "client {c} holds {} > {k} labels",
                    h.labels_of(c)
                );
            }
            assert_disjoint_cover(&p, labels.len());
        }
    }
    let too_few = Partition::new(
        &labels,
        CLASSES,
        3,
        PartitionScheme::Shards {
            classes_per_client: 2,
        },
        0,
    );
    assert_eq!(
        too_few,
        Err(PartitionError::TooFewShards {
            shards: 6,
            classes: 10
        })
    );
}

#[test]
fn quantity_skew_varies_sizes_but_not_labels() {
    let labels = digits_train_labels();
    let p = Partition::new(
        &labels,
        CLASSES,
        20,
        PartitionScheme::Quantity { alpha: 0.5 },
        11,
    )
    .unwrap();
    let sizes: Vec<usize> = p.clients().iter().map(Vec::len).collect();
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    println!("quantity skew sizes {sizes:?}");
    assert!(*max > 3 * (*min).max(1), "sizes barely vary: {sizes:?}");
    // The largest client is a near-uniform sample of labels.
    let h = p.histogram(&labels, CLASSES);
    let big = sizes.iter().position(|s| s == max).unwrap();
    assert!(h.labels_of(big) == CLASSES, "largest client misses labels");
}

#[test]
fn bad_requests_are_typed_errors() {
    let labels = [0, 1, 2];
    let p = |scheme, clients| Partition::new(&labels, 3, clients, scheme, 0);
    assert_eq!(p(PartitionScheme::Iid, 0), Err(PartitionError::NoClients));
    for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            p(PartitionScheme::Dirichlet { alpha }, 2),
            Err(PartitionError::BadAlpha { .. })
        ));
    }
    assert_eq!(
        p(
            PartitionScheme::Shards {
                classes_per_client: 0
            },
            2
        ),
        Err(PartitionError::NoShards)
    );
    assert_eq!(
        Partition::new(&[0, 5], 3, 1, PartitionScheme::Iid, 0),
        Err(PartitionError::LabelOutOfRange {
            index: 1,
            label: 5,
            classes: 3
        })
    );
}

#[test]
fn histogram_table_prints_counts() {
    let labels = [0, 0, 1, 2];
    let p = Partition::new(&labels, 3, 1, PartitionScheme::Iid, 0).unwrap();
    let h = p.histogram(&labels, 3);
    assert_eq!(h.counts(), &[vec![2, 1, 1]]);
    let table = h.to_string();
    assert_eq!(
        table,
        " client      n    c0    c1    c2\n      0      4     2     1     1\n"
    );
}
