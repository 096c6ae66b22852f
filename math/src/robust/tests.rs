use super::*;
use proptest::prelude::*;

fn run(
    rule: impl Fn(&[&[f32]], &mut [f32]) -> Result<(), RobustError>,
    rows: &[Vec<f32>],
) -> Result<Vec<f32>, RobustError> {
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let mut out = vec![0.0; rows.first().map_or(0, Vec::len)];
    rule(&refs, &mut out)?;
    Ok(out)
}

#[test]
fn median_of_odd_and_even_counts() {
    let odd = vec![vec![1.0, -5.0], vec![3.0, 0.0], vec![2.0, 100.0]];
    assert_eq!(
        run(|c, o| median(c, None, o), &odd).unwrap(),
        vec![2.0, 0.0]
    );
    let even = vec![vec![1.0], vec![4.0], vec![2.0], vec![10.0]];
    assert_eq!(run(|c, o| median(c, None, o), &even).unwrap(), vec![3.0]);
}

#[test]
fn weighted_median_follows_the_weight() {
    let rows = vec![vec![1.0], vec![2.0], vec![9.0]];
    let heavy_last = [1.0, 1.0, 5.0];
    assert_eq!(
        run(|c, o| median(c, Some(&heavy_last), o), &rows).unwrap(),
        vec![9.0]
    );
    // A zero weight removes a contribution: the median of {1, 9} is 5.
    let drop_middle = [1.0, 0.0, 1.0];
    assert_eq!(
        run(|c, o| median(c, Some(&drop_middle), o), &rows).unwrap(),
        vec![5.0]
    );
}

#[test]
fn trimmed_mean_drops_both_tails() {
    let rows: Vec<Vec<f32>> = [100.0, 1.0, 2.0, 3.0, -50.0]
        .iter()
        .map(|&v| vec![v])
        .collect();
    // beta = 0.2 of 5 drops one value at each end: mean of {1, 2, 3}.
    assert_eq!(
        run(|c, o| trimmed_mean(c, None, 0.2, o), &rows).unwrap(),
        vec![2.0]
    );
    // beta = 0 is the plain mean.
    assert_eq!(
        run(|c, o| trimmed_mean(c, None, 0.0, o), &rows).unwrap(),
        vec![11.2]
    );
    assert_eq!(
        run(|c, o| trimmed_mean(c, None, 0.5, o), &rows),
        Err(RobustError::InvalidTrim { beta: 0.5 })
    );
}

#[test]
fn non_finite_contributions_are_named() {
    let rows = vec![
        vec![1.0, 2.0],
        vec![0.0, f32::NAN],
        vec![f32::INFINITY, 0.0],
    ];
    let err = run(|c, o| median(c, None, o), &rows).unwrap_err();
    assert_eq!(
        err,
        RobustError::NonFinite {
            index: 1,
            coordinate: 1
        }
    );
    let err = run(
        |c, o| mean(c, None, o),
        &rows[..1]
            .iter()
            .chain(&rows[2..])
            .cloned()
            .collect::<Vec<_>>(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        RobustError::NonFinite {
            index: 1,
            coordinate: 0
        }
    );
}

#[test]
fn shape_errors_are_typed() {
    let rows = vec![vec![1.0, 2.0], vec![1.0]];
    assert_eq!(
        run(|c, o| mean(c, None, o), &rows),
        Err(RobustError::LengthMismatch {
            index: 1,
            len: 1,
            expected: 2
        })
    );
    assert_eq!(run(|c, o| mean(c, None, o), &[]), Err(RobustError::Empty));
    let rows = vec![vec![1.0], vec![2.0]];
    assert_eq!(
        run(|c, o| mean(c, Some(&[1.0]), o), &rows),
        Err(RobustError::WeightsLength {
            len: 1,
            expected: 2
        })
    );
    assert_eq!(
        run(|c, o| mean(c, Some(&[0.0, 0.0]), o), &rows),
        Err(RobustError::ZeroTotalWeight)
    );
    assert_eq!(
        run(|c, o| mean(c, Some(&[1.0, -1.0]), o), &rows),
        Err(RobustError::InvalidWeight {
            index: 1,
            weight: -1.0
        })
    );
}

/// Five points near the origin and two far away: Krum keeps the five.
#[test]
fn multi_krum_keeps_the_cluster() {
    let rows: Vec<Vec<f32>> = vec![
        vec![0.1, 0.0],
        vec![50.0, 50.0],
        vec![0.0, 0.1],
        vec![-0.1, 0.0],
        vec![49.0, 51.0],
        vec![0.0, -0.1],
        vec![0.05, 0.05],
    ];
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let mut kept = multi_krum_select(&refs, 2, 5).unwrap();
    kept.sort_unstable();
    assert_eq!(kept, vec![0, 2, 3, 5, 6]);
    let out = run(|c, o| multi_krum(c, None, 2, 5, o), &rows).unwrap();
    assert!(out.iter().all(|v| v.abs() < 0.02), "{out:?}");
    assert_eq!(
        multi_krum_select(&refs, 3, 1),
        Err(RobustError::KrumBounds { n: 7, f: 3, m: 1 })
    );
}

#[test]
fn centered_clipping_bounds_each_contribution() {
    let rows = vec![
        vec![1.0, 0.0],
        vec![1.0, 0.0],
        vec![1.0, 0.0],
        vec![1000.0, 0.0],
    ];
    let center = [1.0, 0.0];
    // One iteration from the honest point: the outlier moves it by at most tau / n.
    let out = run(|c, o| centered_clipping(c, None, &center, 2.0, 1, o), &rows).unwrap();
    assert!((out[0] - 1.5).abs() < 1e-6, "{out:?}");
    // A radius larger than every distance makes one iteration the plain mean.
    let out = run(
        |c, o| centered_clipping(c, None, &[0.0, 0.0], 1e6, 1, o),
        &rows,
    )
    .unwrap();
    assert!((out[0] - 250.75).abs() < 1e-3, "{out:?}");
    assert_eq!(
        run(|c, o| centered_clipping(c, None, &center, 0.0, 1, o), &rows),
        Err(RobustError::InvalidTau { tau: 0.0 })
    );
}

#[test]
fn aggregation_enum_matches_the_functions() {
    let rows: Vec<Vec<f32>> = (0..7)
        .map(|i| vec![i as f32, (i * i) as f32 * 0.5, -(i as f32)])
        .collect();
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let ones = [1u32; 7];
    let mut expected = vec![0.0; 3];
    median(&refs, None, &mut expected).unwrap();
    assert_eq!(Aggregation::Median.apply(&refs, &ones).unwrap(), expected);
    trimmed_mean(&refs, None, 0.2, &mut expected).unwrap();
    let got = Aggregation::TrimmedMean { beta: 0.2 }.apply(&refs, &ones);
    assert_eq!(got.unwrap(), expected);
    multi_krum(&refs, None, 1, 4, &mut expected).unwrap();
    let got = Aggregation::MultiKrum { f: 1, m: 4 }.apply(&refs, &ones);
    assert_eq!(got.unwrap(), expected);
    let counts = [1u32, 2, 3, 4, 5, 6, 7];
    let weights: Vec<f64> = counts.iter().map(|&c| f64::from(c)).collect();
    mean(&refs, Some(&weights), &mut expected).unwrap();
    assert_eq!(Aggregation::Mean.apply(&refs, &counts).unwrap(), expected);
    let clipped = Aggregation::CenteredClipping {
        tau: 1.0,
        iterations: 3,
    }
    .apply(&refs, &ones)
    .unwrap();
    assert_eq!(clipped.len(), 3);
    assert!(clipped.iter().all(|v| v.is_finite()));
}

#[test]
fn aggregation_names_round_trip() {
    for rule in [
        Aggregation::Mean,
        Aggregation::Median,
        Aggregation::TrimmedMean { beta: 0.2 },
        Aggregation::MultiKrum { f: 2, m: 6 },
        Aggregation::CenteredClipping {
            tau: 0.5,
            iterations: 3,
        },
    ] {
        assert_eq!(rule.to_string().parse::<Aggregation>(), Ok(rule));
    }
    assert_eq!(
        "trimmed-mean:0.1".parse(),
        Ok(Aggregation::TrimmedMean { beta: 0.1 })
    );
    for bad in [
        "krum",
        "median:1",
        "trimmed-mean:nan",
        "multi-krum:2",
        "mean:",
        "",
    ] {
        assert!(bad.parse::<Aggregation>().is_err(), "{bad}");
    }
}

fn rows_strategy() -> impl Strategy<Value = Vec<Vec<f32>>> {
    (1usize..12, 1usize..6)
        .prop_flat_map(|(n, d)| prop::collection::vec(prop::collection::vec(-1e6f32..1e6, d), n))
}

proptest! {
    /// Median and trimmed mean stay within each coordinate's range and do not depend on the
    /// order of the contributions (bit for bit).
    #[test]
    fn coordinate_rules_are_bounded_and_order_free(rows in rows_strategy(), shift in 0usize..12) {
        let mut rotated = rows.clone();
        let len = rotated.len();
        rotated.rotate_left(shift % len);
        for beta in [0.0, 0.1, 0.25, 0.4] {
            let a = run(|c, o| trimmed_mean(c, None, beta, o), &rows).unwrap();
            let b = run(|c, o| trimmed_mean(c, None, beta, o), &rotated).unwrap();
            prop_assert_eq!(&a, &b);
            check_bounded(&rows, &a)?;
        }
        let a = run(|c, o| median(c, None, o), &rows).unwrap();
        let b = run(|c, o| median(c, None, o), &rotated).unwrap();
        prop_assert_eq!(&a, &b);
        check_bounded(&rows, &a)?;
    }

    /// Every rule gives the same output twice (no hidden state or randomness).
    #[test]
    fn rules_are_deterministic(rows in rows_strategy()) {
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let ones = vec![1u32; rows.len()];
        let f = (rows.len().saturating_sub(3)) / 2;
        for rule in [
            Aggregation::Mean,
            Aggregation::Median,
            Aggregation::TrimmedMean { beta: 0.2 },
            Aggregation::MultiKrum { f, m: rows.len() - f },
            Aggregation::CenteredClipping { tau: 10.0, iterations: 2 },
        ] {
            let first = rule.apply(&refs, &ones);
            prop_assert_eq!(first, rule.apply(&refs, &ones));
        }
    }
}

fn check_bounded(rows: &[Vec<f32>], out: &[f32]) -> Result<(), TestCaseError> {
    for (j, &v) in out.iter().enumerate() {
        let lo = rows.iter().map(|r| r[j]).fold(f32::INFINITY, f32::min);
        let hi = rows.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max);
        prop_assert!(
            lo <= v && v <= hi,
            "coordinate {j}: {v} outside [{lo}, {hi}]"
        );
    }
    Ok(())
}

fn honest_and_byzantine() -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<Vec<f32>>)> {
    (3usize..10, 1usize..5).prop_flat_map(|(honest, dim)| {
        let byzantine = (honest - 1) / 2; // strictly fewer than the honest majority needs
        (
            prop::collection::vec(prop::collection::vec(-10f32..10.0, dim), honest),
            prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![Just(-1e30f32), Just(1e30f32), -1e6f32..1e6],
                    dim,
                ),
                byzantine,
            ),
        )
    })
}

proptest! {
    /// With f Byzantine contributions among n > 2f + 1 (any values, even ±1e30), the median
    /// and the trimmed mean with beta >= f/n stay inside the honest contributions' range per
    /// coordinate; the mean does not.
    #[test]
    fn coordinate_rules_stay_in_the_honest_range((honest, byzantine) in honest_and_byzantine()) {
        let mut all = honest.clone();
        all.extend(byzantine.iter().cloned());
        let n = all.len();
        let beta = (byzantine.len() as f64 / n as f64 + 1e-9).min(0.49);
        let med = run(|c, o| median(c, None, o), &all).unwrap();
        check_bounded(&honest, &med)?;
        let trimmed = run(|c, o| trimmed_mean(c, None, beta, o), &all).unwrap();
        check_bounded(&honest, &trimmed)?;
    }

    /// Coordinate-wise rules applied span by span (as span owners do) give exactly the global
    /// result restricted to each span.
    #[test]
    fn coordinate_rules_are_span_local(rows in rows_strategy(), cut in 0usize..6) {
        let dim = rows[0].len();
        let cut = cut.min(dim);
        let ones = vec![1u32; rows.len()];
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let left: Vec<&[f32]> = rows.iter().map(|r| &r[..cut]).collect();
        let right: Vec<&[f32]> = rows.iter().map(|r| &r[cut..]).collect();
        for rule in [Aggregation::Mean, Aggregation::Median, Aggregation::TrimmedMean { beta: 0.3 }] {
            let global = rule.apply(&refs, &ones).unwrap();
            let mut spans = rule.apply(&left, &ones).unwrap();
            spans.extend(rule.apply(&right, &ones).unwrap());
            prop_assert_eq!(global, spans);
        }
    }
}
