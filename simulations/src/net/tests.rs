//! Max-min fairness and transfer-timing tests of the network model, driven by hand.

use super::*;

const MB: f64 = 1e6;

fn peer(up: f64, down: f64, latency_us: u64) -> PeerLink {
    PeerLink {
        up_bytes_per_s: up,
        down_bytes_per_s: down,
        latency_us,
        site: None,
    }
}

fn net(peers: Vec<PeerLink>) -> Network<&'static str> {
    let config = NetConfig::new(peers, Vec::new(), LossModel::None).unwrap();
    Network::new(config, SeedTree::new(1))
}

/// Runs the network until idle or `until`, returning (arrival µs, payload) in delivery order.
fn drain(net: &mut Network<&'static str>, until: SimTime) -> Vec<(u64, &'static str)> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let Some(t) = net.poll_timeout() else { break };
        if t > until {
            break;
        }
        net.handle_timeout(t);
        while let Some(d) = net.poll_delivery() {
            got.push((t.as_micros(), d.payload));
        }
    }
    got
}

fn send(
    net: &mut Network<&'static str>,
    at_us: u64,
    from: u32,
    to: u32,
    bytes: f64,
    tag: &'static str,
) {
    let status = net.handle_send(
        SimTime::from_micros(at_us),
        PeerIdx(from),
        PeerIdx(to),
        bytes as u64,
        tag,
    );
    assert_eq!(status, SendStatus::Started);
}

#[test]
fn isolated_message_costs_latency_plus_size_over_bandwidth() {
    let mut n = net(vec![peer(MB, MB, 500); 2]);
    send(&mut n, 0, 0, 1, MB, "m");
    assert_eq!(drain(&mut n, SimTime::MAX), vec![(1_001_000, "m")]);
}

#[test]
fn two_flows_sharing_an_uplink_each_get_half() {
    let mut n = net(vec![peer(MB, MB, 0); 3]);
    send(&mut n, 0, 0, 1, MB, "a");
    send(&mut n, 0, 0, 2, MB, "b");
    assert_eq!(
        drain(&mut n, SimTime::MAX),
        vec![(2_000_000, "a"), (2_000_000, "b")]
    );
}

#[test]
fn flow_limited_elsewhere_frees_capacity_for_the_other() {
    // Peer 2's downlink caps 0→2 at a quarter, so 0→1 gets the other three quarters.
    let mut n = net(vec![
        peer(MB, MB, 0),
        peer(MB, MB, 0),
        peer(MB, MB / 4.0, 0),
    ]);
    send(&mut n, 0, 0, 1, MB, "fast");
    send(&mut n, 0, 0, 2, MB, "capped");
    let got = drain(&mut n, SimTime::MAX);
    // 1 MB at 0.75 MB/s = 1.333334 s; the capped flow stays at 0.25 MB/s throughout: 4 s.
    assert_eq!(got, vec![(1_333_334, "fast"), (4_000_000, "capped")]);
}

#[test]
fn a_late_flow_slows_the_first_and_both_finish_on_time() {
    let mut n = net(vec![peer(MB, MB, 0); 3]);
    send(&mut n, 0, 0, 1, MB, "long");
    assert_eq!(drain(&mut n, SimTime::from_micros(500_000)), vec![]);
    send(&mut n, 500_000, 0, 2, MB / 4.0, "short");
    // From 0.5 s both get 0.5 MB/s: short ends at 1.0 s; long has 0.25 MB left, alone: 1.25 s.
    assert_eq!(
        drain(&mut n, SimTime::MAX),
        vec![(1_000_000, "short"), (1_250_000, "long")]
    );
}

#[test]
fn killed_peer_cancels_its_flows_and_frees_bandwidth() {
    let mut n = net(vec![peer(MB, MB, 0); 3]);
    send(&mut n, 0, 0, 1, MB, "to-victim");
    send(&mut n, 0, 0, 2, MB, "survivor");
    assert_eq!(drain(&mut n, SimTime::from_micros(1_000_000)), vec![]);
    n.handle_peer_down(SimTime::from_micros(1_000_000), PeerIdx(1));
    assert_eq!(n.active_flows(), 1);
    // The survivor had 0.5 MB left at 1 s and now gets the whole uplink: done at 1.5 s.
    assert_eq!(drain(&mut n, SimTime::MAX), vec![(1_500_000, "survivor")]);
    assert_eq!(n.stats().cancelled, 1);
    let refused = n.handle_send(
        SimTime::from_micros(2_000_000),
        PeerIdx(0),
        PeerIdx(1),
        1,
        "x",
    );
    assert_eq!(refused, SendStatus::PeerDown);
}

#[test]
fn site_uplink_is_a_shared_bottleneck() {
    let mut peers = vec![peer(MB, MB, 0); 4];
    for (i, p) in peers.iter_mut().enumerate() {
        p.site = Some(u32::try_from(i / 2).unwrap());
    }
    let site = SiteLink {
        up_bytes_per_s: MB,
        down_bytes_per_s: 4.0 * MB,
        latency_us: 1_000,
    };
    let config = NetConfig::new(peers, vec![site; 2], LossModel::None).unwrap();
    let mut n = Network::new(config, SeedTree::new(1));
    send(&mut n, 0, 0, 2, MB, "a");
    send(&mut n, 0, 1, 3, MB, "b");
    send(&mut n, 0, 0, 1, MB, "local");
    // a and b share site 0's 1 MB/s WAN uplink; a also shares peer 0's uplink with `local`.
    // Max-min: all three get 0.5 MB/s; cross-site arrivals add 2 × 1 ms of site latency.
    let got = drain(&mut n, SimTime::MAX);
    assert_eq!(
        got,
        vec![(2_000_000, "local"), (2_002_000, "a"), (2_002_000, "b")]
    );
}

#[test]
fn partition_cancels_crossing_flows_and_repair_heals() {
    let mut n = net(vec![peer(MB, MB, 0); 2]);
    send(&mut n, 0, 0, 1, MB, "cut");
    n.partition(SimTime::from_micros(10), &[0, 1]);
    assert_eq!(drain(&mut n, SimTime::MAX), vec![]);
    let refused = n.handle_send(SimTime::from_micros(20), PeerIdx(0), PeerIdx(1), 1, "x");
    assert_eq!(refused, SendStatus::Partitioned);
    n.repair(SimTime::from_micros(30));
    send(&mut n, 30, 0, 1, MB, "ok");
    assert_eq!(drain(&mut n, SimTime::MAX), vec![(1_000_030, "ok")]);
}

#[test]
fn retransmit_loss_inflates_wire_bytes() {
    let config = NetConfig::new(
        vec![peer(MB, MB, 0); 2],
        Vec::new(),
        LossModel::Retransmit { rate: 0.5 },
    )
    .unwrap();
    let mut n = Network::new(config, SeedTree::new(1));
    send(&mut n, 0, 0, 1, MB, "slow");
    assert_eq!(drain(&mut n, SimTime::MAX), vec![(2_000_000, "slow")]);
}

#[test]
fn drop_loss_loses_about_the_configured_fraction() {
    let config = NetConfig::new(
        vec![peer(MB, MB, 0); 2],
        Vec::new(),
        LossModel::Drop { rate: 0.25 },
    )
    .unwrap();
    let mut n = Network::new(config, SeedTree::new(9));
    let mut delivered = 0;
    for i in 0..2_000 {
        send(&mut n, i, 0, 1, 0.0, "m");
        delivered += drain(&mut n, SimTime::from_micros(i)).len();
    }
    assert!(
        (1_400..1_600).contains(&delivered),
        "delivered {delivered} of 2000"
    );
}

/// Random sends among 24 peers in 3 sites: component-scoped recomputation must give exactly the
/// same delivery times as recomputing every flow.
#[test]
fn component_scope_matches_global_recomputation() {
    use rand::Rng;
    let run = |scope: RecomputeScope| {
        let mut peers = Vec::new();
        for i in 0..24_u32 {
            let mut p = peer(
                MB * f64::from(1 + i % 5),
                MB * f64::from(2 + i % 3),
                100 * u64::from(i % 4),
            );
            p.site = Some(i % 3);
            peers.push(p);
        }
        let site = SiteLink {
            up_bytes_per_s: 3.0 * MB,
            down_bytes_per_s: 5.0 * MB,
            latency_us: 500,
        };
        let config = NetConfig::new(peers, vec![site; 3], LossModel::None).unwrap();
        let mut n = Network::new(config, SeedTree::new(5));
        n.set_recompute_scope(scope);
        let mut rng = SeedTree::new(42).rng(crate::rng::Domain::Runner, 0);
        let mut got = Vec::new();
        for step in 0..300_u64 {
            let at = step * 20_000;
            got.extend(drain(&mut n, SimTime::from_micros(at)));
            let (a, b) = (rng.random_range(0..24), rng.random_range(0..24));
            if a != b {
                let bytes = f64::from(rng.random_range(1_000..2_000_000_u32));
                send(&mut n, at, a, b, bytes, "m");
            }
        }
        got.extend(drain(&mut n, SimTime::MAX));
        (got, n.stats().recompute_visits)
    };
    let (component, visits_component) = run(RecomputeScope::Component);
    let (global, visits_global) = run(RecomputeScope::Global);
    assert_eq!(component.len(), global.len());
    assert_eq!(component, global);
    assert!(visits_component < visits_global);
}
