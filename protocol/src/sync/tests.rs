//! State transfer against honest, corrupting, forgetful and silent donors.

use std::time::Duration;

use super::*;
use crate::ids::RoundId;

#[derive(Clone, Copy, PartialEq)]
enum Donor {
    Honest,
    CorruptsChunks,
    LiesAboutManifest,
    Forgot,
    Silent,
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
    let mut sync = StateSync::start(&config(), snapshot.summary(), ids.clone(), now);
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

#[test]
fn fetches_from_several_honest_donors() {
    let outputs = run(&[Donor::Honest, Donor::Honest, Donor::Honest]);
    assert_eq!(done(&outputs), Some(&state()));
    let askers: BTreeSet<PeerId> = outputs
        .iter()
        .filter_map(|o| match o {
            SyncOutput::Send {
                to,
                body: Body::StateRequest(StateRequest::Chunk(_)),
            } => Some(*to),
            _ => None,
        })
        .collect();
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
