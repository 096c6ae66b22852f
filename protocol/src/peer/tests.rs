//! Single-peer walks through the lifecycle; multi-peer behaviour is covered by the driver and
//! `tests/invariants.rs`.

use std::time::Duration;

use super::*;
use crate::wire::StateRequest;

fn profile() -> Profile {
    Profile {
        bandwidth_bytes_per_s: 1_000_000,
        samples_per_s: 100,
        samples_per_step: 8,
    }
}

fn config() -> PeerConfig {
    PeerConfig::builder()
        .scaled_to(Duration::from_secs(1))
        .build()
        .expect("valid")
}

fn drain(peer: &mut Peer) -> Vec<Output> {
    std::iter::from_fn(|| peer.poll_output()).collect()
}

#[test]
fn a_lone_founder_commits_its_own_gradient() {
    let me = PeerId::from_index(1);
    let initial: Arc<[u8]> = Arc::from(vec![0u8; 16]);
    let mut t = Timestamp::ZERO;
    let mut peer = Peer::new(config(), me, profile(), Some(initial), t).expect("fits");
    assert!(
        drain(&mut peer)
            .iter()
            .any(|o| matches!(o, Output::ComputeGradient { round: RoundId(1) }))
    );
    let gradient: Arc<[f32]> = Arc::from(vec![0.5, -1.0, 2.0, 0.25]);
    peer.handle_gradient(t, 8, gradient.clone());
    let mut applied = None;
    for _ in 0..20 {
        t = peer.poll_timeout().expect("always a timer");
        peer.handle_timeout(t);
        for out in drain(&mut peer) {
            if let Output::ApplyRound(result) = out {
                applied = Some(result);
            }
        }
        if applied.is_some() {
            break;
        }
    }
    let result = applied.expect("the lone founder commits");
    assert_eq!(result.round, RoundId(1));
    assert_eq!(
        &result.data[..],
        &gradient[..],
        "the mean of one gradient is itself"
    );
    assert_eq!(result.committee, vec![me]);
    peer.handle_state(t, RoundId(1), Arc::from(vec![1u8; 16]))
        .expect("fits");
    assert_eq!(peer.state().map(|s| s.round), Some(RoundId(1)));
}

#[test]
fn a_joiner_announces_it_wants_to_join_and_serves_nothing() {
    let me = PeerId::from_index(2);
    let mut peer = Peer::new(config(), me, profile(), None, Timestamp::ZERO).expect("fits");
    assert!(peer.is_joining());
    let announced = drain(&mut peer).into_iter().any(|o| {
        matches!(o, Output::Broadcast { envelope } if matches!(&envelope.body, Body::Announce(a) if a.wants_to_join && a.state.is_none()))
    });
    assert!(announced);
    let asker = PeerId::from_index(3);
    let request = Envelope::new(
        asker,
        RoundId(4),
        Body::StateRequest(StateRequest::Manifest),
    );
    peer.handle_message(Timestamp::ZERO, asker, request);
    let replies = drain(&mut peer);
    assert!(replies.iter().any(|o| matches!(o, Output::Send { to, envelope } if *to == asker && envelope.body == Body::StateUnavailable)));
}

#[test]
fn an_impersonated_sender_is_reported_not_obeyed() {
    let me = PeerId::from_index(1);
    let mut peer = Peer::new(
        config(),
        me,
        profile(),
        Some(Arc::from(vec![0u8; 4])),
        Timestamp::ZERO,
    )
    .expect("fits");
    drain(&mut peer);
    let liar = PeerId::from_index(5);
    let claimed = PeerId::from_index(6);
    let request = Envelope::new(
        claimed,
        RoundId(0),
        Body::StateRequest(StateRequest::Manifest),
    );
    peer.handle_message(Timestamp::ZERO, liar, request);
    let outs = drain(&mut peer);
    assert!(outs.iter().any(|o| matches!(o, Output::Event(Event::Impersonation { peer, claimed: c }) if *peer == liar && *c == claimed)));
    assert!(!outs.iter().any(|o| matches!(o, Output::Send { .. })));
}

#[test]
fn a_resumed_peer_continues_after_its_saved_round() {
    let me = PeerId::from_index(1);
    let committee = vec![me, PeerId::from_index(2)];
    let snapshot =
        StateSnapshot::new(RoundId(5), committee, Arc::from(vec![3u8; 40]), 16).expect("fits");
    let digest = snapshot.summary();
    let mut peer =
        Peer::resume(config(), me, profile(), snapshot, Timestamp::ZERO).expect("resumes");
    assert_eq!(peer.state(), Some(digest));
    assert_eq!(peer.next_round(), RoundId(6));
    assert!(!peer.is_joining());
    let outputs = drain(&mut peer);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::ComputeGradient { round: RoundId(6) })),
        "{outputs:?}"
    );
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Broadcast { envelope } if matches!(
            &envelope.body,
            Body::Announce(a) if a.state == Some(digest) && !a.wants_to_join
        )
    )));
}
