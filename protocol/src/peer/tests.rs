//! Single-peer walks through the lifecycle; multi-peer behaviour is covered by the driver and
//! `tests/invariants.rs`.

use std::time::Duration;

use super::*;
use crate::ids::Digest;
use crate::keys::PeerKey;
use crate::wire::{Member, StateRequest, VoteLock};

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
    let me_key = PeerKey::from_index(1);
    let initial: Arc<[u8]> = Arc::from(vec![0u8; 16]);
    let mut t = Timestamp::ZERO;
    let mut peer = Peer::new(config(), me_key, profile(), Some(initial), t).expect("fits");
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
    let me_key = PeerKey::from_index(2);
    let mut peer = Peer::new(config(), me_key, profile(), None, Timestamp::ZERO).expect("fits");
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
    let me_key = PeerKey::from_index(1);
    let mut peer = Peer::new(
        config(),
        me_key,
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
    let me_key = PeerKey::from_index(1);
    let committee = vec![me, PeerId::from_index(2)];
    let snapshot =
        StateSnapshot::new(RoundId(5), committee, Arc::from(vec![3u8; 40]), 16).expect("fits");
    let digest = snapshot.summary();
    let mut peer =
        Peer::resume(config(), me_key, profile(), snapshot, Timestamp::ZERO).expect("resumes");
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

/// Fires the peer's next timer; answers a committed result as the shell would. Returns the
/// time and the outputs.
fn tick(peer: &mut Peer) -> (Timestamp, Vec<Output>) {
    let t = peer.poll_timeout().expect("always a timer");
    peer.handle_timeout(t);
    let outputs = drain(peer);
    for o in &outputs {
        if let Output::ApplyRound(result) = o {
            peer.handle_state(t, result.round, Arc::from(vec![1u8; 16]))
                .expect("fits");
        }
    }
    assert!(
        t < Timestamp::ZERO + Duration::from_secs(30),
        "stuck: {outputs:?}"
    );
    (t, outputs)
}

/// Issue 18: a leaving peer sees its running round through (so nobody fails over its spans),
/// then computes nothing, announces itself not ready and takes or proposes no round: settled.
#[test]
fn a_leaving_peer_finishes_its_round_then_takes_no_other() {
    let initial: Arc<[u8]> = Arc::from(vec![0u8; 16]);
    let key = PeerKey::from_index(1);
    let mut peer =
        Peer::new(config(), key, profile(), Some(initial), Timestamp::ZERO).expect("fits");
    drain(&mut peer);
    // A second founder, ready for round 1, that will never answer: the round runs to its end.
    let initial_state = peer.state().expect("a founder holds the initial state");
    announce_state(
        &mut peer,
        Timestamp::ZERO,
        PeerId::from_index(2),
        initial_state,
        0,
    );
    peer.handle_gradient(Timestamp::ZERO, 8, Arc::from(vec![0.5f32; 4]));
    drain(&mut peer);
    let mut t = Timestamp::ZERO;
    while peer.is_settled() {
        t = tick(&mut peer).0;
    }
    // In round 1 now: leave. The round still ends, by the protocol's own deadlines.
    peer.leave(t);
    let mut during = drain(&mut peer);
    while !peer.is_settled() {
        during.extend(tick(&mut peer).1);
    }
    assert!(
        during.iter().any(|o| matches!(
            o,
            Output::Event(
                Event::RoundAborted {
                    round: RoundId(1),
                    ..
                } | Event::RoundCommitted {
                    round: RoundId(1),
                    ..
                }
            )
        )),
        "{during:?}"
    );
    let after: Vec<Output> = (0..10).flat_map(|_| tick(&mut peer).1).collect();
    assert!(
        !after.iter().any(|o| matches!(
            o,
            Output::ComputeGradient { .. }
                | Output::Send { .. }
                | Output::Event(Event::Proposed { .. } | Event::RoundStarted { .. })
        )),
        "{after:?}"
    );
    let ready = after.iter().find_map(|o| match o {
        Output::Broadcast { envelope } => match &envelope.body {
            Body::Announce(a) => Some(a.ready_for),
            _ => None,
        },
        _ => None,
    });
    assert_eq!(ready, Some(None), "{after:?}");
}

/// The announcement among `outputs`: its envelope round (the sender's next round) and lock.
fn announced(outputs: &[Output]) -> Option<(RoundId, Option<VoteLock>)> {
    outputs.iter().rev().find_map(|o| match o {
        Output::Broadcast { envelope } => match &envelope.body {
            Body::Announce(a) => Some((envelope.round, a.lock.clone())),
            _ => None,
        },
        _ => None,
    })
}

/// Issue 18 item 5 (docs/protocol.md §5.2): a peer hands out its promises (next round, last
/// vote) to persist before the announcement that makes them, and a peer resumed from a
/// checkpoint with them keeps them: it announces the same lock and no earlier round. Without
/// them it would announce round 1 and no lock, free to vote anew on the same state.
#[test]
fn a_resumed_peer_keeps_the_vote_and_rounds_it_promised() {
    let me_key = PeerKey::from_index(1);
    let initial: Arc<[u8]> = Arc::from(vec![0u8; 16]);
    let mut t = Timestamp::ZERO;
    let mut peer = Peer::new(
        config(),
        me_key.clone(),
        profile(),
        Some(initial.clone()),
        t,
    )
    .expect("fits");
    let mut outputs = drain(&mut peer);
    peer.handle_gradient(t, 8, Arc::from(vec![0.5f32; 4]));
    let mut voted_on_initial = None;
    while voted_on_initial.is_none() {
        t = peer.poll_timeout().expect("always a timer");
        peer.handle_timeout(t);
        outputs.extend(drain(&mut peer));
        voted_on_initial = outputs.iter().position(|o| {
            matches!(o, Output::Persist(Promise { lock: Some((base, _)), .. }) if base.round == RoundId(0))
        });
        assert!(t < Timestamp::ZERO + Duration::from_secs(30), "{outputs:?}");
    }
    let at = voted_on_initial.expect("found");
    let Output::Persist(promise) = outputs[at].clone() else {
        unreachable!()
    };
    let (base, vote) = promise.lock.clone().expect("a lock");
    assert_eq!(vote.round, RoundId(1));
    assert!(promise.next_round >= RoundId(1));
    // Persisted before any announcement that shows it.
    let first_shown = outputs.iter().position(|o| {
        matches!(o, Output::Broadcast { envelope } if matches!(&envelope.body, Body::Announce(a) if a.lock.is_some()))
    });
    assert!(first_shown.is_none_or(|shown| shown > at), "{outputs:?}");

    // Restarted from a checkpoint of the state it voted on (the round never committed for it).
    let snapshot = || {
        StateSnapshot::new(
            RoundId(0),
            Vec::new(),
            initial.clone(),
            config().state_chunk_bytes(),
        )
        .expect("fits")
    };
    assert_eq!(snapshot().summary(), base);
    let promised = RoundId(7);
    let kept = Promise {
        next_round: promised,
        lock: Some((base, vote.clone())),
    };
    let mut resumed = Peer::resume_with_promise(
        config(),
        me_key.clone(),
        profile(),
        snapshot(),
        Some(kept),
        Timestamp::ZERO,
    )
    .expect("resumes");
    assert_eq!(
        announced(&drain(&mut resumed)),
        Some((promised, Some(vote.clone())))
    );
    let mut forgetful =
        Peer::resume(config(), me_key, profile(), snapshot(), Timestamp::ZERO).expect("resumes");
    assert_eq!(announced(&drain(&mut forgetful)), Some((RoundId(1), None)));
}

/// A lock from before a restart on a state the checkpoint is older than binds once the peer
/// holds that state again, and a counter base starts its announcements above the last run's.
#[test]
fn a_dormant_lock_wakes_on_its_state_and_announcements_count_from_the_base() {
    let me_key = PeerKey::from_index(1);
    let state = |round: u64| {
        let bytes = Arc::from(vec![u8::try_from(round).expect("small"); 16]);
        StateSnapshot::new(RoundId(round), vec![PeerId::from_index(1)], bytes, 16).expect("fits")
    };
    let (old, newer) = (state(1), state(2));
    let vote = VoteLock {
        round: RoundId(3),
        digest: Digest([9; 32]),
        carried: false,
        backers: vec![1],
    };
    let promise = Promise {
        next_round: RoundId(4),
        lock: Some((newer.summary(), vote.clone())),
    };
    let config = config().with_announce_seq_base(1_000_000);
    let mut peer = Peer::resume_with_promise(
        config,
        me_key,
        profile(),
        old,
        Some(promise),
        Timestamp::ZERO,
    )
    .expect("resumes");
    let outputs = drain(&mut peer);
    assert_eq!(announced(&outputs), Some((RoundId(4), None)));
    let seq = outputs.iter().find_map(|o| match o {
        Output::Broadcast { envelope } => match &envelope.body {
            Body::Announce(a) => Some(a.seq),
            _ => None,
        },
        _ => None,
    });
    assert!(seq.is_some_and(|s| s >= 1_000_000), "{seq:?}");
    peer.install(Timestamp::ZERO, newer);
    assert_eq!(peer.lock.as_ref().map(lock::Lock::announced), Some(vote));
}

/// Peer `me` (index 1) of a committee {1, 2, 3} holding the state after round 2, ready with a
/// gradient, and locked on `digest` from round 3 (it voted, then the round ended without it
/// learning the outcome, say cut off by a partition right after the votes).
fn locked_peer(digest: Digest, result: Option<RoundResult>) -> (Peer, StateSummary) {
    let me_key = PeerKey::from_index(1);
    let mut committee: Vec<PeerId> = (1..=3).map(PeerId::from_index).collect();
    committee.sort();
    let snapshot =
        StateSnapshot::new(RoundId(2), committee, Arc::from(vec![7u8; 16]), 16).expect("fits");
    let base = snapshot.summary();
    let mut peer =
        Peer::resume(config(), me_key, profile(), snapshot, Timestamp::ZERO).expect("resumes");
    peer.handle_gradient(Timestamp::ZERO, 8, Arc::from(vec![0.5f32; 6]));
    let vote = VoteLock {
        round: RoundId(3),
        digest,
        carried: false,
        backers: vec![0b111],
    };
    peer.lock = Some(lock::Lock::new(base, vote, result));
    peer.next_round = RoundId(4);
    drain(&mut peer);
    (peer, base)
}

/// `from` announces `base`, ready for `round`, with `lock`.
fn announce_from(
    peer: &mut Peer,
    (from_index, round): (u64, u64),
    base: StateSummary,
    lock: Option<VoteLock>,
) {
    let from = PeerId::from_index(from_index);
    let body = Body::Announce(Announce {
        state: Some(base),
        ready_for: Some(RoundId(round)),
        wants_to_join: false,
        bandwidth_bytes_per_s: 1_000_000,
        samples_per_s: 100,
        samples_per_step: 8,
        lock,
        seq: round,
        attestation: Some(PeerKey::from_index(from_index).seal_state(base.round, base.digest)),
    });
    peer.handle_message(
        Timestamp::ZERO,
        from,
        Envelope::new(from, RoundId(round), body),
    );
}

/// Peer 2's proposal of round 4 on `base` naming peers 1 and 2 (a committee majority) as
/// contributors.
fn propose_round_4(peer: &mut Peer, base: StateSummary) {
    let leader = PeerId::from_index(2);
    let members = [PeerId::from_index(1), leader]
        .into_iter()
        .map(|p| Member {
            peer: p,
            role: Role::Contributor,
            bandwidth_bytes_per_s: 1_000_000,
        })
        .collect::<Vec<_>>();
    let mut members = members;
    members.sort_by_key(|m| m.peer);
    let proposal = Body::Proposal(Proposal {
        base,
        vector_len: 6,
        members,
    });
    peer.handle_message(
        Timestamp::ZERO,
        leader,
        Envelope::new(leader, RoundId(4), proposal),
    );
}

fn votes(outputs: &[Output]) -> Vec<Digest> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { envelope, .. } => match &envelope.body {
                Body::Vote(v) => Some(v.result),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_locked_peer_votes_its_earlier_result_again_in_the_next_round() {
    let d = Digest::of(b"round 3 result");
    let (mut peer, base) = locked_peer(d, None);
    // Peer 2 has moved on without a vote; peer 3 is cut off: it may have voted `d` with us,
    // and peers on its side may have committed `d`.
    announce_from(&mut peer, (2, 4), base, None);
    propose_round_4(&mut peer, base);
    let outputs = drain(&mut peer);
    let cast = votes(&outputs);
    assert!(!cast.is_empty(), "it votes at once: {outputs:?}");
    assert!(cast.iter().all(|v| *v == d), "only for d: {cast:?}");
}

#[test]
fn a_peer_that_cannot_tell_which_result_may_have_committed_withholds_its_vote() {
    let d = Digest::of(b"round 3 result, roster A");
    let (mut peer, base) = locked_peer(d, None);
    // Peer 2 voted for another result of round 3 (two rosters); peer 3, cut off, may have
    // completed either majority.
    let other = VoteLock {
        round: RoundId(3),
        digest: Digest::of(b"round 3 result, roster B"),
        carried: false,
        backers: vec![0b111],
    };
    announce_from(&mut peer, (2, 4), base, Some(other.clone()));
    propose_round_4(&mut peer, base);
    let mut outputs = drain(&mut peer);
    for _ in 0..50 {
        let Some(t) = peer.poll_timeout() else {
            break;
        };
        peer.handle_timeout(t);
        outputs.extend(drain(&mut peer));
        if outputs
            .iter()
            .any(|o| matches!(o, Output::Event(Event::RoundAborted { .. })))
        {
            break;
        }
    }
    assert!(votes(&outputs).is_empty(), "{outputs:?}");
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Event(Event::RoundAborted {
            round: RoundId(4),
            reason: crate::reduce::AbortReason::Withheld
        })
    )));
    // Once peer 3 says it has moved on without voting, neither result can have committed.
    announce_from(&mut peer, (2, 5), base, Some(other));
    announce_from(&mut peer, (3, 5), base, None);
    assert_eq!(peer.carry_for(RoundId(5), base), crate::reduce::Carry::Free);
}

#[test]
fn a_locked_peer_commits_what_a_committee_majority_announces_it_voted() {
    let d = Digest::of(b"round 3 result");
    let (mut peer, base) = locked_peer(d, None);
    let me = PeerId::from_index(1);
    let result = RoundResult {
        round: RoundId(3),
        base,
        digest: d,
        data: vec![0.25f32; 6].into(),
        spans: Vec::new(),
        committee: vec![me, PeerId::from_index(2)],
    };
    let (mut peer_with_data, _) = locked_peer(d, Some(result.clone()));
    let same = VoteLock {
        round: RoundId(3),
        digest: d,
        carried: false,
        backers: vec![0b111],
    };
    for p in [&mut peer, &mut peer_with_data] {
        announce_from(p, (2, 4), base, Some(same.clone()));
    }
    // Without the data it cannot apply the result; it waits for the newer state instead.
    assert!(
        !drain(&mut peer)
            .iter()
            .any(|o| matches!(o, Output::ApplyRound(_)))
    );
    let outputs = drain(&mut peer_with_data);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::ApplyRound(r) if *r == result))
    );
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Event(Event::RoundCommitted { round: RoundId(3), digest, .. }) if *digest == d
    )));
}

/// A peer holding the state after round 5 of a committee {1, 2}, computing its next gradient.
fn member_at_round_5() -> (Peer, StateSummary) {
    member_of(2)
}

/// Peer 1 holding the state after round 5 of the committee {1, …, `size`}, computing its next
/// gradient.
fn member_of(size: u64) -> (Peer, StateSummary) {
    member_with(size, config())
}

/// [`member_of`] with another configuration.
fn member_with(size: u64, config: PeerConfig) -> (Peer, StateSummary) {
    let me_key = PeerKey::from_index(1);
    let committee = (1..=size).map(PeerId::from_index).collect();
    let snapshot =
        StateSnapshot::new(RoundId(5), committee, Arc::from(vec![3u8; 40]), 16).expect("fits");
    let own = snapshot.summary();
    let mut peer =
        Peer::resume(config, me_key, profile(), snapshot, Timestamp::ZERO).expect("resumes");
    drain(&mut peer);
    (peer, own)
}

/// Peer `from` announces that it holds `state` (the `seq`-th announcement).
fn announce_state(peer: &mut Peer, now: Timestamp, from: PeerId, state: StateSummary, seq: u64) {
    let ready = state.round.next();
    let body = Body::Announce(Announce {
        state: Some(state),
        ready_for: Some(ready),
        wants_to_join: false,
        bandwidth_bytes_per_s: 1_000_000,
        samples_per_s: 100,
        samples_per_step: 8,
        lock: None,
        seq,
        attestation: None,
    });
    peer.handle_message(now, from, Envelope::new(from, ready, body));
}

fn asks_for_a_gradient(outputs: &[Output]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::ComputeGradient { .. }))
}

/// Issue 16, row 1: one announcement of a state far ahead that nobody serves made every peer a
/// joiner for good. Now the sync fails within the request timeouts and the peer trains on its
/// own state again, and the same claim is not fetched again for a round timeout. (The other
/// committee member is silent here, so the peer takes one peer's word: `sync_targets` rule 4;
/// `a_member_follows_its_committee_not_one_peer` has the committee present.)
#[test]
fn a_state_announced_but_never_served_does_not_stop_a_peer() {
    let (mut peer, own) = member_at_round_5();
    let liar = PeerId::from_index(9);
    let fake = StateSummary {
        round: RoundId(1000),
        digest: Digest::of(b"never served"),
    };
    let mut t = Timestamp::ZERO;
    announce_state(&mut peer, t, liar, fake, 0);
    assert!(peer.is_joining());
    let outputs = drain(&mut peer);
    assert!(
        outputs.iter().any(
            |o| matches!(o, Output::Event(Event::SyncStarted { target, .. }) if *target == fake)
        )
    );
    let mut resumed = false;
    while !resumed && t < Timestamp::ZERO + config().round_timeout() {
        t = peer.poll_timeout().expect("a timer");
        peer.handle_timeout(t);
        resumed = asks_for_a_gradient(&drain(&mut peer));
    }
    assert!(resumed, "still a joiner after a round timeout");
    assert!(!peer.is_joining());
    assert_eq!(peer.state(), Some(own));
    assert_eq!(peer.next_round(), RoundId(6), "the claim moved no round id");
    announce_state(&mut peer, t, liar, fake, 1);
    assert!(
        !peer.is_joining(),
        "the failed state is fetched again at once"
    );
}

/// `snapshot`'s answer to `request`, a manifest carrying peer `attester`'s attestation.
fn served_with_attestation(snapshot: &StateSnapshot, request: StateRequest, attester: u64) -> Body {
    let mut body = snapshot.serve(request);
    if let Body::StateManifest(manifest) = &mut body {
        let state = snapshot.summary();
        let seal = PeerKey::from_index(attester).seal_state(state.round, state.digest);
        manifest.attestations = vec![seal];
    }
    body
}

/// Issue 16, row 3: a donor served bytes that match the announced digest but are no state the
/// shell can load (junk, or non-finite values). The node process exited; now the shell refuses
/// the state, the peer names the donor (`DonorFault::Unloadable`, which the node bans), goes
/// back to the state it held, and does not fetch that one again. (As above, with the other
/// committee member silent; its attestation, which the donor forwards, vouches for the state:
/// a buggy member restarted on a corrupt checkpoint does that.)
#[test]
fn a_synced_state_the_shell_cannot_load_is_refused_and_the_peer_keeps_its_own() {
    let (mut peer, own) = member_at_round_5();
    let liar = PeerId::from_index(9);
    let junk = StateSnapshot::new(
        RoundId(1000),
        vec![liar],
        Arc::from(vec![0xAB_u8; 64]),
        config().state_chunk_bytes(),
    )
    .expect("fits");
    let fake = junk.summary();
    let t = Timestamp::ZERO;
    announce_state(&mut peer, t, liar, fake, 0);
    // The liar serves every request, consistently with its manifest.
    let mut loaded = false;
    for _ in 0..100 {
        let mut replies = Vec::new();
        for output in drain(&mut peer) {
            match output {
                Output::Send { to, envelope } if to == liar => {
                    if let Body::StateRequest(request) = envelope.body {
                        let body = served_with_attestation(&junk, request, 2);
                        replies.push(Envelope::new(liar, envelope.round, body));
                    }
                }
                Output::LoadState(snapshot) => loaded |= snapshot.summary() == fake,
                _ => {}
            }
        }
        if loaded || replies.is_empty() {
            break;
        }
        for reply in replies {
            peer.handle_message(t, liar, reply);
        }
    }
    assert!(loaded, "the sync completed");
    assert_eq!(peer.state(), Some(fake));
    peer.handle_state_refused(t, fake);
    let outputs = drain(&mut peer);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Event(Event::StateRefused { state }) if *state == fake))
    );
    // The donor that served it is named, so the shell can ban it.
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Event(Event::DonorDropped { peer, fault: DonorFault::Unloadable }) if *peer == liar
    )));
    assert!(asks_for_a_gradient(&outputs), "{outputs:?}");
    assert_eq!(peer.state(), Some(own));
    assert_eq!(peer.next_round(), RoundId(6));
    assert!(!peer.is_joining());
    // The refused state is not served to others, and not fetched again when re-announced.
    let asker = PeerId::from_index(4);
    peer.handle_message(
        t,
        asker,
        Envelope::new(
            asker,
            fake.round,
            Body::StateRequest(StateRequest::Manifest),
        ),
    );
    assert!(drain(&mut peer).iter().any(
        |o| matches!(o, Output::Send { envelope, .. } if envelope.body == Body::StateUnavailable)
    ));
    announce_state(&mut peer, t, liar, fake, 1);
    assert!(!peer.is_joining());
    // A late apply on the refused state (the shell's queue) is not taken as a state of ours.
    peer.handle_state(t, RoundId(1001), Arc::from(vec![0u8; 8]))
        .expect("fits");
    assert_eq!(peer.state(), Some(own));
}

/// Issue 16, row 4: 300 contributions of 8 MiB for a far-future round were buffered until that
/// round, which never came. Now only rounds just ahead are buffered, and bytes are bounded per
/// sender and in all by the size of the state (plus a little).
#[test]
fn early_messages_are_bounded_in_rounds_and_bytes() {
    let (mut peer, _) = member_at_round_5();
    let contribution = |round: u64, from: PeerId, floats: usize| {
        let body = Body::Contribution(crate::wire::Contribution {
            roster: Digest::of(b"a roster we never saw"),
            span: 0,
            weight: 8,
            codec: crate::config::CodecKind::None,
            floats: u32::try_from(floats).expect("small"),
            data: vec![1.0f32; floats].into(),
            encoded: Arc::from(Vec::new()),
        });
        Envelope::new(from, RoundId(round), body)
    };
    let attacker = PeerId::from_index(9);
    for _ in 0..300 {
        peer.handle_message(
            Timestamp::ZERO,
            attacker,
            contribution(1000, attacker, 1 << 16),
        );
    }
    assert_eq!(peer.early_count, 0, "a far-future round is not buffered");
    for _ in 0..300 {
        peer.handle_message(
            Timestamp::ZERO,
            attacker,
            contribution(7, attacker, 1 << 16),
        );
    }
    let per_sender = 40 + EARLY_BYTES_PER_SENDER_SLACK;
    assert!(peer.early_bytes <= per_sender, "{} bytes", peer.early_bytes);
    assert!(peer.early_count < 300);
    // Many senders: the total stays bounded too.
    for i in 100..400 {
        let sender = PeerId::from_index(i);
        peer.handle_message(Timestamp::ZERO, sender, contribution(6, sender, 1 << 12));
    }
    assert!(
        peer.early_bytes <= 2 * 40 + EARLY_BYTES_SLACK,
        "{} bytes",
        peer.early_bytes
    );
    assert_eq!(
        peer.early_bytes,
        peer.early_bytes_by_sender.values().sum::<usize>()
    );
}

/// Issue 16, row 6: announcements from 1,000 fresh keys asking to join put 1,000 observers in
/// every roster, and rounds crawled. A leader now names a few, a different few each round.
#[test]
fn a_flood_of_joiners_gets_a_few_observer_slots_per_round() {
    let me_key = PeerKey::from_index(1);
    let mut t = Timestamp::ZERO;
    let mut peer = Peer::new(
        config(),
        me_key,
        profile(),
        Some(Arc::from(vec![0u8; 16])),
        t,
    )
    .expect("fits");
    drain(&mut peer);
    peer.handle_gradient(t, 8, Arc::from(vec![0.5f32; 4]));
    for i in 1000..2000 {
        let joiner = PeerId::from_index(i);
        let body = Body::Announce(Announce {
            state: None,
            ready_for: None,
            wants_to_join: true,
            bandwidth_bytes_per_s: 1_000_000,
            samples_per_s: 100,
            samples_per_step: 8,
            lock: None,
            seq: 0,
            attestation: None,
        });
        peer.handle_message(t, joiner, Envelope::new(joiner, RoundId(1), body));
    }
    let mut named = None;
    for _ in 0..20 {
        t = peer.poll_timeout().expect("a timer");
        peer.handle_timeout(t);
        for out in drain(&mut peer) {
            if let Output::Event(Event::Proposed {
                contributors,
                observers,
                ..
            }) = out
            {
                named = Some((contributors, observers));
            }
        }
        if named.is_some() {
            break;
        }
    }
    assert_eq!(named, Some((1, leader::OBSERVERS_PER_ROUND_MAX)));
}

/// Issue 16, row 7: a 60-byte request from a stranger got the full model and optimizer state.
/// With `ServeState::Members` only peers seen contributing get it; `Anyone` stays the default.
#[test]
fn members_only_state_is_withheld_from_strangers() {
    let me = PeerId::from_index(1);
    let me_key = PeerKey::from_index(1);
    let member = PeerId::from_index(2);
    let stranger = PeerId::from_index(9);
    let snapshot = StateSnapshot::new(RoundId(5), vec![me, member], Arc::from(vec![3u8; 40]), 16)
        .expect("fits");
    let ask = |serve: crate::config::ServeState, from: PeerId| {
        let config = PeerConfig::builder()
            .scaled_to(Duration::from_secs(1))
            .serve_state(serve)
            .build()
            .expect("valid");
        let mut peer = Peer::resume(
            config,
            me_key.clone(),
            profile(),
            snapshot.clone(),
            Timestamp::ZERO,
        )
        .expect("resumes");
        drain(&mut peer);
        let request = Envelope::new(from, RoundId(5), Body::StateRequest(StateRequest::Manifest));
        peer.handle_message(Timestamp::ZERO, from, request);
        drain(&mut peer)
    };
    let served = |outputs: &[Output]| {
        outputs.iter().any(|o| {
            matches!(o, Output::Send { envelope, .. } if matches!(envelope.body, Body::StateManifest(_)))
        })
    };
    use crate::config::ServeState::{Anyone, Members};
    assert!(served(&ask(Anyone, stranger)));
    assert!(served(&ask(Members, member)));
    let withheld = ask(Members, stranger);
    assert!(!served(&withheld));
    assert!(withheld.iter().any(|o| matches!(o, Output::Send { to, envelope } if *to == stranger && envelope.body == Body::StateUnavailable)));
    assert!(
        withheld.iter().any(
            |o| matches!(o, Output::Event(Event::StateWithheld { peer }) if *peer == stranger)
        )
    );
    assert_eq!(PeerConfig::default().serve_state(), Anyone);
}

fn sync_target(outputs: &[Output]) -> Option<StateSummary> {
    outputs.iter().find_map(|o| match o {
        Output::Event(Event::SyncStarted { target, .. }) => Some(*target),
        _ => None,
    })
}

/// Issue 16, rows 1–2: a peer synced to the newest state that any one peer announced, so one
/// forger could pull every member into a sync of its own state. Now a member's committee
/// decides: liars outside it, or a minority of it, are not followed; a majority is.
#[test]
fn a_member_follows_its_committee_not_one_peer() {
    let (mut peer, own) = member_of(3);
    let t = Timestamp::ZERO;
    let (two, three, outsider) = (
        PeerId::from_index(2),
        PeerId::from_index(3),
        PeerId::from_index(9),
    );
    let state = |round, tag: &[u8]| StateSummary {
        round: RoundId(round),
        digest: Digest::of(tag),
    };
    announce_state(&mut peer, t, two, own, 0);
    announce_state(&mut peer, t, three, own, 0);
    // Anyone outside the committee, however far ahead.
    announce_state(&mut peer, t, outsider, state(1000, b"forged"), 0);
    assert!(!peer.is_joining());
    // One member of three: it and we are still a majority on our state, so nothing can have
    // been committed on it without us.
    announce_state(&mut peer, t, three, state(1000, b"forged by a member"), 1);
    assert!(!peer.is_joining());
    assert_eq!(sync_target(&drain(&mut peer)), None);
    // A member a round behind us is with us too (it holds nothing newer than we do).
    announce_state(&mut peer, t, two, state(4, b"one round behind"), 1);
    assert!(!peer.is_joining());
    assert_eq!(sync_target(&drain(&mut peer)), None);
    // The other member moved on too, to a different state: a tie between two members' words
    // is no majority, and the peer waits (a dishonest minority delays, it does not replace).
    let next = state(6, b"committed");
    announce_state(&mut peer, t, two, next, 2);
    assert!(!peer.is_joining());
    assert_eq!(sync_target(&drain(&mut peer)), None);
    // Both announce the same newer state: a majority of the committee vouches for it.
    announce_state(&mut peer, t, three, next, 3);
    assert!(peer.is_joining());
    assert_eq!(sync_target(&drain(&mut peer)), Some(next));
}

/// When the members who could vouch are gone, a peer still catches up: with no member of its
/// committee announcing a newer state, it takes the newest any live peer announces.
#[test]
fn a_member_whose_committee_is_gone_takes_the_newest_state() {
    let (mut peer, _) = member_of(3);
    let t = Timestamp::ZERO;
    let newer = StateSummary {
        round: RoundId(9),
        digest: Digest::of(b"held by the mesh that went on"),
    };
    announce_state(&mut peer, t, PeerId::from_index(7), newer, 0);
    assert!(peer.is_joining());
    assert_eq!(sync_target(&drain(&mut peer)), Some(newer));
}

/// A lone founder (a one-node mesh) commits each round as soon as its gradient is in: it holds
/// every part and the deciding vote. It used to wait for its next announce tick each round (one
/// round a second in the node).
#[test]
fn a_lone_founder_commits_round_after_round_without_waiting_for_a_timer() {
    let me_key = PeerKey::from_index(1);
    let initial: Arc<[u8]> = Arc::from(vec![0u8; 16]);
    let mut peer =
        Peer::new(config(), me_key, profile(), Some(initial), Timestamp::ZERO).expect("fits");
    drain(&mut peer);
    peer.handle_gradient(Timestamp::ZERO, 8, Arc::from(vec![0.5f32; 4]));
    // Past the discovery window, once; from then on no timer fires.
    let t = peer.poll_timeout().expect("timer");
    peer.handle_timeout(t);
    let mut committed = Vec::new();
    let mut outputs: VecDeque<Output> = drain(&mut peer).into();
    while let Some(output) = outputs.pop_front() {
        match output {
            Output::ApplyRound(result) if result.round < RoundId(5) => {
                committed.push(result.round);
                peer.handle_state(t, result.round, Arc::from(vec![1u8; 16]))
                    .expect("fits");
            }
            Output::ComputeGradient { .. } => {
                peer.handle_gradient(t, 8, Arc::from(vec![0.5f32; 4]));
            }
            _ => {}
        }
        outputs.extend(drain(&mut peer));
    }
    assert_eq!(committed, (1..5).map(RoundId).collect::<Vec<_>>());
}

/// Runs a member of the committee {1, …, 5} whose only live fellow is peer 2 (announcing
/// `fellow(now)` every 100 ms, well within the peer TTL) for `secs` seconds of timers; returns its events with
/// their times, and the peer.
fn cut_off(
    config: PeerConfig,
    secs: u64,
    fellow: impl Fn(StateSummary, Timestamp) -> StateSummary,
) -> (Peer, StateSummary, Vec<(Timestamp, Event)>) {
    let (mut peer, own) = member_with(5, config);
    let two = PeerId::from_index(2);
    let mut events = Vec::new();
    let (mut t, mut next_announce, mut seq) = (Timestamp::ZERO, Timestamp::ZERO, 0);
    let end = Timestamp::ZERO + Duration::from_secs(secs);
    let mut timers = 0;
    while t < end {
        if next_announce <= t {
            announce_state(&mut peer, t, two, fellow(own, t), seq);
            seq += 1;
            next_announce = t + Duration::from_millis(100);
        }
        let timer = peer.poll_timeout().expect("always a timer");
        let next = timer.min(next_announce);
        assert!(next >= t, "a timer in the past");
        t = next;
        if timer <= t {
            timers += 1;
            peer.handle_timeout(t);
        }
        for output in drain(&mut peer) {
            match output {
                Output::Event(e) => events.push((t, e)),
                Output::ComputeGradient { .. } => {
                    peer.handle_gradient(t, 8, Arc::from(vec![0.5f32; 4]));
                }
                _ => {}
            }
        }
    }
    // No busy loop: the committee deadline is not returned again once looked at.
    assert!(timers < 200 * secs, "{timers} timers in {secs} s");
    (peer, own, events)
}

fn refounded(events: &[(Timestamp, Event)]) -> Vec<(Timestamp, StateSummary, usize, bool)> {
    events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Refounded {
                to,
                quorum,
                adopted,
                ..
            } => Some((*t, *to, *quorum, *adopted)),
            _ => None,
        })
        .collect()
}

fn refounding(after: Duration) -> PeerConfig {
    PeerConfig::builder()
        .scaled_to(Duration::from_secs(1))
        .refound_after(Some(after))
        .build()
        .expect("valid")
}

/// Issue 18, item 3: 3 of a committee of 5 gone. The peer reports it once after two round
/// timeouts; configured to, it re-founds its state in epoch 1 once the setting's time has
/// passed, with its live fellow holding the same state as co-founder (quorum 2 of 2).
#[test]
fn a_peer_cut_off_from_its_committee_reports_it_and_refounds_when_told_to() {
    let (peer, own, events) = cut_off(refounding(Duration::from_secs(4)), 10, |own, _| own);
    let lost: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::CommitteeLost { .. }))
        .collect();
    assert_eq!(lost.len(), 1, "reported once: {events:?}");
    assert!(
        matches!(
            lost[0].1,
            Event::CommitteeLost {
                live: 2,
                committee: 5
            }
        ),
        "{events:?}"
    );
    let done = refounded(&events);
    assert_eq!(done.len(), 1, "{done:?}");
    let (at, to, quorum, adopted) = done[0];
    assert!(at >= Timestamp::ZERO + Duration::from_secs(4), "{at}");
    assert!(at <= Timestamp::ZERO + Duration::from_secs(5), "{at}");
    assert_eq!(
        (to.round, to.round.epoch(), to.round.count()),
        (RoundId(5).next_epoch(), 1, 5)
    );
    assert_eq!((quorum, adopted), (2, false));
    // The same bytes re-founded the same way by every holder: no committee, a fresh digest.
    assert_eq!(peer.state(), Some(to));
    assert_ne!(to.digest, own.digest);
    assert!(peer.state_committee().is_empty());
    assert_eq!(format!("{}", to.round), "r5/e1");
}

/// Without the setting the peer only reports the lost committee, once, and waits: a mesh
/// halts (safely) until its members return or an operator re-founds it.
#[test]
fn without_the_setting_a_cut_off_peer_reports_and_waits() {
    let (peer, own, events) = cut_off(config(), 20, |own, _| own);
    let lost = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::CommitteeLost { .. }))
        .count();
    assert_eq!(lost, 1);
    assert!(refounded(&events).is_empty());
    assert_eq!(peer.state(), Some(own));
}

/// A cut-off peer without the setting follows a live fellow that re-founded the state it holds
/// (the operator set the flag on that one), without fetching a byte.
#[test]
fn a_cut_off_peer_adopts_a_fellows_refounding_of_its_state() {
    let at = Timestamp::ZERO + Duration::from_secs(3);
    let (peer, _, events) = cut_off(config(), 6, |own, t| {
        if t < at {
            return own;
        }
        let bytes = Arc::from(vec![3u8; 40]);
        let committee = (1..=5).map(PeerId::from_index).collect();
        let snapshot = StateSnapshot::new(RoundId(5), committee, bytes, 16).expect("fits");
        snapshot.refounded().summary()
    });
    let done = refounded(&events);
    assert_eq!(done.len(), 1, "{done:?}");
    let (when, to, quorum, adopted) = done[0];
    assert!(when >= at && when < at + Duration::from_secs(1), "{when}");
    assert_eq!((to.round.epoch(), quorum, adopted), (1, 2, true));
    assert_eq!(peer.state(), Some(to));
}

/// A survivor that missed the last commit does not re-found its older state while a live
/// fellow announces a newer one: it would give the mesh two different epoch-1 states.
#[test]
fn a_cut_off_peer_behind_a_live_fellow_does_not_refound() {
    let newer = StateSummary {
        round: RoundId(6),
        digest: Digest::of(b"committed while we were voting"),
    };
    let (_, _, events) = cut_off(refounding(Duration::from_secs(2)), 8, |_, _| newer);
    assert!(refounded(&events).is_empty(), "{events:?}");
}

/// The mesh a member of {1, 2, 3} at round 5 comes back to: it went on under {2, 3, 4}
/// (round 8), {3, 4, 5} (10) and {4, 5, 6} (15, the mesh's state), and seven fresh identities
/// announce a forged state far ahead, each attesting it.
struct Returning {
    lineage: Vec<LineageLink>,
    mesh: StateSnapshot,
    forged: StateSnapshot,
    crowd: Vec<u64>,
}

fn seals_by(state: StateSummary, by: &[u64]) -> Vec<Seal> {
    by.iter()
        .map(|i| PeerKey::from_index(*i).seal_state(state.round, state.digest))
        .collect()
}

impl Returning {
    fn new() -> Self {
        let snapshot = |round: u64, members: &[u64], fill: u8| {
            let committee = members.iter().map(|i| PeerId::from_index(*i)).collect();
            let bytes = Arc::from(vec![fill; 40]);
            StateSnapshot::new(
                RoundId(round),
                committee,
                bytes,
                config().state_chunk_bytes(),
            )
            .expect("fits")
        };
        let link = |s: &StateSnapshot, by: &[u64]| LineageLink {
            round: s.summary().round,
            content: s.content(),
            committee: s.committee().to_vec(),
            attestations: seals_by(s.summary(), by),
        };
        Self {
            lineage: vec![
                link(&snapshot(8, &[2, 3, 4], 8), &[2, 3, 4]),
                link(&snapshot(10, &[3, 4, 5], 10), &[3, 4, 5]),
            ],
            mesh: snapshot(15, &[4, 5, 6], 15),
            forged: snapshot(2000, &[20], 0),
            crowd: (20..27).collect(),
        }
    }

    fn in_crowd(&self, peer: PeerId) -> bool {
        self.crowd.iter().any(|i| PeerId::from_index(*i) == peer)
    }

    /// The honest peers announce the mesh's state, the crowd the forged one.
    fn announce(&self, peer: &mut Peer, now: Timestamp, seq: u64) {
        for i in [4, 5, 6] {
            announce_state(peer, now, PeerId::from_index(i), self.mesh.summary(), seq);
        }
        for &i in &self.crowd {
            announce_state(peer, now, PeerId::from_index(i), self.forged.summary(), seq);
        }
    }

    /// What `donor` answers: the crowd its forged state with its own attestations; the honest
    /// peers the mesh's, donor 4 without the lineage, 5 and 6 with it.
    fn serve(&self, donor: PeerId, round: RoundId, request: StateRequest) -> Body {
        let crowd_member = self.in_crowd(donor);
        let (state, attesters) = if crowd_member {
            (&self.forged, self.crowd.as_slice())
        } else {
            (&self.mesh, &[4, 5, 6][..])
        };
        if state.summary().round != round {
            return Body::StateUnavailable;
        }
        let mut body = state.serve(request);
        if let Body::StateManifest(manifest) = &mut body {
            manifest.attestations = seals_by(state.summary(), attesters);
            if !crowd_member && donor != PeerId::from_index(4) {
                manifest.lineage.clone_from(&self.lineage);
            }
        }
        body
    }

    /// Drives `peer`'s syncs (firing its timers when nothing is in flight, announcing again
    /// after each) until it loads a state: that state, the donors dropped and when.
    fn sync(
        &self,
        peer: &mut Peer,
    ) -> (Option<StateSummary>, Vec<(PeerId, DonorFault)>, Timestamp) {
        let (mut faults, mut now) = (Vec::new(), Timestamp::ZERO);
        self.announce(peer, now, 0);
        for seq in 1..200 {
            let mut replies = Vec::new();
            for output in drain(peer) {
                match output {
                    Output::Send { to, envelope } => {
                        if let Body::StateRequest(request) = envelope.body {
                            let body = self.serve(to, envelope.round, request);
                            replies.push(Envelope::new(to, envelope.round, body));
                        }
                    }
                    Output::Event(Event::DonorDropped { peer, fault }) => {
                        faults.push((peer, fault));
                    }
                    Output::LoadState(snapshot) => {
                        return (Some(snapshot.summary()), faults, now);
                    }
                    _ => {}
                }
            }
            if replies.is_empty() {
                let Some(next) = peer.poll_timeout() else {
                    break;
                };
                now = next;
                peer.handle_timeout(now);
                self.announce(peer, now, seq);
            }
            for reply in replies {
                peer.handle_message(now, reply.sender, reply);
            }
        }
        (None, faults, now)
    }
}

/// Issue 16, certified states: a member whose committee was replaced member by member while it
/// was away, among more fresh identities than honest peers (a crowd announcing and attesting a
/// forged state), follows the mesh along the lineage its donor serves and fetches nothing the
/// crowd vouches for. A manifest of the mesh's state without the lineage vouches for nothing
/// either: the member's committee attested none of it.
#[test]
fn a_member_whose_committee_was_replaced_follows_the_lineage_not_a_crowd() {
    let (mut peer, own) = member_of(3);
    let returning = Returning::new();
    let (loaded, faults, at) = returning.sync(&mut peer);
    assert_eq!(loaded, Some(returning.mesh.summary()), "faults: {faults:?}");
    assert_ne!(peer.state(), Some(own));
    // Every crowd donor was refused as unvouched, and so was the honest donor without lineage.
    let unvouched: BTreeSet<PeerId> = faults
        .iter()
        .filter(|(_, f)| *f == DonorFault::Unvouched)
        .map(|(p, _)| *p)
        .collect();
    assert!(
        returning
            .crowd
            .iter()
            .all(|i| unvouched.contains(&PeerId::from_index(*i))),
        "{faults:?}"
    );
    assert!(unvouched.contains(&PeerId::from_index(4)), "{faults:?}");
    // Stuck for long enough, the member would take the crowd's word (the liveness backstop);
    // it was not stuck: it followed its committee's successors within two round timeouts.
    assert!(
        at < Timestamp::ZERO + config().round_timeout() * 2,
        "took until {at:?}"
    );
}
