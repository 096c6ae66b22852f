//! The runner's state and its transitions, one small handler per input.

use super::{RoundRecord, RoundRunner, RunMsg, RunTimer, groups};
use crate::churn::Transition;
use crate::collective::{self, Algorithm, CollectiveMsg, Executor};
use crate::engine::Outbox;
use crate::net::{Delivered, PeerIdx};
use crate::scenario::Topology;
use crate::time::SimTime;
use rand::Rng;
use std::collections::BTreeMap;

type Out = Outbox<RunMsg, RunTimer>;

const NO_GROUP: u32 = u32::MAX;

/// What the runner knows about one peer.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerState {
    is_up: bool,
    is_synced: bool,
    is_cut: bool,
    resync_from: Option<PeerIdx>,
    group: u32,
    /// Computed its gradient for the current round (reset at every round start).
    is_ready: bool,
}

impl Default for PeerState {
    fn default() -> Self {
        Self {
            is_up: true,
            is_synced: true,
            is_cut: false,
            resync_from: None,
            group: NO_GROUP,
            is_ready: false,
        }
    }
}

impl PeerState {
    const fn is_eligible(&self) -> bool {
        self.is_up && self.is_synced && !self.is_cut
    }
}

#[derive(Debug)]
struct Group {
    members: Vec<PeerIdx>,
    /// Members whose `is_ready` is set: O(1) barrier checks at 10,000 members.
    ready: usize,
    exec: Option<Executor>,
    is_done: bool,
}

/// The round in progress.
#[derive(Debug)]
pub(super) struct RoundState {
    index: u32,
    started_at: SimTime,
    participants: u32,
    groups: Vec<Group>,
    attempts: BTreeMap<u32, usize>,
    groups_left: usize,
    aborts: u32,
    commits: u32,
    bytes_sent: u64,
}

impl RoundRunner {
    pub(super) fn on_init(&mut self, now: SimTime, out: &mut Out) {
        for i in 0..self.peers.len() {
            let peer = PeerIdx(u32::try_from(i).expect("peer count fits u32"));
            if !self.churn.is_initially_up(peer) {
                self.peers[i].is_up = false;
                self.peers[i].is_synced = false;
                out.peer_down(peer);
            }
            if let Some(t) = self.churn.first(peer) {
                out.set_timer(t.at, RunTimer::Churn(t));
            }
        }
        for (i, p) in self.partitions.iter().enumerate() {
            out.set_timer(
                SimTime::from_secs_f64(p.start_s),
                RunTimer::PartitionStart(i),
            );
            out.set_timer(SimTime::from_secs_f64(p.end_s), RunTimer::PartitionEnd(i));
        }
        self.start_round(now, out);
    }

    /// Starts the next round if none is running and at least two peers are eligible.
    fn start_round(&mut self, now: SimTime, out: &mut Out) {
        if self.current.is_some() || self.is_finished() {
            return;
        }
        let participants: Vec<PeerIdx> = (0..self.peers.len())
            .filter(|&i| self.peers[i].is_eligible())
            .filter_map(|i| u32::try_from(i).ok().map(PeerIdx))
            .collect();
        if participants.len() < 2 {
            return; // Waits for a resync or a heal to bring peers back.
        }
        let member_lists = match self.topology {
            Topology::Global(_) => vec![participants.clone()],
            Topology::Moshpit { group_size } => {
                groups::moshpit_groups(&participants, group_size as usize, self.next_round)
            }
        };
        let mut round = RoundState {
            index: self.next_round,
            started_at: now,
            participants: u32::try_from(participants.len()).unwrap_or(u32::MAX),
            groups: Vec::with_capacity(member_lists.len()),
            attempts: BTreeMap::new(),
            groups_left: 0,
            aborts: 0,
            commits: 0,
            bytes_sent: 0,
        };
        for (g, members) in member_lists.into_iter().enumerate() {
            for m in &members {
                let peer = &mut self.peers[m.get()];
                peer.group = u32::try_from(g).unwrap_or(NO_GROUP);
                peer.is_ready = false;
            }
            round.groups.push(Group {
                ready: 0,
                members,
                exec: None,
                is_done: false,
            });
            round.groups_left += 1;
        }
        for &p in &participants {
            let step_s = self.compute.draw_step_s(p);
            let round = self.next_round;
            out.set_timer(
                now.plus_micros(crate::time::secs_to_micros_ceil(step_s)),
                RunTimer::ComputeDone { peer: p, round },
            );
        }
        self.current = Some(round);
    }

    pub(super) fn on_compute_done(
        &mut self,
        now: SimTime,
        peer: PeerIdx,
        round: u32,
        out: &mut Out,
    ) {
        let g = self.peers[peer.get()].group;
        let Some(state) = self
            .current
            .as_mut()
            .filter(|r| r.index == round && g != NO_GROUP)
        else {
            return;
        };
        let p = &mut self.peers[peer.get()];
        if !p.is_ready {
            p.is_ready = true;
            state.groups[g as usize].ready += 1;
        }
        self.maybe_launch(now, g as usize, out);
    }

    /// Starts group `g`'s all-reduce once all its members are ready; a group of one is done.
    fn maybe_launch(&mut self, now: SimTime, g: usize, out: &mut Out) {
        let Some(state) = self.current.as_mut() else {
            return;
        };
        let group = &mut state.groups[g];
        if group.is_done || group.exec.is_some() || group.ready < group.members.len() {
            return;
        }
        if group.members.len() < 2 {
            self.finish_group(now, g, out);
            return;
        }
        let algorithm = match self.topology {
            Topology::Global(a) => a,
            Topology::Moshpit { .. } => Algorithm::AllToAll,
        };
        let weights: Option<Vec<f64>> = self
            .up_bytes_per_s
            .as_ref()
            .map(|up| group.members.iter().map(|m| up[m.get()]).collect());
        let programs = collective::programs(
            algorithm,
            &group.members,
            self.gradient_bytes,
            weights.as_deref(),
        );
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let mode = algorithm.send_mode();
        let mut exec = Executor::new(attempt, group.members.clone(), programs, mode);
        for &m in &group.members {
            exec.start_peer(now, m, out);
        }
        state.attempts.insert(attempt, g);
        out.set_timer(
            now.plus_micros(self.attempt_timeout_us),
            RunTimer::AttemptTimeout(attempt),
        );
        let done = exec.is_done();
        group.exec = Some(exec);
        if done {
            self.finish_group(now, g, out);
        }
    }

    pub(super) fn on_attempt_timeout(&mut self, now: SimTime, attempt: u32, out: &mut Out) {
        let Some(state) = self.current.as_mut() else {
            return;
        };
        let Some(g) = state.attempts.remove(&attempt) else {
            return; // Finished or aborted already.
        };
        state.groups[g].exec = None;
        state.aborts += 1;
        self.maybe_launch(now, g, out);
    }

    pub(super) fn on_collective(
        &mut self,
        now: SimTime,
        msg: &Delivered<RunMsg>,
        tag: CollectiveMsg,
        out: &mut Out,
    ) {
        let Some(state) = self.current.as_mut() else {
            return;
        };
        let Some(&g) = state.attempts.get(&tag.attempt) else {
            return;
        };
        let Some(exec) = state.groups[g].exec.as_mut() else {
            return;
        };
        let _ = exec.handle_message(now, msg, tag, out);
        if exec.is_done() && !state.groups[g].is_done {
            self.finish_group(now, g, out);
        }
    }

    fn finish_group(&mut self, now: SimTime, g: usize, out: &mut Out) {
        let Some(state) = self.current.as_mut() else {
            return;
        };
        let group = &mut state.groups[g];
        group.is_done = true;
        if let Some(exec) = &group.exec {
            state.bytes_sent += group
                .members
                .iter()
                .map(|&m| exec.bytes_sent(m))
                .sum::<u64>();
            state.attempts.remove(&exec.attempt());
        }
        state.commits += u32::try_from(group.members.len()).unwrap_or(u32::MAX);
        state.groups_left -= 1;
        if state.groups_left == 0 {
            self.commit_round(now, out);
        }
    }

    fn commit_round(&mut self, now: SimTime, out: &mut Out) {
        let Some(state) = self.current.take() else {
            return;
        };
        let active = self.peers.iter().filter(|p| p.is_up).count();
        self.records.push(RoundRecord {
            round: state.index,
            start_s: state.started_at.as_secs_f64(),
            end_s: now.as_secs_f64(),
            peers: state.participants,
            bytes_per_peer: state.bytes_sent / u64::from(state.commits.max(1)),
            commits: state.commits,
            aborts: state.aborts,
            resyncs: self.resyncs_pending,
            active_peers: u32::try_from(active).unwrap_or(u32::MAX),
            groups: u32::try_from(state.groups.len()).unwrap_or(u32::MAX),
        });
        self.resyncs_pending = 0;
        self.next_round += 1;
        for p in &mut self.peers {
            p.group = NO_GROUP;
        }
        for i in 0..self.peers.len() {
            let p = self.peers[i];
            if p.is_up && !p.is_synced && !p.is_cut && p.resync_from.is_none() {
                self.start_resync(PeerIdx(u32::try_from(i).unwrap_or(u32::MAX)), out);
            }
        }
        self.start_round(now, out);
    }
}

/// Membership changes: churn, partitions, resyncs.
impl RoundRunner {
    pub(super) fn on_churn(&mut self, now: SimTime, t: Transition, out: &mut Out) {
        if let Some(next) = self.churn.next(t) {
            out.set_timer(next.at, RunTimer::Churn(next));
        }
        let i = t.peer.get();
        if t.is_up {
            out.peer_up(t.peer);
            self.peers[i].is_up = true;
            self.start_resync(t.peer, out);
        } else {
            out.peer_down(t.peer);
            self.peers[i].is_up = false;
            self.peers[i].is_synced = false;
            self.peers[i].resync_from = None;
            self.peer_leaves(now, t.peer, out);
        }
    }

    pub(super) fn on_partition_start(&mut self, now: SimTime, index: usize, out: &mut Out) {
        let cut = self.partitions[index].cut_peers as usize;
        let sides = (0..self.peers.len()).map(|i| u32::from(i < cut)).collect();
        out.partition(sides);
        for i in 0..cut.min(self.peers.len()) {
            self.peers[i].is_cut = true;
            self.peers[i].resync_from = None;
            self.peer_leaves(now, PeerIdx(u32::try_from(i).unwrap_or(u32::MAX)), out);
        }
    }

    pub(super) fn on_partition_end(&mut self, now: SimTime, index: usize, out: &mut Out) {
        out.repair();
        let cut = self.partitions[index].cut_peers as usize;
        for i in 0..cut.min(self.peers.len()) {
            let p = &mut self.peers[i];
            p.is_cut = false;
            // The cut side missed the majority's commits: it must resync before rejoining.
            p.is_synced = false;
            if p.is_up {
                self.start_resync(PeerIdx(u32::try_from(i).unwrap_or(u32::MAX)), out);
            }
        }
        self.start_round(now, out);
    }

    /// `peer` left the round (crash or cut off): its group's attempt aborts and the survivors
    /// re-run it; peers resyncing from it pick another source.
    fn peer_leaves(&mut self, now: SimTime, peer: PeerIdx, out: &mut Out) {
        for i in 0..self.peers.len() {
            if self.peers[i].resync_from == Some(peer) {
                self.peers[i].resync_from = None;
                self.start_resync(PeerIdx(u32::try_from(i).unwrap_or(u32::MAX)), out);
            }
        }
        let g = core::mem::replace(&mut self.peers[peer.get()].group, NO_GROUP);
        let Some(state) = self.current.as_mut() else {
            return;
        };
        let Some(group) = state.groups.get_mut(g as usize).filter(|gr| !gr.is_done) else {
            return;
        };
        let Some(pos) = group.members.iter().position(|&m| m == peer) else {
            return;
        };
        group.members.remove(pos);
        if core::mem::replace(&mut self.peers[peer.get()].is_ready, false) {
            group.ready -= 1;
        }
        if let Some(exec) = group.exec.take() {
            state.attempts.remove(&exec.attempt());
            state.aborts += 1;
        }
        self.maybe_launch(now, g as usize, out);
    }

    /// Sends `peer` the state from a random in-sync peer on its side (none: retried at commit).
    fn start_resync(&mut self, peer: PeerIdx, out: &mut Out) {
        let me = self.peers[peer.get()];
        if !me.is_up || me.is_synced || me.is_cut || me.resync_from.is_some() {
            return;
        }
        let sources: Vec<usize> = (0..self.peers.len())
            .filter(|&i| i != peer.get() && self.peers[i].is_eligible())
            .collect();
        if sources.is_empty() {
            return;
        }
        let from =
            PeerIdx(u32::try_from(sources[self.rng.random_range(0..sources.len())]).unwrap_or(0));
        self.peers[peer.get()].resync_from = Some(from);
        out.send(from, peer, self.state_bytes, RunMsg::State);
    }

    pub(super) fn on_state(&mut self, now: SimTime, from: PeerIdx, to: PeerIdx, out: &mut Out) {
        let p = &mut self.peers[to.get()];
        if p.resync_from != Some(from) || !p.is_up {
            return;
        }
        p.resync_from = None;
        p.is_synced = true;
        self.resyncs_pending += 1;
        self.start_round(now, out);
    }
}
