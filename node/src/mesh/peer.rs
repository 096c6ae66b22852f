//! The `PeerActor`: the adapter between the protocol's [`Peer`] machine and the node's other
//! actors. It holds no protocol rule. Inputs become `Peer::handle_*` calls stamped with the
//! node's monotonic clock; every output is carried out by the actor that owns the resource —
//! frames and announcements by the [`Network`], gradients, averages and states by the
//! [`TrainerActor`], checkpoints by the [`Checkpointer`] — and `poll_timeout` arms one timer.
//!
//! Membership, round agreement, the all-reduce and state sync are one composed machine in the
//! protocol crate (so the node and the simulator cannot drift apart); this one adapter drives
//! all of them.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use gradmesh_protocol::peer::{Event, Output, Peer, Promise};
use gradmesh_protocol::reduce::RejectReason;
use gradmesh_protocol::roster::RosterError;
use gradmesh_protocol::sync::{DonorFault, StateSnapshot};
use gradmesh_protocol::wire::{self, Body, Envelope, Role, StateSummary};
use gradmesh_protocol::{Digest, Floats, PeerId, RoundId, Timestamp};

use super::RoundWords;
use super::checkpointer::{CHECKPOINT_FILE, Checkpointer, PROMISE_FILE, Save, write_promise};
use super::stop::{Interrupt, Stop, StopReason, StopRule};
use super::telemetry::{MeshMetrics, Phases, Report};
use super::trainer::{Apply, Compute, Evaluate, InnerStep, Load, TakeCheckpoint, TrainerActor};
use super::workload::WorkloadError;
use crate::net::{
    Ban, BanReason, FRAMES_IN_FLIGHT_PER_PEER_MAX, Frame, FrameRequestId, NetEvent, Network,
    Publish, SendFrame,
};

/// Frames queued for one peer beyond those in flight; older ones are dropped first (the
/// protocol recovers lost messages by failover and retries).
const OUTBOX_FRAMES_MAX: usize = 64;

/// A deliberate fault, for tests of the mesh's defences: corrupts what this node sends. Never
/// used in normal operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every contribution carries a NaN.
    NanContributions,
    /// Every contribution is one float short.
    ShortContributions,
    /// From round 5 on, every announcement claims a state 1000 rounds ahead of ours, and the
    /// node serves 64 junk bytes, consistent with that state's digest, to whoever fetches it
    /// (issue 16, rows 1 and 3).
    ForgedState,
}

/// At most one INFO line about commits in this long (the others go to DEBUG).
const COMMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The longest a stopping node waits for the round it runs to end (so the others need not fail
/// over its spans); past it, it leaves the round and writes its checkpoint anyway.
const SETTLE_MAX: Duration = Duration::from_secs(30);
/// The longest a graceful stop may take in all (round ended, state in hand applied, final
/// checkpoint written); past it the node exits without the checkpoint rather than hang.
const STOP_GRACE: Duration = Duration::from_secs(90);

/// How far ahead of its own state a [`Fault::ForgedState`] node claims to be.
const FORGED_ROUNDS_AHEAD: u64 = 1000;
/// A [`Fault::ForgedState`] node turns dishonest once it holds this round: a member that
/// contributed honestly, then lies (before the first commit a mesh has no committee to vouch
/// for states, and every peer takes one peer's word, docs/protocol.md §3.5).
const FORGE_FROM_ROUND: RoundId = RoundId(5);

/// How the actor reports and checkpoints.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Print [`Report`] lines on stdout.
    pub report: bool,
    /// Write a checkpoint every this many committed rounds (0: never).
    pub checkpoint_every: u64,
    /// Evaluate on the test set after every commit.
    pub evaluate: bool,
    /// A deliberate fault (tests only).
    pub fault: Option<Fault>,
    /// A terminal status line, updated at every commit.
    pub progress: Option<indicatif::ProgressBar>,
    /// Start the next inner phase as soon as a message is handed over, while the mesh reduces
    /// it (one-step-delayed outer update).
    pub overlap: bool,
    /// When to stop by itself.
    pub stop: StopRule,
}

/// The adapter actor.
#[derive(Debug)]
pub struct PeerActor {
    peer: Peer,
    clock: Instant,
    network: Option<Addr<Network>>,
    trainer: Addr<TrainerActor>,
    checkpointer: Option<Addr<Checkpointer>>,
    metrics: MeshMetrics,
    options: PeerOptions,
    timer: Option<SpawnHandle>,
    outbox: Outbox,
    gossip_seq: u64,
    round_started: Option<(RoundId, Instant)>,
    /// The last round this node contributed to (not only observed).
    contributed: Option<RoundId>,
    /// Examples behind the last contribution computed (its weight in the mesh's mean).
    last_weight: u32,
    /// Seconds from roster to commit of the last committed round.
    last_allreduce: Option<(RoundId, f64)>,
    /// When the phases of the round in progress began (`Phases`).
    clock_marks: PhaseMarks,
    last_loss: Option<f32>,
    last_inner_steps: u32,
    last_compute_seconds: f64,
    /// Seconds spent computing since the first compute began, and when that was.
    computing: (f64, Option<Instant>),
    bytes_sent: u64,
    bytes_received: u64,
    /// The junk state a [`Fault::ForgedState`] node announces and serves, by its round.
    forged: Option<StateSnapshot>,
    /// States handed to the trainer (a round's average to apply, a synced state to load) whose
    /// replies have not come back: a stopping node waits for them before its final checkpoint.
    states_in_flight: u32,
    /// Local optimizer steps taken, and rounds committed, since start.
    steps: u64,
    rounds: u64,
    /// Whether a contribution came from local steps (else each commit is one step).
    local_steps: bool,
    /// Set once the node is stopping: it leaves the mesh (finishing the round it runs) and ends
    /// once the state in hand is applied.
    stopping: Option<StopReason>,
    /// The round in flight was given up on; the final checkpoint has been asked for; the node
    /// has exited.
    settle_waived: bool,
    finishing: bool,
    exited: bool,
    /// Raised when stopping; the trainer ends its inner phase at the next step.
    interrupt: Interrupt,
    /// The checkpoint file, for the stop summary, and the promise file beside it.
    checkpoint_file: Option<PathBuf>,
    promise_file: Option<PathBuf>,
    /// The last promise write failed (warned once until one succeeds).
    promise_failing: bool,
    /// When the last INFO commit line was written, and commits since at DEBUG.
    commit_logged: Option<(Instant, u64)>,
}

/// When each phase of a node's round began: its last state installed, its contribution handed
/// to the protocol, the roster, the commit and the apply (see [`Phases`]).
#[derive(Debug, Default, Clone, Copy)]
struct PhaseMarks {
    installed: Option<Instant>,
    gradient: Option<Instant>,
    roster: Option<Instant>,
    committed: Option<Instant>,
    applied: Option<Instant>,
}

impl PhaseMarks {
    /// The phases from the last install to `now` (this round's install), when every mark is in
    /// order; then the marks start over from `now`.
    fn close(&mut self, now: Instant) -> Option<Phases> {
        let marks = std::mem::replace(
            self,
            Self {
                installed: Some(now),
                ..Self::default()
            },
        );
        let points = [
            marks.installed?,
            marks.gradient?,
            marks.roster?,
            marks.committed?,
            marks.applied?,
            now,
        ];
        if points.windows(2).any(|w| w[1] < w[0]) {
            return None;
        }
        let span = |i: usize| points[i + 1].duration_since(points[i]).as_secs_f64();
        Some(Phases {
            compute: span(0),
            wait: span(1),
            allreduce: span(2),
            apply: span(3),
            install: span(4),
        })
    }
}

#[derive(Debug, Default)]
struct Outbox {
    queues: HashMap<PeerId, VecDeque<Frame>>,
    in_flight: HashMap<PeerId, usize>,
    next_id: u64,
    /// Peers whose full queue dropped frames since it last drained, with how many: one WARN
    /// per episode, not one per frame.
    overflowing: HashMap<PeerId, u64>,
}

impl Outbox {
    /// The queue to `to` drained or went away: ends its overflow episode, if any.
    fn settle(&mut self, to: PeerId) {
        if let Some(dropped) = self.overflowing.remove(&to) {
            tracing::info!(
                peer = %to,
                "outbox drained after dropping {dropped} {}",
                plural(usize::try_from(dropped).unwrap_or(usize::MAX), "frame", "frames")
            );
        }
    }
}

/// Hands the actor its network once the network layer is up (it needs the actor's address
/// first, as the subscriber of its events).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Attach(pub Addr<Network>);

impl PeerActor {
    /// An adapter around `peer`, whose clock started at `clock`.
    #[must_use]
    pub fn new(
        peer: Peer,
        clock: Instant,
        trainer: Addr<TrainerActor>,
        checkpointer: Option<Addr<Checkpointer>>,
        metrics: MeshMetrics,
        options: PeerOptions,
    ) -> Self {
        Self {
            peer,
            clock,
            network: None,
            trainer,
            checkpointer,
            metrics,
            options,
            timer: None,
            outbox: Outbox::default(),
            gossip_seq: 0,
            round_started: None,
            contributed: None,
            last_weight: 0,
            last_allreduce: None,
            clock_marks: PhaseMarks::default(),
            last_loss: None,
            last_inner_steps: 0,
            last_compute_seconds: 0.0,
            computing: (0.0, None),
            bytes_sent: 0,
            bytes_received: 0,
            forged: None,
            states_in_flight: 0,
            steps: 0,
            rounds: 0,
            local_steps: false,
            stopping: None,
            settle_waived: false,
            finishing: false,
            exited: false,
            interrupt: Interrupt::default(),
            checkpoint_file: None,
            promise_file: None,
            promise_failing: false,
            commit_logged: None,
        }
    }

    /// The trainer's interrupt flag (raised when stopping), and the checkpoint directory where
    /// the final checkpoint and the promise file go.
    #[must_use]
    pub fn with_files(mut self, interrupt: Interrupt, checkpoint_dir: Option<PathBuf>) -> Self {
        self.interrupt = interrupt;
        self.checkpoint_file = checkpoint_dir.as_ref().map(|d| d.join(CHECKPOINT_FILE));
        self.promise_file = checkpoint_dir.map(|d| d.join(PROMISE_FILE));
        self
    }

    /// Makes the peer's promise durable before the outputs after it go out. Without a
    /// checkpoint directory there is nothing to resume from, so nothing to keep; a failed write
    /// is a warning, once until a write succeeds (the node goes on, as it does when a
    /// checkpoint write fails).
    fn persist(&mut self, promise: &Promise) {
        let Some(path) = &self.promise_file else {
            return;
        };
        match write_promise(path, promise) {
            Ok(()) => self.promise_failing = false,
            Err(error) if !self.promise_failing => {
                self.promise_failing = true;
                tracing::warn!(
                    "cannot keep this node's promises ({error}); a restart from the checkpoint \
                     would forget its last vote"
                );
            }
            Err(_) => {}
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn report(&self, report: &Report) {
        if self.options.report {
            super::report_line(report);
        }
    }

    /// Carries out every pending output, then re-arms the timer.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.network.is_none() || self.finishing {
            return;
        }
        while let Some(output) = self.peer.poll_output() {
            match output {
                Output::Send { to, envelope } => self.send(to, envelope, ctx),
                Output::Broadcast { envelope } => self.broadcast(&envelope),
                Output::ComputeGradient { .. } => self.compute(ctx),
                Output::LoadState(snapshot) => {
                    let summary = snapshot.summary();
                    self.load(summary, Arc::clone(snapshot.bytes()), ctx);
                }
                Output::ApplyRound(result) => self.apply(result.round, result.data, ctx),
                Output::Event(event) => self.observe(event, ctx),
                Output::Persist(promise) => self.persist(&promise),
            }
        }
        self.rearm(ctx);
        self.finish_if_stopping(ctx);
    }

    fn rearm(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(deadline) = self.peer.poll_timeout() {
            let delay = deadline.saturating_since(self.now());
            self.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                let now = act.now();
                act.peer.handle_timeout(now);
                act.drain(ctx);
            }));
        }
    }

    fn compute(&mut self, ctx: &mut Context<Self>) {
        self.computing.1.get_or_insert_with(Instant::now);
        let request = self.trainer.send(Compute).into_actor(self);
        ctx.spawn(request.map(|reply, act, ctx| match reply {
            Ok(Ok(computed)) => {
                act.steps += u64::from(computed.inner_steps);
                act.local_steps |= computed.inner_steps > 0;
                act.last_loss = Some(computed.loss);
                act.last_inner_steps = computed.inner_steps;
                act.last_weight = computed.weight;
                act.last_compute_seconds = computed.seconds;
                act.computing.0 += computed.seconds;
                let now = act.now();
                act.clock_marks.gradient = Some(Instant::now());
                act.peer
                    .handle_gradient(now, computed.weight, computed.gradient);
                act.drain(ctx);
                if act.options.overlap && act.stopping.is_none() {
                    act.step_ahead(ctx);
                }
            }
            Ok(Err(error)) => fatal(&format!("computing a gradient failed: {error}")),
            Err(error) => fatal(&format!("trainer is gone: {error}")),
        }));
    }

    /// Overlap: inner steps of the next phase, one message at a time (so the round's apply and
    /// loads go between them), until the phase is complete or the protocol asks for it.
    fn step_ahead(&mut self, ctx: &mut Context<Self>) {
        let request = self.trainer.send(InnerStep).into_actor(self);
        ctx.spawn(request.map(|reply, act, ctx| match reply {
            Ok(Ok(true)) => act.step_ahead(ctx),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => fatal(&format!("an inner step failed: {error}")),
            Err(error) => fatal(&format!("trainer is gone: {error}")),
        }));
    }

    /// Loads a synced state. One that does not load (junk from a donor, non-finite values) is
    /// refused, not fatal: the protocol goes back to the state it held and fetches another.
    fn load(&mut self, summary: StateSummary, bytes: Arc<[u8]>, ctx: &mut Context<Self>) {
        self.states_in_flight += 1;
        let request = self.trainer.send(Load(bytes)).into_actor(self);
        ctx.spawn(request.map(move |reply, act, ctx| {
            act.states_in_flight -= 1;
            act.loaded(summary, reply, ctx);
            act.finish_if_stopping(ctx);
        }));
    }

    fn loaded(
        &mut self,
        summary: StateSummary,
        reply: Result<Result<(), WorkloadError>, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        match reply {
            Ok(Ok(())) => {
                self.metrics.syncs.inc();
                // A synced state starts the node's phases over.
                self.clock_marks.close(Instant::now());
                tracing::info!(
                    "loaded the mesh's state of round {}",
                    RoundWords(summary.round)
                );
                self.report(&Report::Synced {
                    round: summary.round.0,
                    digest: summary.digest.to_hex(),
                });
            }
            Ok(Err(error)) => {
                self.metrics.states_refused.inc();
                tracing::warn!(
                    round = summary.round.0,
                    digest = %summary.digest.to_hex(),
                    "refusing the synced state: {error}; keeping our own and fetching another"
                );
                self.report(&Report::Refused {
                    round: summary.round.0,
                    digest: summary.digest.to_hex(),
                    reason: error.to_string(),
                });
                let now = self.now();
                self.peer.handle_state_refused(now, summary);
                self.drain(ctx);
            }
            Err(error) => fatal(&format!("trainer is gone: {error}")),
        }
    }

    fn apply(&mut self, round: RoundId, average: Floats, ctx: &mut Context<Self>) {
        self.states_in_flight += 1;
        let request = self.trainer.send(Apply(average)).into_actor(self);
        ctx.spawn(request.map(move |reply, act, ctx| {
            act.states_in_flight -= 1;
            match reply {
                Ok(Ok(bytes)) => {
                    act.clock_marks.applied = Some(Instant::now());
                    let now = act.now();
                    if let Err(error) = act.peer.handle_state(now, round, bytes) {
                        fatal(&format!("state cannot be snapshotted: {error}"));
                    }
                    act.drain(ctx);
                    act.after_commit(round, ctx);
                }
                Ok(Err(error)) => fatal(&format!(
                    "applying round {} failed: {error}",
                    RoundWords(round)
                )),
                Err(error) => fatal(&format!("trainer is gone: {error}")),
            }
            act.finish_if_stopping(ctx);
        }));
    }

    /// Metrics, the report line, and a checkpoint every `checkpoint_every` rounds.
    fn after_commit(&mut self, round: RoundId, ctx: &mut Context<Self>) {
        let Some(state) = self.peer.state() else {
            return;
        };
        self.rounds += 1;
        if !self.local_steps {
            self.steps += 1;
        }
        self.metrics
            .state_round
            .set(i64::try_from(state.round.count()).unwrap_or(i64::MAX));
        let seconds = match self.last_allreduce {
            Some((r, seconds)) if r == round => seconds,
            _ => 0.0,
        };
        let contributors = self.peer.state_committee().len();
        let phases = self.clock_marks.close(Instant::now());
        if let Some(loss) = self.last_loss {
            self.metrics.loss.set(f64::from(loss));
        }
        let report = Report::Committed {
            round: round.0,
            contributors,
            loss: self.last_loss,
            accuracy: None,
            validation_loss: None,
            inner_steps: self.last_inner_steps,
            examples: (self.contributed == Some(round)).then_some(self.last_weight),
            compute_seconds: self.last_compute_seconds,
            utilisation: self
                .computing
                .1
                .map(|since| self.computing.0 / since.elapsed().as_secs_f64().max(1e-9)),
            seconds,
            bytes_sent: std::mem::take(&mut self.bytes_sent),
            bytes_received: std::mem::take(&mut self.bytes_received),
            digest: state.digest.to_hex(),
            phases,
        };
        if self.options.checkpoint_every > 0
            && round.count().is_multiple_of(self.options.checkpoint_every)
        {
            self.checkpoint(round, state.digest, ctx);
        }
        if let Some(reason) = self.options.stop.reached(round.count(), self.steps) {
            self.begin_stop(reason, ctx);
        }
        self.evaluate_then_report(report, ctx);
    }

    /// Fills the held-out figures into a commit's report (when the node evaluates), then shows
    /// and prints it; `--target-loss` is checked here.
    fn evaluate_then_report(&mut self, mut report: Report, ctx: &mut Context<Self>) {
        if !self.options.evaluate {
            self.show_progress(&report);
            self.report(&report);
            return;
        }
        ctx.spawn(
            self.trainer
                .send(Evaluate)
                .into_actor(self)
                .map(move |reply, act, ctx| {
                    if let (
                        Ok(Ok(Some(eval))),
                        Report::Committed {
                            accuracy,
                            validation_loss,
                            ..
                        },
                    ) = (reply, &mut report)
                    {
                        *accuracy = eval.accuracy;
                        *validation_loss = Some(eval.loss);
                        if let Some(value) = eval.accuracy {
                            act.metrics.accuracy.set(value);
                        }
                        if let Some(reason) = act.options.stop.loss_reached(f64::from(eval.loss)) {
                            act.begin_stop(reason, ctx);
                        }
                    }
                    act.show_progress(&report);
                    act.report(&report);
                }),
        );
    }

    /// Starts a graceful stop: the peer leaves the mesh ([`Peer::leave`]: it sees the round it
    /// runs through and takes no other), the trainer ends its inner phase at the next step, and
    /// once the round is over (or [`SETTLE_MAX`] has passed) and the state in hand is applied,
    /// the node writes its final checkpoint and exits 0. Bounded by [`STOP_GRACE`].
    fn begin_stop(&mut self, reason: StopReason, ctx: &mut Context<Self>) {
        if self.stopping.is_some() {
            return;
        }
        tracing::info!("stopping: {reason}");
        self.stopping = Some(reason);
        self.interrupt.raise();
        let now = self.now();
        self.peer.leave(now);
        ctx.run_later(SETTLE_MAX, |act, ctx| {
            if !act.finishing {
                tracing::warn!(
                    "the round in flight did not end within {} s; leaving it",
                    SETTLE_MAX.as_secs()
                );
                act.settle_waived = true;
                act.finish_if_stopping(ctx);
            }
        });
        ctx.run_later(STOP_GRACE, |act, _| {
            tracing::warn!(
                "the final checkpoint did not finish within {} s; exiting without it",
                STOP_GRACE.as_secs()
            );
            act.exit(None);
        });
        self.drain(ctx);
    }

    /// Once stopping, with the round over and no state on its way to the trainer: the final
    /// checkpoint of the state held (when there is a checkpoint directory), then exit. From here
    /// on the node takes no input.
    fn finish_if_stopping(&mut self, ctx: &mut Context<Self>) {
        let settled = self.peer.is_settled() || self.settle_waived;
        if self.stopping.is_none() || self.states_in_flight > 0 || !settled || self.finishing {
            return;
        }
        self.finishing = true;
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let (Some(checkpointer), Some(state)) = (self.checkpointer.clone(), self.peer.state())
        else {
            self.exit(None);
            return;
        };
        let take = self.checkpoint_request(state.round, state.digest);
        let lineage = self.lineage_bytes();
        let written = self
            .trainer
            .send(take)
            .into_actor(self)
            .then(move |reply, act, _| {
                let save = match reply {
                    Ok(Some((checkpoint, layout))) => Some(checkpointer.send(Save {
                        checkpoint,
                        layout,
                        lineage,
                    })),
                    _ => None,
                };
                async move {
                    match save {
                        Some(save) => save.await.unwrap_or(false),
                        None => false,
                    }
                }
                .into_actor(act)
            });
        ctx.spawn(written.map(|written, act, _| {
            let file = act.checkpoint_file.clone().filter(|_| written);
            act.exit(file);
        }));
    }

    /// The stop summary (a log line and a report line), then the end of the process, exit 0.
    fn exit(&mut self, checkpoint: Option<PathBuf>) {
        if self.exited {
            return;
        }
        self.exited = true;
        let reason = self
            .stopping
            .as_ref()
            .map_or_else(|| "stopped".to_owned(), ToString::to_string);
        let state = self.peer.state();
        let round = state.map_or(0, |s| s.round.0);
        let seconds = self.clock.elapsed().as_secs_f64();
        let held = state.map_or_else(
            || "no state yet".to_owned(),
            |s| {
                let digest = s.digest.to_hex();
                format!(
                    "state of round {} ({})",
                    RoundWords(s.round),
                    short(&digest)
                )
            },
        );
        let saved = checkpoint.as_ref().map_or_else(
            || "no final checkpoint".to_owned(),
            |path| format!("final checkpoint {}", path.display()),
        );
        if let Some(bar) = &self.options.progress {
            bar.finish_and_clear();
        }
        tracing::info!(
            "stopped ({reason}): {held}, {} {} committed and {} local {} in {seconds:.1} s; \
             {saved}",
            self.rounds,
            plural(
                usize::try_from(self.rounds).unwrap_or(usize::MAX),
                "round",
                "rounds"
            ),
            self.steps,
            plural(
                usize::try_from(self.steps).unwrap_or(usize::MAX),
                "step",
                "steps"
            ),
        );
        self.report(&Report::Stopped {
            reason,
            round,
            digest: state.map(|s| s.digest.to_hex()),
            steps: self.steps,
            rounds: self.rounds,
            seconds,
            checkpoint: checkpoint.map(|p| p.display().to_string()),
        });
        System::current().stop_with_code(0);
    }

    /// Asks the trainer for a checkpoint of the state committed in `round` and hands it to the
    /// checkpointer.
    fn checkpoint(&self, round: RoundId, digest: Digest, ctx: &mut Context<Self>) {
        let Some(dir) = self.checkpointer.clone() else {
            return;
        };
        let take = self.checkpoint_request(round, digest);
        let lineage = self.lineage_bytes();
        ctx.spawn(
            self.trainer
                .send(take)
                .into_actor(self)
                .map(move |reply, _, _| {
                    if let Ok(Some((checkpoint, layout))) = reply {
                        dir.do_send(Save {
                            checkpoint,
                            layout,
                            lineage,
                        });
                    }
                }),
        );
    }

    /// The protocol's lineage, encoded for the file beside the checkpoint.
    fn lineage_bytes(&self) -> Option<Vec<u8>> {
        wire::encode_lineage(&self.peer.lineage())
            .map_err(|error| tracing::debug!(%error, "lineage not kept with the checkpoint"))
            .ok()
    }

    /// The trainer's checkpoint of the state committed in `round`, with its committee.
    fn checkpoint_request(&self, round: RoundId, digest: Digest) -> TakeCheckpoint {
        TakeCheckpoint {
            round: round.0,
            digest: digest.0,
            committee: self.peer.state_committee().iter().map(|p| p.0).collect(),
        }
    }

    fn show_progress(&self, report: &Report) {
        let (
            Some(bar),
            Report::Committed {
                round,
                contributors,
                loss,
                accuracy,
                validation_loss,
                inner_steps,
                seconds,
                ..
            },
        ) = (&self.options.progress, report)
        else {
            return;
        };
        let loss = loss.map_or_else(|| "-".into(), |l| format!("{l:.4}"));
        let accuracy = accuracy.map_or_else(|| "-".into(), |a| format!("{:.2}%", 100.0 * a));
        let held_out = validation_loss.map_or_else(|| "-".into(), |l| format!("{l:.4}"));
        let steps = if *inner_steps > 0 {
            format!("{inner_steps} inner steps, ")
        } else {
            String::new()
        };
        let peers = plural(*contributors, "peer", "peers");
        bar.set_message(format!(
            "round {round}: {contributors} {peers}, {steps}loss {loss}, held-out loss {held_out}, \
             accuracy {accuracy}, all-reduce {seconds:.3} s"
        ));
        bar.tick();
    }

    fn started(&mut self, round: RoundId, contributors: usize, role: Role) {
        let now = Instant::now();
        self.round_started = Some((round, now));
        self.clock_marks.roster = Some(now);
        if role == Role::Contributor {
            self.contributed = Some(round);
        }
        tracing::debug!(round = round.0, contributors, ?role, "round started");
        self.report(&Report::RoundStarted {
            round: round.0,
            contributors,
            observer: role == Role::Observer,
        });
    }

    fn observe(&mut self, event: Event, ctx: &mut Context<Self>) {
        self.ban_if_proven(&event);
        let event = match Self::log_only(event, self.peer.id()) {
            Ok(()) => return,
            Err(event) => event,
        };
        match event {
            Event::RoundStarted {
                round,
                contributors,
                role,
                ..
            } => self.started(round, contributors, role),
            Event::RoundCommitted {
                round,
                contributors,
                ..
            } => {
                self.metrics.rounds_committed.inc();
                self.clock_marks.committed = Some(Instant::now());
                if let Some((r, started)) = self.round_started
                    && r == round
                {
                    let seconds = started.elapsed().as_secs_f64();
                    self.last_allreduce = Some((round, seconds));
                    self.metrics.allreduce_seconds.observe(seconds);
                    self.log_commit(round, contributors, seconds);
                }
            }
            Event::RoundAborted { round, reason } => {
                self.metrics.rounds_aborted.inc();
                tracing::warn!("round {} aborted: {reason}", RoundWords(round));
                self.report(&Report::Aborted {
                    round: round.0,
                    reason: reason.to_string(),
                });
            }
            Event::Rejected {
                peer,
                round,
                reason,
            } => {
                self.metrics.rejected.inc();
                tracing::warn!(
                    "refused a message of peer {peer} in round {}: {reason}",
                    RoundWords(round)
                );
                self.report(&Report::Rejected {
                    peer: hex::encode(peer.0),
                    round: round.0,
                    reason: reason.to_string(),
                });
            }
            Event::Refounded {
                from,
                to,
                founders,
                quorum,
                adopted,
            } => self.refounded(from, to, (founders, quorum, adopted), ctx),
            other => tracing::debug!(event = ?other, "protocol event"),
        }
    }

    /// This node re-founded the mesh on the state it holds (docs/protocol.md §5.6): a WARN line
    /// in words, a report line, and a checkpoint at once, so that a restart resumes in the new
    /// epoch rather than in the old one.
    fn refounded(
        &mut self,
        from: StateSummary,
        to: StateSummary,
        (founders, quorum, adopted): (usize, usize, bool),
        ctx: &mut Context<Self>,
    ) {
        let why = if adopted {
            "following a node that re-founded it"
        } else {
            "--refound-after elapsed"
        };
        tracing::warn!(
            "re-founded the mesh on the state of round {} ({why}): epoch {}, {founders} {} \
             holding it, {quorum} needed for the next round",
            RoundWords(from.round),
            to.round.epoch(),
            plural(founders, "node", "nodes"),
        );
        self.report(&Report::Refounded {
            from: from.round.0,
            round: to.round.0,
            digest: to.digest.to_hex(),
            founders,
            quorum,
            adopted,
        });
        self.checkpoint(to.round, to.digest, ctx);
    }

    /// Logs the events that only need a line (this node's own refused proposals with advice);
    /// hands back the others.
    fn log_only(event: Event, own: PeerId) -> Result<(), Event> {
        match event {
            Event::DonorDropped { peer, fault } => {
                tracing::warn!("state donor {peer} dropped: {fault}");
            }
            Event::BadProposal {
                peer,
                round,
                error: RosterError::BadVectorLength { vector_len },
            } if peer == own => {
                let span_max = u64::from(wire::SPAN_FLOATS_MAX);
                tracing::warn!(
                    "round {}: this node's model has {vector_len} parameters and one node's share of a \
                     round holds at most {span_max}: the round needs at least {} nodes with \
                     equal --bandwidth-mbit; start more nodes",
                    RoundWords(round),
                    vector_len.div_ceil(span_max)
                );
            }
            Event::BadProposal { peer, round, error } => {
                tracing::warn!(
                    "refused peer {peer}'s roster for round {}: {error}",
                    RoundWords(round)
                );
            }
            Event::Impersonation { peer, claimed } => {
                tracing::warn!("peer {peer} sent a message claiming to be {claimed}; refused");
            }
            Event::Diverged { round, .. } => tracing::info!(
                "the mesh committed round {} with a result this node lacks; syncing its state",
                RoundWords(round)
            ),
            Event::SyncStarted { target, donors } => tracing::info!(
                "fetching the mesh's state of round {} from {donors} {}",
                RoundWords(target.round),
                plural(donors, "donor", "donors")
            ),
            Event::SyncFailed { target } => tracing::warn!(
                "every donor of the state of round {} failed; fetching another later",
                RoundWords(target.round)
            ),
            Event::ResumedOwnState => {
                tracing::info!("no newer state to fetch; training on this node's own");
            }
            Event::CommitteeLost { live, committee } => tracing::warn!(
                "only {live} of the last round's {committee} contributors are heard from and \
                 committing needs a majority: the mesh waits for them; if they are gone for \
                 good, restart the survivors with --refound-after SECS (docs/operator.md, \
                 \"Mass failures\")"
            ),
            Event::StateWithheld { peer } => tracing::info!(
                "peer {peer} asked for the state and was refused (--serve-state members)"
            ),
            Event::Proposed { .. } | Event::StateRefused { .. } => {}
            other => return Err(other),
        }
        Ok(())
    }

    /// The commit line: INFO for a round that took a while, otherwise at most one INFO line
    /// every [`COMMIT_LOG_INTERVAL`] (the rounds between them at DEBUG), so a fast mesh does
    /// not fill its logs.
    fn log_commit(&mut self, round: RoundId, contributors: usize, seconds: f64) {
        let now = Instant::now();
        let due = self
            .commit_logged
            .is_none_or(|(at, _)| now.duration_since(at) >= COMMIT_LOG_INTERVAL);
        if !due {
            if let Some((_, quiet)) = &mut self.commit_logged {
                *quiet += 1;
            }
            tracing::debug!(round = round.0, contributors, seconds, "round committed");
            return;
        }
        let quiet = self.commit_logged.map_or(0, |(_, quiet)| quiet);
        let since = if quiet > 0 {
            format!(" ({quiet} more since the last line)")
        } else {
            String::new()
        };
        tracing::info!(
            "round {} committed: {contributors} {}, all-reduce {seconds:.3} s{since}",
            RoundWords(round),
            plural(contributors, "contributor", "contributors")
        );
        self.commit_logged = Some((now, 0));
    }

    fn broadcast(&mut self, envelope: &Envelope) {
        let forged = self.forge(envelope);
        let envelope = forged.as_ref().unwrap_or(envelope);
        let Some(network) = &self.network else { return };
        match wire::encode(envelope) {
            Ok(frame) => {
                // gossipsub ids are content hashes: a sequence number keeps a repeated (and
                // still meaningful) announcement from being dropped as a duplicate.
                self.gossip_seq += 1;
                let mut bytes = Vec::with_capacity(8 + frame.len());
                bytes.extend_from_slice(&self.gossip_seq.to_le_bytes());
                bytes.extend_from_slice(&frame);
                network.do_send(Publish {
                    bytes: Bytes::from(bytes),
                });
            }
            Err(error) => tracing::error!(%error, "announcement does not encode"),
        }
    }

    fn send(&mut self, to: PeerId, mut envelope: Envelope, ctx: &mut Context<Self>) {
        if let (Some(fault), Body::Contribution(c)) = (self.options.fault, &mut envelope.body) {
            inject(fault, c);
        }
        let (meta, payload) = match wire::encode_parts(&envelope) {
            Ok(parts) => parts,
            Err(error) => {
                tracing::error!(%error, "message does not encode");
                return;
            }
        };
        let frame = Frame {
            meta: Bytes::from(meta),
            payload: Bytes::from_owner(payload),
        };
        let queue = self.outbox.queues.entry(to).or_default();
        if queue.len() >= OUTBOX_FRAMES_MAX {
            queue.pop_front();
            let dropped = self.outbox.overflowing.entry(to).or_default();
            if *dropped == 0 {
                tracing::warn!(
                    peer = %to,
                    "outbox full: dropping the oldest frames to this peer until it catches up"
                );
            }
            *dropped += 1;
        }
        queue.push_back(frame);
        self.pump(to, ctx);
    }

    /// Starts queued frames to `to` while fewer than the network's per-peer limit are in flight.
    fn pump(&mut self, to: PeerId, ctx: &mut Context<Self>) {
        let Some(network) = self.network.clone() else {
            return;
        };
        loop {
            let in_flight = self.outbox.in_flight.entry(to).or_default();
            if *in_flight >= FRAMES_IN_FLIGHT_PER_PEER_MAX {
                return;
            }
            let Some(frame) = self
                .outbox
                .queues
                .get_mut(&to)
                .and_then(VecDeque::pop_front)
            else {
                self.outbox.settle(to);
                return;
            };
            *in_flight += 1;
            self.outbox.next_id += 1;
            let bytes = (frame.meta.len() + frame.payload.len()) as u64;
            let request = SendFrame {
                id: FrameRequestId(self.outbox.next_id),
                to,
                frame,
            };
            ctx.spawn(
                network
                    .send(request)
                    .into_actor(self)
                    .map(move |reply, act, ctx| {
                        if let Some(n) = act.outbox.in_flight.get_mut(&to) {
                            *n = n.saturating_sub(1);
                        }
                        match reply {
                            Ok(Ok(_)) => act.bytes_sent += bytes,
                            Ok(Err(error)) => tracing::debug!(%error, "frame not delivered"),
                            Err(_) => tracing::debug!("network layer is gone"),
                        }
                        act.pump(to, ctx);
                    }),
            );
        }
    }

    fn receive_frame(&mut self, from: PeerId, frame: &Frame, ctx: &mut Context<Self>) {
        self.bytes_received += (frame.meta.len() + frame.payload.len()) as u64;
        match wire::decode_parts_shared(&frame.meta, frame.payload.clone()) {
            Ok(envelope) => {
                if let (Body::StateRequest(request), Some(forged)) = (&envelope.body, &self.forged)
                    && envelope.round == forged.summary().round
                {
                    let mut body = forged.serve(*request);
                    if let Body::StateManifest(manifest) = &mut body {
                        // Its own word: the one attestation a forger can give.
                        let state = forged.summary();
                        manifest.attestations =
                            vec![self.peer.key().seal_state(state.round, state.digest)];
                    }
                    let reply = Envelope::new(self.peer.id(), envelope.round, body);
                    self.send(from, reply, ctx);
                    return;
                }
                let now = self.now();
                self.peer.handle_message(now, from, envelope);
            }
            Err(error) => {
                self.metrics.rejected.inc();
                tracing::warn!(peer = %from, %error, "undecodable frame refused");
                self.ban(from, &error, BanReason::UndecodableFrame);
            }
        }
    }

    fn receive_gossip(&mut self, from: PeerId, bytes: &[u8]) {
        let decoded = bytes
            .get(8..)
            .ok_or(wire::WireError::Truncated { len: bytes.len() })
            .and_then(|frame| wire::decode(frame, wire::ANNOUNCE_FRAME_BYTES_MAX));
        match decoded {
            Ok(envelope) => {
                let now = self.now();
                self.peer.handle_message(now, from, envelope);
            }
            Err(error) => {
                self.metrics.rejected.inc();
                tracing::warn!(peer = %from, %error, "undecodable announcement refused");
                self.ban(from, &error, BanReason::UndecodableAnnouncement);
            }
        }
    }
}

/// The ban a protocol event proves, if any: only what no honest peer of this protocol version
/// does (a bad manifest or chunk from a donor, a state that matches its digest but does not
/// load, a forwarded attestation that does not verify, a forged seal, two votes in one round).
/// Timeouts, unavailable states, states too few trusted peers attested (`Unvouched`: an honest
/// donor may not have heard enough attestations yet) and refusals that races explain
/// (`NotContributor`, say) ban nobody.
fn ban_for(event: &Event) -> Option<(PeerId, BanReason)> {
    match event {
        Event::DonorDropped {
            peer,
            fault:
                DonorFault::BadManifest
                | DonorFault::BadChunk(_)
                | DonorFault::Unloadable
                | DonorFault::BadAttestation,
        } => Some((*peer, BanReason::BadDonor)),
        Event::Rejected {
            peer,
            reason: RejectReason::BadSeal,
            ..
        } => Some((*peer, BanReason::ForgedSeal)),
        Event::Rejected {
            peer,
            reason: RejectReason::Equivocation,
            ..
        } => Some((*peer, BanReason::Equivocation)),
        _ => None,
    }
}

impl PeerActor {
    /// Bans the peer `event` proves dishonest ([`ban_for`]), with one WARN line.
    fn ban_if_proven(&self, event: &Event) {
        if let Some((peer, reason)) = ban_for(event)
            && let Some(network) = &self.network
        {
            tracing::warn!(%peer, %reason, "peer banned");
            network.do_send(Ban { peer, reason });
        }
    }

    /// Bans a peer that sent bytes no honest peer sends. A peer of another protocol version is
    /// misconfigured, not hostile: its messages are refused but it is not banned.
    fn ban(&self, peer: PeerId, error: &wire::WireError, reason: BanReason) {
        if matches!(error, wire::WireError::Version { .. }) {
            return;
        }
        if let Some(network) = &self.network {
            network.do_send(Ban { peer, reason });
        }
    }

    /// Under [`Fault::ForgedState`], the announcement `envelope` rewritten to claim the junk
    /// state; `None` for anything else.
    fn forge(&mut self, envelope: &Envelope) -> Option<Envelope> {
        if self.options.fault != Some(Fault::ForgedState) {
            return None;
        }
        let Body::Announce(announce) = &envelope.body else {
            return None;
        };
        let ours = announce.state?;
        if ours.round < FORGE_FROM_ROUND {
            return None;
        }
        let round = RoundId(ours.round.0 + FORGED_ROUNDS_AHEAD);
        if self.forged.is_none() {
            let junk: Arc<[u8]> = Arc::from(vec![0xAB_u8; 64]);
            self.forged = StateSnapshot::new(round, vec![self.peer.id()], junk, 1 << 20).ok();
        }
        let forged = self.forged.as_ref()?;
        let mut announce = announce.clone();
        announce.state = Some(forged.summary());
        announce.ready_for = Some(forged.summary().round.next());
        announce.wants_to_join = false;
        announce.lock = None;
        let state = forged.summary();
        announce.attestation = Some(self.peer.key().seal_state(state.round, state.digest));
        Some(Envelope::new(
            envelope.sender,
            envelope.round,
            Body::Announce(announce),
        ))
    }
}

fn inject(fault: Fault, contribution: &mut gradmesh_protocol::wire::Contribution) {
    if fault == Fault::ForgedState {
        return;
    }
    let mut data = contribution.data.to_vec();
    match fault {
        Fault::NanContributions => {
            if let Some(x) = data.first_mut() {
                *x = f32::NAN;
            }
        }
        Fault::ShortContributions => {
            data.pop();
            contribution.floats = contribution.floats.saturating_sub(1);
        }
        Fault::ForgedState => {}
    }
    contribution.data = data.into();
}

/// A local failure the node cannot continue after (its trainer broke): stop the process so an
/// operator restarts it, rather than linger as a peer that never contributes.
fn fatal(message: &str) {
    tracing::error!("{message}; stopping");
    System::current().stop_with_code(3);
}

/// `one` or `many` by count.
const fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// The first 16 hex digits of a digest, enough to compare by eye.
fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(limit) = self.options.stop.max_time {
            ctx.run_later(limit, move |act, ctx| {
                act.begin_stop(StopReason::MaxTime(limit), ctx);
            });
        }
    }
}

impl Handler<Stop> for PeerActor {
    type Result = ();

    fn handle(&mut self, Stop(reason): Stop, ctx: &mut Self::Context) {
        self.begin_stop(reason, ctx);
    }
}

impl Handler<Attach> for PeerActor {
    type Result = ();

    fn handle(&mut self, Attach(network): Attach, ctx: &mut Self::Context) {
        self.network = Some(network);
        self.drain(ctx);
    }
}

impl Handler<NetEvent> for PeerActor {
    type Result = ();

    fn handle(&mut self, event: NetEvent, ctx: &mut Self::Context) {
        if self.finishing {
            return;
        }
        match event {
            NetEvent::FrameReceived { from, frame } => self.receive_frame(from, &frame, ctx),
            NetEvent::GossipReceived { from, bytes } => self.receive_gossip(from, &bytes),
            NetEvent::PeerConnected { peer } => {
                self.metrics.peers.inc();
                self.report(&Report::Connected {
                    peer: hex::encode(peer.0),
                });
                self.pump(peer, ctx);
            }
            NetEvent::PeerDisconnected { peer } => {
                self.metrics.peers.dec();
                self.outbox.queues.remove(&peer);
                self.outbox.settle(peer);
                self.report(&Report::Disconnected {
                    peer: hex::encode(peer.0),
                });
            }
            NetEvent::ListeningOn { addr } => self.report(&Report::Listening {
                addr: addr.to_string(),
            }),
            _ => {}
        }
        self.drain(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bans follow only from what no honest peer does; faults that crashes, slow links or
    /// races explain ban nobody.
    #[test]
    fn only_proof_of_dishonesty_bans() {
        let peer = PeerId::from_index(3);
        let dropped = |fault| Event::DonorDropped { peer, fault };
        let rejected = |reason| Event::Rejected {
            peer,
            round: RoundId(4),
            reason,
        };
        let cases = [
            (dropped(DonorFault::BadManifest), Some(BanReason::BadDonor)),
            (dropped(DonorFault::BadChunk(2)), Some(BanReason::BadDonor)),
            (dropped(DonorFault::Unloadable), Some(BanReason::BadDonor)),
            (
                dropped(DonorFault::BadAttestation),
                Some(BanReason::BadDonor),
            ),
            (dropped(DonorFault::Unvouched), None),
            (dropped(DonorFault::Timeout), None),
            (dropped(DonorFault::Unavailable), None),
            (rejected(RejectReason::BadSeal), Some(BanReason::ForgedSeal)),
            (
                rejected(RejectReason::Equivocation),
                Some(BanReason::Equivocation),
            ),
            (rejected(RejectReason::NotContributor), None),
            (rejected(RejectReason::NonFinite { index: 0 }), None),
        ];
        for (event, ban) in cases {
            assert_eq!(
                ban_for(&event),
                ban.map(|reason| (peer, reason)),
                "{event:?}"
            );
        }
    }

    #[test]
    fn a_round_s_phases_follow_its_marks_and_add_up_to_its_period() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut marks = PhaseMarks {
            installed: Some(at(0)),
            gradient: Some(at(5)),
            roster: Some(at(25)),
            committed: Some(at(125)),
            applied: Some(at(135)),
        };
        let phases = marks.close(at(150)).expect("every mark in order");
        let ms = |s: f64| (s * 1e3).round();
        assert_eq!(
            [
                phases.compute,
                phases.wait,
                phases.allreduce,
                phases.apply,
                phases.install
            ]
            .map(ms),
            [5.0, 20.0, 100.0, 10.0, 15.0]
        );
        // The next round starts from this install; a round without a contribution of this
        // node (it observed) has no phases, and neither has one whose marks are out of order
        // (computing overlapped the round).
        assert_eq!(marks.installed, Some(at(150)));
        assert_eq!(marks.gradient, None);
        marks.roster = Some(at(160));
        marks.committed = Some(at(170));
        marks.applied = Some(at(175));
        assert_eq!(marks.close(at(180)), None);
        marks.gradient = Some(at(150));
        marks.roster = Some(at(200));
        marks.committed = Some(at(190));
        marks.applied = Some(at(210));
        assert_eq!(marks.close(at(220)), None);
    }
}
