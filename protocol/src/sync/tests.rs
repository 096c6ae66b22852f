//! State transfer against honest, corrupting, forgetful and silent donors.

use std::time::Duration;

use super::*;
use crate::ids::RoundId;
use crate::keys::PeerKey;

#[derive(Clone, Copy, PartialEq)]
enum Donor {
    Honest,
    CorruptsChunks,
    LiesAboutManifest,
    Forgot,
    Silent,
    /// Serves the state honestly but without the attestations that vouch for it.
    Unattested,
    /// Forwards an attestation that does not verify.
    ForgesAttestation,
}

/// The joiner's committee: peers 7, 8 and 10, so two must attest (9 is a stranger to it).
fn vouchers() -> Vouchers {
    Vouchers {
        committees: vec![([7, 8, 10].map(PeerId::from_index).into(), 3)],
        witnesses: BTreeSet::new(),
        witnessed_until: RoundId(0),
        backstop: false,
        chain: None,
        live: BTreeSet::new(),
        genesis_quorum: 0,
        held_round: RoundId(0),
    }
}

fn config() -> PeerConfig {
    PeerConfig::builder()
        .state_chunk_bytes(64)
        .build()
        .expect("valid")
}

fn state() -> StateSnapshot {
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    StateSnapshot::new(RoundId(4), vec![PeerId::from_index(7)], bytes.into(), 64).expect("fits")
}

/// Runs a sync against `donors` until it finishes; returns its outputs.
fn run(donors: &[Donor]) -> Vec<SyncOutput> {
    let snapshot = state();
    let ids: Vec<PeerId> = (0..donors.len() as u64).map(PeerId::from_index).collect();
    let mut now = Timestamp::ZERO;
    let target = snapshot.summary();
    let mut sync = StateSync::start(&config(), target, vouchers(), ids.clone(), now);
    let attest = |i: u64| PeerKey::from_index(i).seal_state(target.round, target.digest);
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let Some(out) = sync.poll_output() else {
            match sync.poll_timeout() {
                Some(t) => {
                    now = t;
                    sync.handle_timeout(now);
                    continue;
                }
                None => return seen,
            }
        };
        if let SyncOutput::Send {
            to,
            body: Body::StateRequest(req),
        } = &out
        {
            let kind = donors[ids.iter().position(|p| p == to).expect("donor")];
            let reply = match (kind, snapshot.serve(*req)) {
                (Donor::Silent, _) => None,
                (Donor::Forgot, _) => Some(Body::StateUnavailable),
                (Donor::CorruptsChunks, Body::StateChunk(mut c)) => {
                    let mut data = c.data.to_vec();
                    data[0] ^= 1;
                    c.data = data.into();
                    Some(Body::StateChunk(c))
                }
                (Donor::LiesAboutManifest, Body::StateManifest(mut m)) => {
                    m.chunks[0] = Digest::of(b"forged");
                    Some(Body::StateManifest(m))
                }
                (Donor::Unattested, Body::StateManifest(mut m)) => {
                    // Only one of the two committee members and a stranger: no majority.
                    m.attestations = vec![attest(7), attest(9)];
                    Some(Body::StateManifest(m))
                }
                (Donor::ForgesAttestation, Body::StateManifest(mut m)) => {
                    let mut forged = attest(8);
                    forged.s[3] ^= 1;
                    m.attestations = vec![attest(7), forged];
                    Some(Body::StateManifest(m))
                }
                (_, Body::StateManifest(mut m)) => {
                    m.attestations = vec![attest(9), attest(8), attest(7)];
                    Some(Body::StateManifest(m))
                }
                (_, body) => Some(body),
            };
            if let Some(reply) = reply {
                sync.handle_message(now, *to, reply);
            }
        }
        seen.push(out);
    }
    panic!("sync did not finish");
}

fn done(outputs: &[SyncOutput]) -> Option<&StateSnapshot> {
    outputs.iter().find_map(|o| match o {
        SyncOutput::Done(s) => Some(s),
        _ => None,
    })
}

fn dropped(outputs: &[SyncOutput]) -> Vec<(PeerId, DonorFault)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            SyncOutput::DonorDropped { peer, fault } => Some((*peer, *fault)),
            _ => None,
        })
        .collect()
}

/// The donors asked for chunks.
fn chunk_askers(outputs: &[SyncOutput]) -> BTreeSet<PeerId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            SyncOutput::Send {
                to,
                body: Body::StateRequest(StateRequest::Chunk(_)),
            } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn fetches_from_several_honest_donors() {
    let outputs = run(&[Donor::Honest, Donor::Honest, Donor::Honest]);
    assert_eq!(done(&outputs), Some(&state()));
    let askers = chunk_askers(&outputs);
    assert_eq!(askers.len(), 3, "chunks come from every donor");
}

#[test]
fn bad_donors_are_dropped_and_named_and_the_state_still_arrives() {
    let outputs = run(&[
        Donor::LiesAboutManifest,
        Donor::CorruptsChunks,
        Donor::Forgot,
        Donor::Silent,
        Donor::Honest,
    ]);
    assert_eq!(done(&outputs), Some(&state()));
    let faults = dropped(&outputs);
    assert!(faults.contains(&(PeerId::from_index(0), DonorFault::BadManifest)));
    assert!(
        faults
            .iter()
            .any(|(p, f)| *p == PeerId::from_index(1) && matches!(f, DonorFault::BadChunk(_)))
    );
    assert!(faults.contains(&(PeerId::from_index(2), DonorFault::Unavailable)));
    assert!(faults.contains(&(PeerId::from_index(3), DonorFault::Timeout)));
}

/// A state is fetched only once more of the joiner's committee attested it than a dishonest
/// minority can count; a donor forwarding a forged attestation lied, one without enough
/// attestations did not.
#[test]
fn a_state_without_a_committee_majority_of_attestations_is_not_fetched() {
    let outputs = run(&[Donor::Unattested, Donor::ForgesAttestation, Donor::Honest]);
    assert_eq!(done(&outputs), Some(&state()));
    let faults = dropped(&outputs);
    assert!(faults.contains(&(PeerId::from_index(0), DonorFault::Unvouched)));
    assert!(faults.contains(&(PeerId::from_index(1), DonorFault::BadAttestation)));

    assert_eq!(chunk_askers(&outputs), [PeerId::from_index(2)].into());
    let outputs = run(&[Donor::Unattested]);
    assert!(done(&outputs).is_none(), "nobody vouched for the state");
}

#[test]
fn committees_and_live_peers_vouch_by_their_own_thresholds() {
    let target = state().summary();
    let seal = |i: u64| PeerKey::from_index(i).seal_state(target.round, target.digest);
    let live = Vouchers {
        committees: Vec::new(),
        witnesses: BTreeSet::new(),
        witnessed_until: RoundId(0),
        backstop: false,
        chain: None,
        live: [1, 2, 3].map(PeerId::from_index).into(),
        genesis_quorum: 0,
        held_round: RoundId(0),
    };
    assert_eq!(live.check(target, &[], &[seal(1), seal(2)]), Ok(true));
    // One live peer vouching for itself (a forger's own state) is not enough; repeating a
    // seal counts once; a seal by a peer the joiner does not hear counts for nothing.
    assert_eq!(
        live.check(target, &[], &[seal(1), seal(1), seal(4)]),
        Ok(false)
    );
    // A committee of 4 without the joiner's own vote: two members are more than a dishonest
    // minority (at most one of 4); one is not.
    let committee = Vouchers {
        committees: vec![([1, 2, 3].map(PeerId::from_index).into(), 4)],
        witnesses: BTreeSet::new(),
        witnessed_until: RoundId(0),
        backstop: false,
        chain: None,
        live: BTreeSet::new(),
        genesis_quorum: 0,
        held_round: RoundId(0),
    };
    assert_eq!(committee.check(target, &[], &[seal(1), seal(3)]), Ok(true));
    assert_eq!(committee.check(target, &[], &[seal(2)]), Ok(false));
    // One voter of a result the joiner saw decided on its state vouches for its apply.
    let witnessed = Vouchers {
        witnesses: [5, 6].map(PeerId::from_index).into(),
        witnessed_until: target.round,
        ..committee.clone()
    };
    assert_eq!(witnessed.check(target, &[], &[seal(6)]), Ok(true));
    assert_eq!(witnessed.check(target, &[], &[seal(2)]), Ok(false));
    let too_far = Vouchers {
        witnessed_until: RoundId(target.round.0 - 1),
        ..witnessed.clone()
    };
    assert_eq!(too_far.check(target, &[], &[seal(6)]), Ok(false));
    // A founder on the initial state with a genesis quorum of 1: one live attester suffices.
    let founder = Vouchers {
        genesis_quorum: 1,
        ..live.clone()
    };
    assert_eq!(founder.check(target, &[], &[seal(1)]), Ok(true));
    assert_eq!(founder.check(target, &[], &[seal(4)]), Ok(false));
    // A target whose committee {1, 2} holds a majority of the joiner's {0, 1, 2}: it may
    // descend from the joiner's state, so one of {1, 2} (f + 1 of 2) vouches — the joiner's
    // other committee member died, the survivor committed on; {2, 9} holds no majority.
    let heir = Vouchers {
        chain: Some((
            PeerId::from_index(0),
            [0, 1, 2].map(PeerId::from_index).into(),
        )),
        ..Vouchers::default()
    };
    let (p1, p2, p9) = (
        PeerId::from_index(1),
        PeerId::from_index(2),
        PeerId::from_index(9),
    );
    assert_eq!(heir.check(target, &[p1, p2], &[seal(2)]), Ok(true));
    assert_eq!(heir.check(target, &[p2, p9], &[seal(2)]), Ok(false));
}

/// The liveness backstop, and whom nothing vouches for.
#[test]
fn a_stuck_joiner_takes_two_live_attesters_and_nobody_vouches_alone() {
    let target = state().summary();
    let seal = |i: u64| PeerKey::from_index(i).seal_state(target.round, target.digest);
    // Seven live peers, two attest: not a majority, unless the joiner is stuck (backstop);
    // one attester vouches for nothing even then.
    let seven = Vouchers {
        live: (1..=7).map(PeerId::from_index).collect(),
        ..Vouchers::default()
    };
    assert_eq!(seven.check(target, &[], &[seal(1), seal(2)]), Ok(false));
    let stuck = Vouchers {
        backstop: true,
        ..seven
    };
    assert_eq!(stuck.check(target, &[], &[seal(1), seal(2)]), Ok(true));
    assert_eq!(stuck.check(target, &[], &[seal(1)]), Ok(false));
    // Nobody to vouch: a joiner that hears no peer fetches nothing.
    assert_eq!(
        Vouchers::default().check(target, &[], &[seal(1)]),
        Ok(false)
    );
    // A seal over another state is a lie, whoever forwards it.
    let other = PeerKey::from_index(2).seal_state(target.round.next(), target.digest);
    assert_eq!(
        stuck.check(target, &[], &[seal(1), other]),
        Err(DonorFault::BadAttestation)
    );
}

/// A joiner whose committee was replaced member by member follows the lineage committee by
/// committee; a link its trusted committee did not attest, or a forged one, leads nowhere.
#[test]
fn a_lineage_chains_a_replaced_committee_to_the_state_and_nothing_else() {
    let ids = |members: &[u64]| -> Vec<PeerId> {
        members.iter().map(|i| PeerId::from_index(*i)).collect()
    };
    let link = |round: u64, members: &[u64], attesters: &[u64]| {
        let committee = ids(members);
        let content = Digest::of(&round.to_le_bytes());
        let digest = state_digest(content, &committee);
        let attestations = attesters
            .iter()
            .map(|i| PeerKey::from_index(*i).seal_state(RoundId(round), digest))
            .collect();
        LineageLink {
            round: RoundId(round),
            content,
            committee,
            attestations,
        }
    };
    // The joiner 0 holds round 3 under {0, 1, 2}; the mesh went on under {1, 2, 3} (round 5),
    // {3, 4, 2} (8) and {3, 4, 5} (12), which holds the target of round 15.
    let joiner = Vouchers {
        chain: Some((PeerId::from_index(0), ids(&[0, 1, 2]).into_iter().collect())),
        held_round: RoundId(3),
        ..Vouchers::default()
    };
    let lineage = vec![
        link(5, &[1, 2, 3], &[1, 2, 3]),
        link(8, &[3, 4, 2], &[3, 4, 2]),
        link(12, &[3, 4, 5], &[3, 4, 5]),
    ];
    let target = StateSummary {
        round: RoundId(15),
        digest: Digest::of(b"target"),
    };
    let seal = |i: u64| PeerKey::from_index(i).seal_state(target.round, target.digest);
    // Rule by rule, {3, 4, 5} is nobody the joiner trusts.
    assert_eq!(
        joiner.check(target, &ids(&[3, 4, 5]), &[seal(4), seal(5)]),
        Ok(false)
    );
    assert_eq!(
        joiner.chains(target, &[seal(4), seal(5)], &lineage),
        Ok(true)
    );
    // One attester of {3, 4, 5} is a dishonest minority's word.
    assert_eq!(joiner.chains(target, &[seal(5)], &lineage), Ok(false));
    // A link only one of the trusted committee attested breaks the chain there.
    let mut weak = lineage.clone();
    weak[1] = link(8, &[3, 4, 2], &[4]);
    assert_eq!(joiner.chains(target, &[seal(4), seal(5)], &weak), Ok(false));
    // A forger's own committee: links it attests itself are attested by nobody trusted.
    let forged = vec![link(9, &[7, 8, 9], &[7, 8, 9])];
    let forged_seals: Vec<Seal> = [7, 8].map(seal).to_vec();
    assert_eq!(joiner.chains(target, &forged_seals, &forged), Ok(false));
    // A link that claims another committee than the one its attesters signed does not verify.
    let mut swapped = lineage.clone();
    swapped[0].committee = ids(&[1, 2, 7]);
    assert_eq!(
        joiner.chains(target, &[seal(4), seal(5)], &swapped),
        Err(DonorFault::BadAttestation)
    );
    // Links the joiner is past say nothing new; without a committee, nothing chains.
    let ahead = Vouchers {
        held_round: RoundId(12),
        ..joiner.clone()
    };
    assert_eq!(
        ahead.chains(target, &[seal(4), seal(5)], &lineage),
        Ok(false)
    );
    assert_eq!(
        Vouchers::default().chains(target, &[seal(4), seal(5)], &lineage),
        Ok(false)
    );
}

#[test]
fn fails_when_no_donor_is_honest() {
    let outputs = run(&[Donor::CorruptsChunks, Donor::Silent]);
    assert!(done(&outputs).is_none());
    assert_eq!(outputs.last(), Some(&SyncOutput::Failed));
}

#[test]
fn snapshot_digest_depends_on_every_byte() {
    let a = state();
    let mut bytes = a.bytes().to_vec();
    bytes[999] ^= 0x80;
    let b = StateSnapshot::new(RoundId(4), vec![PeerId::from_index(7)], bytes.into(), 64)
        .expect("fits");
    assert_ne!(a.summary().digest, b.summary().digest);
    assert_eq!(a.serve(StateRequest::Chunk(99)), Body::StateUnavailable);
    let _ = Duration::ZERO;
}
