//! The `Checkpointer` actor: writes checkpoints on its own thread (file i/o and fsync never
//! stall the protocol). Each write goes to a temporary file, is fsynced and renamed over
//! `latest.safetensors` (see `gradmesh_kernels::write_checkpoint`), so a crash at any point
//! leaves the previous checkpoint loadable.

use std::path::{Path, PathBuf};

use actix::prelude::*;
use gradmesh_kernels::{Checkpoint, FlatLayout, KernelError, write_atomically, write_checkpoint};
use gradmesh_protocol::peer::Promise;
use gradmesh_protocol::wire::{LineageLink, decode_lineage};

/// The checkpoint file inside a checkpoint directory.
pub const CHECKPOINT_FILE: &str = "latest.safetensors";
/// The node's promises to the mesh (its next round and last vote, docs/protocol.md §5.2), kept
/// beside the checkpoint and rewritten before every announcement or vote that changes them.
pub const PROMISE_FILE: &str = "promise.json";
/// A promise is a few hundred bytes (the vote's backer bitmap is bounded by the roster size).
const PROMISE_FILE_BYTES_MAX: u64 = 64 << 10;
/// The node's lineage (`Peer::lineage`: the states at which its committee turned over, with
/// their attestations), written with every checkpoint: a restarted node proves what it holds to
/// peers whose committees have changed since (docs/protocol.md §3.5, "Lineage").
pub const LINEAGE_FILE: &str = "lineage.bin";

/// Why the promise file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromiseError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The contents are not a promise.
    #[error(
        "{path} is not a promise file ({reason}); the node refuses to start rather than forget \
         the votes it promised. Move it away only if no other node holds this identity's votes"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Writes the promise durably (see [`write_atomically`]) before the node acts on it.
///
/// # Errors
/// The write failed.
pub fn write_promise(path: &Path, promise: &Promise) -> Result<(), KernelError> {
    let bytes = serde_json::to_vec(promise).map_err(|e| KernelError::Io {
        op: "encode",
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    write_atomically(path, &bytes)
}

/// The promise saved at `path`, if the file exists.
///
/// # Errors
/// [`PromiseError`].
pub fn read_promise(path: &Path) -> Result<Option<Promise>, PromiseError> {
    let io = |source| PromiseError::Io {
        path: path.to_owned(),
        source,
    };
    let malformed = |reason: String| PromiseError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.len() > PROMISE_FILE_BYTES_MAX {
        return Err(malformed(format!("{} bytes", meta.len())));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| malformed(e.to_string()))
}

/// The lineage saved at `path`, if the file exists and reads. It is evidence for others, not a
/// promise: a file that does not read is named in a warning and the node resumes without it
/// (it then proves its state only once its holders attest it again).
#[must_use]
pub fn read_lineage(path: &Path) -> Vec<LineageLink> {
    match std::fs::read(path) {
        Ok(bytes) => decode_lineage(&bytes).unwrap_or_else(|error| {
            tracing::warn!(
                "{} is not a lineage of this version ({error}); resuming without it",
                path.display()
            );
            Vec::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            tracing::warn!(
                "cannot read {}: {error}; resuming without it",
                path.display()
            );
            Vec::new()
        }
    }
}

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

/// Write this checkpoint, then the lineage beside it; replies whether the checkpoint was
/// written.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct Save {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The model's layout.
    pub layout: FlatLayout,
    /// The encoded lineage (`wire::encode_lineage`), if any.
    pub lineage: Option<Vec<u8>>,
}

impl Handler<Save> for Checkpointer {
    type Result = bool;

    fn handle(&mut self, save: Save, _: &mut Self::Context) -> bool {
        let round = save.checkpoint.round;
        match write_checkpoint(&self.path, &save.checkpoint, &save.layout) {
            Ok(()) => {
                tracing::debug!(round, path = %self.path.display(), "checkpoint written");
                if let Some(lineage) = &save.lineage {
                    let path = self.path.with_file_name(LINEAGE_FILE);
                    if let Err(error) = write_atomically(&path, lineage) {
                        tracing::warn!(round, "lineage write failed: {error}");
                    }
                }
                true
            }
            Err(error) => {
                tracing::warn!(round, "checkpoint write failed: {error}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use gradmesh_protocol::wire::{StateSummary, VoteLock};
    use gradmesh_protocol::{Digest, RoundId};

    use super::*;

    #[test]
    fn a_promise_survives_the_file_and_a_damaged_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(PROMISE_FILE);
        assert!(
            read_promise(&path)
                .expect("no file is no promise")
                .is_none()
        );
        let promise = Promise {
            next_round: RoundId(42),
            lock: Some((
                StateSummary {
                    round: RoundId(40),
                    digest: Digest([7; 32]),
                },
                VoteLock {
                    round: RoundId(41),
                    digest: Digest([9; 32]),
                    carried: true,
                    backers: vec![0b101],
                },
            )),
        };
        write_promise(&path, &promise).expect("written");
        assert_eq!(read_promise(&path).expect("read"), Some(promise));
        std::fs::write(&path, b"{\"next_round\": ").expect("damage");
        let error = read_promise(&path).expect_err("refused");
        assert!(
            error.to_string().contains("is not a promise file"),
            "{error}"
        );
    }
}
