//! Peers that do not read their announcements. gossipsub reports, once per heartbeat, a peer
//! whose send queue was full (messages to it dropped); a peer reported without a break for
//! [`SLOW_PEER_GRACE`] is stuck (stopped, or not reading) and the swarm loop disconnects it, so
//! its queue goes away and a fresh connection starts empty once it reads again.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long a peer may leave its announcement queue full before it is disconnected.
pub(super) const SLOW_PEER_GRACE: Duration = Duration::from_secs(5);
/// An episode ends when gossipsub has not reported the peer for this long (two heartbeats).
const QUIET: Duration = Duration::from_secs(2);

/// A run of reports about one peer.
#[derive(Debug, Clone, Copy)]
struct Episode {
    since: Instant,
    last: Instant,
    dropped: u64,
}

/// The episodes under way, by peer.
#[derive(Debug)]
pub(super) struct SlowPeers<P> {
    episodes: HashMap<P, Episode>,
}

impl<P> Default for SlowPeers<P> {
    fn default() -> Self {
        Self {
            episodes: HashMap::new(),
        }
    }
}

impl<P: Eq + Hash> SlowPeers<P> {
    /// gossipsub reported `peer` at `now` with `dropped` messages: the messages dropped in its
    /// episode when the episode has lasted [`SLOW_PEER_GRACE`] (the peer is to be disconnected;
    /// the episode ends), else `None`. A report after a quiet spell starts a new episode.
    pub(super) fn report(&mut self, peer: P, now: Instant, dropped: u64) -> Option<u64> {
        let fresh = Episode {
            since: now,
            last: now,
            dropped: 0,
        };
        match self.episodes.entry(peer) {
            Entry::Vacant(vacant) => {
                vacant.insert(Episode { dropped, ..fresh });
                None
            }
            Entry::Occupied(mut occupied) => {
                let episode = occupied.get_mut();
                if now.duration_since(episode.last) >= QUIET {
                    *episode = fresh;
                }
                episode.last = now;
                episode.dropped = episode.dropped.saturating_add(dropped);
                if now.duration_since(episode.since) < SLOW_PEER_GRACE {
                    return None;
                }
                Some(occupied.remove().dropped)
            }
        }
    }

    /// Forgets episodes gossipsub has stopped reporting (it reports once per heartbeat while
    /// the queue stays full), so the map holds only peers that are slow now.
    pub(super) fn expire(&mut self, now: Instant) {
        self.episodes
            .retain(|_, e| now.duration_since(e.last) < QUIET);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_secs(1);

    #[test]
    fn a_peer_reported_every_heartbeat_for_the_grace_is_named_once_with_its_drops() {
        let mut slow = SlowPeers::default();
        let t0 = Instant::now();
        let mut named = Vec::new();
        for beat in 0..12 {
            let now = t0 + BEAT * beat;
            slow.expire(now);
            if let Some(dropped) = slow.report("stuck", now, 100) {
                named.push((beat, dropped));
            }
        }
        // Named at the fifth second with the six reports' drops; a new episode then begins,
        // named again five seconds later: one warning per episode, not one per message.
        assert_eq!(named, vec![(5, 600), (11, 600)]);
    }

    #[test]
    fn a_peer_that_catches_up_between_reports_is_never_named() {
        let mut slow = SlowPeers::default();
        let t0 = Instant::now();
        for beat in [0, 3, 6, 9, 12, 15] {
            let now = t0 + BEAT * beat;
            slow.expire(now);
            assert_eq!(slow.report("busy", now, 10), None, "second {beat}");
        }
        slow.expire(t0 + BEAT * 20);
        assert!(slow.episodes.is_empty());
    }
}
