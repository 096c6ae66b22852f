//! The `Checkpointer` actor: writes checkpoints on its own thread (file i/o and fsync never
//! stall the protocol). Each write goes to a temporary file, is fsynced and renamed over
//! `latest.safetensors` (see `gradmesh_kernels::write_checkpoint`), so a crash at any point
//! leaves the previous checkpoint loadable.

use std::path::{Path, PathBuf};

use actix::prelude::*;
use gradmesh_kernels::{Checkpoint, FlatLayout, write_checkpoint};

/// The checkpoint file inside a checkpoint directory.
pub const CHECKPOINT_FILE: &str = "latest.safetensors";

/// The checkpointer actor.
#[derive(Debug)]
pub struct Checkpointer {
    path: PathBuf,
}

impl Checkpointer {
    /// Starts a checkpointer writing `dir/latest.safetensors`.
    #[must_use]
    pub fn start(dir: &Path) -> Addr<Self> {
        let path = dir.join(CHECKPOINT_FILE);
        SyncArbiter::start(1, move || Self { path: path.clone() })
    }
}

impl Actor for Checkpointer {
    type Context = SyncContext<Self>;
}

/// Write this checkpoint; replies whether it was written.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct Save {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The model's layout.
    pub layout: FlatLayout,
}

impl Handler<Save> for Checkpointer {
    type Result = bool;

    fn handle(&mut self, save: Save, _: &mut Self::Context) -> bool {
        let round = save.checkpoint.round;
        match write_checkpoint(&self.path, &save.checkpoint, &save.layout) {
            Ok(()) => {
                tracing::debug!(round, path = %self.path.display(), "checkpoint written");
                true
            }
            Err(error) => {
                tracing::warn!(round, "checkpoint write failed: {error}");
                false
            }
        }
    }
}
