//! What a peer machine asks of its shell, and what it reports.

use crate::ids::{Digest, PeerId, RoundId};
use crate::reduce::{AbortReason, RejectReason, RoundResult};
use crate::roster::RosterError;
use crate::sync::{DonorFault, StateSnapshot};
use serde::{Deserialize, Serialize};

use crate::wire::{Envelope, Role, StateSummary, VoteLock};

/// An action for the shell. Drain with [`super::Peer::poll_output`] after every input.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send to one peer over the direct frame protocol.
    Send {
        /// Recipient.
        to: PeerId,
        /// Message.
        envelope: Envelope,
    },
    /// Publish to every peer over gossip (announcements only).
    Broadcast {
        /// Message.
        envelope: Envelope,
    },
    /// Compute a gradient on the current state; answer with [`super::Peer::handle_gradient`].
    ComputeGradient {
        /// The round it is for (informational: a gradient stays valid while the state does).
        round: RoundId,
    },
    /// Replace the local state with this verified snapshot (parameters and optimizer state).
    LoadState(StateSnapshot),
    /// Apply this committed average (optimizer step), then report the new state with
    /// [`super::Peer::handle_state`].
    ApplyRound(RoundResult),
    /// Something worth logging or counting; requires no action.
    Event(Event),
    /// Make this record durable before carrying out the outputs after it: they announce or
    /// cast the promises it holds. Hand it back with [`super::Peer::resume_with_promise`] when
    /// restarting from a checkpoint, so the peer keeps them (docs/protocol.md §5.2).
    Persist(Promise),
}

/// What a peer has promised the mesh and must keep across a restart: the rounds it will never
/// start again (every round below `next_round`) and its last vote on a state (`lock`: the
/// state voted on and the vote), which binds its later votes on that state (§5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    /// The peer never starts a round below this one.
    pub next_round: RoundId,
    /// The state its last vote was cast on, and that vote.
    pub lock: Option<(StateSummary, VoteLock)>,
}

/// Observable protocol events.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// This peer accepted a roster.
    RoundStarted {
        /// Round.
        round: RoundId,
        /// Our role.
        role: Role,
        /// Contributors in the roster.
        contributors: usize,
        /// Members in the roster (contributors and observers).
        members: usize,
    },
    /// The round committed this result.
    RoundCommitted {
        /// Round.
        round: RoundId,
        /// Result digest.
        digest: Digest,
        /// Contributors whose gradients it averages (in at least one span).
        contributors: usize,
    },
    /// The round ended without a result; the state is unchanged.
    RoundAborted {
        /// Round.
        round: RoundId,
        /// Why.
        reason: AbortReason,
    },
    /// The mesh committed a result this peer does not hold; it will resync.
    Diverged {
        /// Round.
        round: RoundId,
        /// The committed digest.
        committed: Digest,
    },
    /// A message from `peer` was refused.
    Rejected {
        /// Sender.
        peer: PeerId,
        /// Round of the message.
        round: RoundId,
        /// Why.
        reason: RejectReason,
    },
    /// A roster proposal from `peer` was malformed.
    BadProposal {
        /// Proposer.
        peer: PeerId,
        /// Round.
        round: RoundId,
        /// The violated rule.
        error: RosterError,
    },
    /// A message's claimed sender differs from the transport's authenticated peer.
    Impersonation {
        /// Authenticated transport peer.
        peer: PeerId,
        /// Claimed sender.
        claimed: PeerId,
    },
    /// This peer needs the mesh's state and started fetching it.
    SyncStarted {
        /// The target state.
        target: StateSummary,
        /// Donors.
        donors: usize,
    },
    /// A state donor was dropped.
    DonorDropped {
        /// Donor.
        peer: PeerId,
        /// Why.
        fault: DonorFault,
    },
    /// Every donor failed. The peer does not fetch that state for a round timeout: it fetches
    /// another, or trains on its own state if it holds one.
    SyncFailed {
        /// The target state.
        target: StateSummary,
    },
    /// The shell could not load a synced state ([`super::Peer::handle_state_refused`]); the
    /// peer went back to the state it held before and will not fetch this one for a while.
    StateRefused {
        /// The refused state.
        state: StateSummary,
    },
    /// A joiner that holds a state found nothing newer to fetch and trains on its own again.
    ResumedOwnState,
    /// A peer not seen contributing asked for our state and was told it is unavailable
    /// ([`crate::config::ServeState::Members`]).
    StateWithheld {
        /// The peer that asked.
        peer: PeerId,
    },
    /// For a few round timeouts this peer has heard from no strict majority of its state's
    /// committee (reported once per such episode): no round can commit on that state until
    /// enough of them return, or until the mesh is re-founded (docs/protocol.md §5.6).
    CommitteeLost {
        /// Members of the committee heard from, this peer included.
        live: usize,
        /// Members of the committee.
        committee: usize,
    },
    /// This peer re-founded its state in the next epoch (docs/protocol.md §5.6): the same
    /// bytes, no committee; the next round needs `quorum` contributors. `adopted`: another
    /// peer re-founded first and this peer, equally cut off from its committee, followed.
    Refounded {
        /// The state held before.
        from: StateSummary,
        /// The re-founded state.
        to: StateSummary,
        /// Peers holding the state when it was re-founded, this peer included.
        founders: usize,
        /// Contributors the first round of the new epoch needs.
        quorum: usize,
        /// Whether it followed another peer's re-founding.
        adopted: bool,
    },
    /// This peer proposed the roster of a round.
    Proposed {
        /// Round.
        round: RoundId,
        /// Contributors named.
        contributors: usize,
        /// Observers named.
        observers: usize,
    },
}
