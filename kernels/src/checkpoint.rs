//! Checkpoints as safetensors files that PyTorch can read (`safetensors.torch.load_file`).
//!
//! Tensors: `param.<name>` (f32, the parameter's shape), `optimizer.values` (f32 `[S]`),
//! `optimizer.step`, `step` and `round` (u64 `[1]`), `mesh_digest` (u8 `[32]`). The header carries
//! one metadata entry, `format = gradmesh-checkpoint-v1` (one entry only: safetensors serializes
//! the metadata map in hash order, and we want byte-identical files for identical state).
//!
//! Writes are atomic: the bytes go to `<name>.tmp` in the same directory, are fsynced, renamed
//! over the target and the directory is fsynced. A crash at any point leaves either the previous
//! checkpoint or the new one under the target name, never a partial file; a stale `.tmp` is simply
//! overwritten by the next write.

use std::{
    collections::HashMap,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{
    OptimizerState,
    data::{decode_f32, read_tensor},
    error::{KernelError, Result, io_error},
    flat::FlatLayout,
    state::TrainingState,
};

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "gradmesh-checkpoint-v1";

/// blake3 digest of the mesh (roster and run parameters) a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshDigest(pub [u8; 32]);

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The all-reduce (or DiLoCo) round the state was taken after.
    pub round: u64,
    /// The mesh the state belongs to; a peer refuses a checkpoint of another mesh.
    pub mesh_digest: MeshDigest,
    /// Parameters, optimizer state and step.
    pub state: TrainingState,
    /// The ids (32 bytes each) of the peers whose gradients produced this state: a restarted
    /// peer needs them to rebuild the exact state digest the mesh committed. Empty for a state
    /// that no mesh round produced.
    pub committee: Vec<[u8; 32]>,
    /// What stays on this peer and is never synced: DiLoCo's inner optimizer and a federated
    /// client's own state. `None` for synchronous training, whose whole state is synced.
    pub local: Option<LocalState>,
}

/// A peer's own training state under local steps (DiLoCo, federated strategies): restored when
/// the peer restarts from its checkpoint, never sent to other peers.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalState {
    /// The inner optimizer (AdamW's moments or SGD's momentum) and its step count.
    pub inner: OptimizerState,
    /// SCAFFOLD's client control variate (empty for the other strategies).
    pub client_control: Vec<f32>,
}

struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u64_entry(name: &str, value: u64) -> Entry {
    Entry {
        name: name.to_owned(),
        dtype: Dtype::U64,
        shape: vec![1],
        bytes: value.to_le_bytes().to_vec(),
    }
}

fn encode(checkpoint: &Checkpoint, layout: &FlatLayout) -> Result<Vec<u8>> {
    let state = &checkpoint.state;
    layout.check("checkpoint parameters", state.params.len())?;
    let mut entries: Vec<Entry> = layout
        .spans()
        .iter()
        .map(|span| Entry {
            name: format!("param.{}", span.name),
            dtype: Dtype::F32,
            shape: span
                .shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect(),
            bytes: f32_bytes(&state.params[span.range()]),
        })
        .collect();
    let opt = &state.optimizer.values;
    entries.push(Entry {
        name: "optimizer.values".into(),
        dtype: Dtype::F32,
        shape: vec![opt.len()],
        bytes: f32_bytes(opt),
    });
    entries.push(u64_entry("optimizer.step", state.optimizer.step));
    entries.push(u64_entry("step", state.step));
    entries.push(u64_entry("round", checkpoint.round));
    let digest = checkpoint.mesh_digest.0.to_vec();
    entries.push(Entry {
        name: "mesh_digest".into(),
        dtype: Dtype::U8,
        shape: vec![32],
        bytes: digest,
    });
    entries.push(Entry {
        name: "committee".into(),
        dtype: Dtype::U8,
        shape: vec![checkpoint.committee.len(), 32],
        bytes: checkpoint.committee.concat(),
    });
    if let Some(local) = &checkpoint.local {
        for (name, values) in [
            ("local.inner.values", &local.inner.values),
            ("local.client_control", &local.client_control),
        ] {
            entries.push(Entry {
                name: name.into(),
                dtype: Dtype::F32,
                shape: vec![values.len()],
                bytes: f32_bytes(values),
            });
        }
        entries.push(u64_entry("local.inner.step", local.inner.step));
    }
    let views = entries
        .iter()
        .map(|e| {
            Ok((
                e.name.as_str(),
                TensorView::new(e.dtype, e.shape.clone(), &e.bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>();
    let metadata = HashMap::from([(FORMAT_KEY.to_owned(), FORMAT.to_owned())]);
    views
        .and_then(|views| safetensors::serialize(views, Some(metadata)))
        .map_err(|e| KernelError::Safetensors {
            path: PathBuf::new(),
            reason: e.to_string(),
        })
}

/// The temporary file a write goes through before it is renamed over `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes and fsyncs `bytes` to the temporary file; returns its path.
pub(crate) fn stage(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = temp_path(path);
    let mut file = File::create(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(bytes).map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("fsync", &tmp))?;
    Ok(tmp)
}

/// Renames the staged file over `path` and fsyncs the directory so the rename is durable.
pub(crate) fn commit(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(io_error("rename", path))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync", dir))
}

/// Atomically and durably replaces `path` with `bytes` (a temporary file, fsynced, renamed over
/// it, the directory fsynced): after a crash at any point `path` holds the old bytes or the new.
///
/// # Errors
/// [`KernelError::Io`] naming the step and file that failed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = stage(path, bytes)?;
    commit(&tmp, path)
}

/// Atomically writes `checkpoint` for a model with `layout` to `path` (see the module docs).
pub fn write_checkpoint(path: &Path, checkpoint: &Checkpoint, layout: &FlatLayout) -> Result<()> {
    let bytes = encode(checkpoint, layout).map_err(|e| match e {
        KernelError::Safetensors { reason, .. } => KernelError::Safetensors {
            path: path.to_path_buf(),
            reason,
        },
        other => other,
    })?;
    write_atomically(path, &bytes)
}

fn read_u64(file: &SafeTensors<'_>, path: &Path, name: &str) -> Result<u64> {
    let (bytes, shape) = read_tensor(file, path, name, Dtype::U64)?;
    let value: [u8; 8] = bytes
        .try_into()
        .map_err(|_| bad_shape(name, "[1]", &shape))?;
    Ok(u64::from_le_bytes(value))
}

fn bad_shape(name: &str, expected: &str, found: &[usize]) -> KernelError {
    KernelError::BadTensor {
        name: name.to_owned(),
        expected: expected.to_owned(),
        found: format!("{found:?}"),
    }
}

/// Loads and validates a checkpoint for a model with `layout`: format tag, every parameter with
/// its exact shape, scalar counters and a 32-byte digest. The optimizer state's length is checked
/// when it is restored into an optimizer.
pub fn load_checkpoint(path: &Path, layout: &FlatLayout) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(io_error("read", path))?;
    let parse_error = |e: safetensors::SafeTensorError| KernelError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(parse_error)?;
    let format = metadata.metadata().as_ref().and_then(|m| m.get(FORMAT_KEY));
    if format.map(String::as_str) != Some(FORMAT) {
        return Err(KernelError::NotACheckpoint {
            path: path.to_path_buf(),
            found: format.cloned(),
        });
    }
    let file = SafeTensors::deserialize(&bytes).map_err(parse_error)?;
    let mut params = Vec::with_capacity(layout.len());
    for span in layout.spans() {
        let name = format!("param.{}", span.name);
        let (data, shape) = read_tensor(&file, path, &name, Dtype::F32)?;
        if !shape
            .iter()
            .map(|&d| i64::try_from(d).ok())
            .eq(span.shape.iter().map(|&d| Some(d)))
        {
            return Err(bad_shape(&name, &format!("{:?}", span.shape), &shape));
        }
        params.extend(decode_f32(data));
    }
    let (values, _) = read_tensor(&file, path, "optimizer.values", Dtype::F32)?;
    let (digest, shape) = read_tensor(&file, path, "mesh_digest", Dtype::U8)?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| bad_shape("mesh_digest", "[32]", &shape))?;
    let optimizer = OptimizerState {
        step: read_u64(&file, path, "optimizer.step")?,
        values: decode_f32(values),
    };
    let state = TrainingState {
        step: read_u64(&file, path, "step")?,
        params,
        optimizer,
    };
    let (members, shape) = read_tensor(&file, path, "committee", Dtype::U8)?;
    if shape.len() != 2 || shape[1] != 32 {
        return Err(bad_shape("committee", "[k, 32]", &shape));
    }
    let committee = members
        .chunks_exact(32)
        .filter_map(|id| <[u8; 32]>::try_from(id).ok())
        .collect();
    let local = if file.tensor("local.inner.step").is_ok() {
        let (inner, _) = read_tensor(&file, path, "local.inner.values", Dtype::F32)?;
        let (control, _) = read_tensor(&file, path, "local.client_control", Dtype::F32)?;
        Some(LocalState {
            inner: OptimizerState {
                step: read_u64(&file, path, "local.inner.step")?,
                values: decode_f32(inner),
            },
            client_control: decode_f32(control),
        })
    } else {
        None
    };
    Ok(Checkpoint {
        round: read_u64(&file, path, "round")?,
        mesh_digest: MeshDigest(digest),
        state,
        committee,
        local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, ModelKind, OptimizerConfig, Trainer};

    fn trainer(seed: u64) -> Trainer {
        let config = OptimizerConfig::adamw(1e-3, 0.9, 0.999, 1e-8, 0.0).unwrap();
        Trainer::new(ModelKind::Mlp, config, Device::Cpu, seed).unwrap()
    }

    #[test]
    fn round_trips_and_is_byte_deterministic() {
        let t = trainer(1);
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        let mut checkpoint = t.checkpoint(3, MeshDigest([7; 32]));
        checkpoint.committee = vec![[1; 32], [2; 32]];
        write_checkpoint(&a, &checkpoint, t.layout()).unwrap();
        write_checkpoint(&b, &checkpoint, t.layout()).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(load_checkpoint(&a, t.layout()).unwrap(), checkpoint);
        // A peer's own state under local steps travels with it.
        checkpoint.local = Some(LocalState {
            inner: OptimizerState {
                step: 11,
                values: vec![0.25, -1.5, 3.0],
            },
            client_control: vec![2.0],
        });
        write_checkpoint(&b, &checkpoint, t.layout()).unwrap();
        assert_eq!(load_checkpoint(&b, t.layout()).unwrap(), checkpoint);
        assert!(
            !temp_path(&a).exists(),
            "the temporary file is renamed away"
        );
    }

    #[test]
    fn crash_before_rename_keeps_the_previous_checkpoint() {
        let (old, new) = (trainer(1), trainer(2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let previous = old.checkpoint(1, MeshDigest([1; 32]));
        write_checkpoint(&path, &previous, old.layout()).unwrap();

        // Crash mid-write: a truncated temporary file is left behind and never renamed.
        let next = encode(&new.checkpoint(2, MeshDigest([2; 32])), new.layout()).unwrap();
        stage(&path, &next[..next.len() / 2]).unwrap();
        assert_eq!(load_checkpoint(&path, old.layout()).unwrap(), previous);
        // Crash after the full write and fsync, before the rename: still the previous one.
        stage(&path, &next).unwrap();
        assert_eq!(load_checkpoint(&path, old.layout()).unwrap(), previous);
        // The next successful write replaces the stale temporary file and the checkpoint.
        let latest = new.checkpoint(2, MeshDigest([2; 32]));
        write_checkpoint(&path, &latest, new.layout()).unwrap();
        assert_eq!(load_checkpoint(&path, new.layout()).unwrap(), latest);
    }

    #[test]
    fn load_rejects_damaged_or_foreign_files() {
        let t = trainer(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        write_checkpoint(&path, &t.checkpoint(1, MeshDigest([0; 32])), t.layout()).unwrap();
        let bytes = std::fs::read(&path).unwrap();

        let truncated = dir.path().join("truncated.safetensors");
        std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(
            load_checkpoint(&truncated, t.layout()),
            Err(KernelError::Safetensors { .. })
        ));

        let foreign = dir.path().join("foreign.safetensors");
        let data = [0_u8; 4];
        let view = TensorView::new(Dtype::F32, vec![1], &data).unwrap();
        std::fs::write(
            &foreign,
            safetensors::serialize([("x", view)], None).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            load_checkpoint(&foreign, t.layout()),
            Err(KernelError::NotACheckpoint { .. })
        ));

        let config = OptimizerConfig::sgd(0.1, 0.0, false, 0.0).unwrap();
        let cnn = Trainer::new(ModelKind::Cnn, config, Device::Cpu, 1).unwrap();
        assert!(matches!(
            load_checkpoint(&path, cnn.layout()),
            Err(KernelError::MissingTensor { .. })
        ));
        assert!(load_checkpoint(&dir.path().join("absent"), t.layout()).is_err());
    }
}
