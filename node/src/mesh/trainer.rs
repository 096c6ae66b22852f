//! The `Trainer` actor: the workload on its own thread (an actix `SyncArbiter`), so LibTorch
//! compute never blocks the networking arbiter. It answers typed messages in the order they
//! arrive, which is the order the protocol asked for them (load before compute, apply before the
//! next compute).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use gradmesh_kernels::{Checkpoint, FlatLayout};
use gradmesh_protocol::Floats;

use super::workload::{Computed, Evaluation, Workload, WorkloadError};

/// The trainer actor. Start with [`TrainerActor::start`].
#[derive(Debug)]
pub struct TrainerActor {
    workload: Workload,
}

impl TrainerActor {
    /// Moves `workload` onto a dedicated thread and returns the actor's address.
    #[must_use]
    pub fn start(workload: Workload) -> Addr<Self> {
        // `SyncArbiter` builds its actor with a factory; with one thread it runs exactly once.
        let slot = Mutex::new(Some(workload));
        SyncArbiter::start(1, move || {
            let workload = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            match workload {
                Some(workload) => Self { workload },
                None => unreachable!("a one-thread SyncArbiter builds its actor once"),
            }
        })
    }
}

impl Actor for TrainerActor {
    type Context = SyncContext<Self>;
}

/// Compute a gradient on the current state.
#[derive(Debug, Message)]
#[rtype(result = "Result<Computed, WorkloadError>")]
pub struct Compute;

/// One inner step of the next phase while the mesh reduces the last message; answers whether
/// one was taken.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, WorkloadError>")]
pub struct InnerStep;

/// Apply a committed average; answers the new serialized state.
#[derive(Debug, Message)]
#[rtype(result = "Result<Arc<[u8]>, WorkloadError>")]
pub struct Apply(pub Floats);

/// Replace the state with synced bytes.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct Load(pub Arc<[u8]>);

/// The current serialized state.
#[derive(Debug, Message)]
#[rtype(result = "Arc<[u8]>")]
pub struct StateBytes;

/// Evaluate on the test set.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Evaluation>, WorkloadError>")]
pub struct Evaluate;

/// Snapshot the state as a checkpoint of `round` with the given committee and state digest.
#[derive(Debug, Message)]
#[rtype(result = "Option<(Checkpoint, FlatLayout)>")]
pub struct TakeCheckpoint {
    /// Round the state was committed in.
    pub round: u64,
    /// Protocol digest of the state.
    pub digest: [u8; 32],
    /// Contributors of that round.
    pub committee: Vec<[u8; 32]>,
}

/// Restore from the checkpoint file at the path.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Checkpoint>, WorkloadError>")]
pub struct Resume(pub PathBuf);

impl Handler<Compute> for TrainerActor {
    type Result = Result<Computed, WorkloadError>;

    fn handle(&mut self, _: Compute, _: &mut Self::Context) -> Self::Result {
        self.workload.compute()
    }
}

impl Handler<InnerStep> for TrainerActor {
    type Result = Result<bool, WorkloadError>;

    fn handle(&mut self, _: InnerStep, _: &mut Self::Context) -> Self::Result {
        self.workload.inner_step()
    }
}

impl Handler<Apply> for TrainerActor {
    type Result = Result<Arc<[u8]>, WorkloadError>;

    fn handle(&mut self, Apply(average): Apply, _: &mut Self::Context) -> Self::Result {
        self.workload.apply(&average)
    }
}

impl Handler<Load> for TrainerActor {
    type Result = Result<(), WorkloadError>;

    fn handle(&mut self, Load(bytes): Load, _: &mut Self::Context) -> Self::Result {
        self.workload.load(&bytes)
    }
}

impl Handler<StateBytes> for TrainerActor {
    type Result = MessageResult<StateBytes>;

    fn handle(&mut self, _: StateBytes, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.workload.state_bytes())
    }
}

impl Handler<Evaluate> for TrainerActor {
    type Result = Result<Option<Evaluation>, WorkloadError>;

    fn handle(&mut self, _: Evaluate, _: &mut Self::Context) -> Self::Result {
        self.workload.evaluate()
    }
}

impl Handler<TakeCheckpoint> for TrainerActor {
    type Result = Option<(Checkpoint, FlatLayout)>;

    fn handle(&mut self, take: TakeCheckpoint, _: &mut Self::Context) -> Self::Result {
        let (mut checkpoint, layout) = self.workload.checkpoint(take.round, take.digest)?;
        checkpoint.committee = take.committee;
        Some((checkpoint, layout))
    }
}

impl Handler<Resume> for TrainerActor {
    type Result = Result<Option<Checkpoint>, WorkloadError>;

    fn handle(&mut self, Resume(path): Resume, _: &mut Self::Context) -> Self::Result {
        self.workload.resume(&path)
    }
}
