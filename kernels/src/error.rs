//! The one error type of the kernels (LibTorch, data, checkpoints, and the ground crate's
//! optimizers and codecs as they run inside them).

use std::path::PathBuf;

/// Everything that can go wrong while loading data, training or checkpointing.
///
/// File- and peer-derived problems are values of this enum, never panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// LibTorch reported an error (shape mismatch, device unavailable, ...).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing (`read`, `write`, `rename`, `fsync`, ...).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A safetensors file could not be parsed or written.
    #[error("safetensors {path}: {reason}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A tensor we need is absent from a file.
    #[error("{path}: missing tensor {name}")]
    MissingTensor {
        /// The file concerned.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A tensor has the wrong dtype or shape.
    #[error("{name}: expected {expected}, found {found}")]
    BadTensor {
        /// The tensor's name.
        name: String,
        /// What we require, e.g. `F32 [128, 64]`.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A checkpoint's header does not name our format.
    #[error("{path}: not a gradmesh checkpoint (format {found:?})")]
    NotACheckpoint {
        /// The file concerned.
        path: PathBuf,
        /// The format tag found, if any.
        found: Option<String>,
    },
    /// A flat buffer has a length other than the layout's.
    #[error("{what}: expected {expected} values, got {found}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// The layout's element count.
        expected: usize,
        /// The buffer's element count.
        found: usize,
    },
    /// Serialized training state is malformed.
    #[error("training state: {0}")]
    BadState(&'static str),
    /// The requested device cannot be used in this process.
    #[error("device {0} is not available")]
    DeviceUnavailable(String),
    /// A device name other than `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device {0:?} (expected cpu, cuda or cuda:N)")]
    UnknownDevice(String),
    /// A data set is too small for the requested batch or context.
    #[error("data set too small: {0}")]
    DatasetTooSmall(&'static str),
    /// A gradient codec failed (a non-finite gradient, or a mesh shape it cannot split).
    #[error("codec: {0}")]
    Codec(#[from] gradmesh_math::codec::CodecError),
    /// An optimizer was misconfigured or given a buffer of the wrong length.
    #[error("optimizer: {0}")]
    Optim(#[from] gradmesh_math::OptimError),
    /// A model or local-mesh hyper-parameter is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
    /// A TorchScript model file was refused (too large, not TorchScript, unusable parameters).
    #[error("model {path}: {reason}")]
    Script {
        /// The file concerned.
        path: PathBuf,
        /// Why, in one line.
        reason: String,
    },
    /// A user's model failed on a batch (an input shape or dtype it does not take, a missing
    /// `loss` method): LibTorch's first line.
    #[error("the model failed: {0}")]
    ModelRefused(String),
}

impl KernelError {
    /// A user's model failing on a batch: LibTorch's TorchScript errors carry a C++ backtrace
    /// and the script's source, so only their first line is kept.
    pub(crate) fn refused(error: &tch::TchError) -> Self {
        Self::ModelRefused(first_line(error).to_owned())
    }
}

/// The first non-empty line of a LibTorch error.
pub(crate) fn first_line(error: &tch::TchError) -> &str {
    let text = match error {
        tch::TchError::Torch(text) => text.as_str(),
        _ => return "LibTorch refused it",
    };
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("LibTorch refused it")
}

/// Shorthand used across the crate.
pub(crate) type Result<T, E = KernelError> = std::result::Result<T, E>;

pub(crate) fn io_error(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> KernelError {
    let path = path.to_path_buf();
    move |source| KernelError::Io { op, path, source }
}
