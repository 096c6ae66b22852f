//! A user's own model: a TorchScript module exported from PyTorch (`torch.jit.script` or
//! `torch.jit.trace`, then `.save(path)`), trained through LibTorch with no Python at run time.
//!
//! - **Parameters**: every tensor of `named_parameters()` (PyTorch's dotted names, e.g.
//!   `blocks.0.attn.qkv.weight`) becomes a span of the flat buffer, sorted by name like the
//!   built-in models. They must be `float32` (export with `model.float()`).
//! - **Buffers** (batch-norm running statistics) stay local to each peer: its training forward
//!   passes update them, they are neither averaged, synced nor checkpointed (tch 0.24 cannot list
//!   a TorchScript module's buffers). Models for a mesh normalize with `GroupNorm` or `LayerNorm`,
//!   as federated learning does for peers with unlike data; with batch-norm, every peer evaluates
//!   with its own statistics.
//! - **Loss**: [`Loss`] on `forward(x)`, or the module's own `loss(x, y)` method.
//! - **Trust**: loading a TorchScript file runs the code it contains inside LibTorch's
//!   interpreter. Every peer of a mesh must agree on the file (the node prints its digests and
//!   tells them to peers); files above [`SCRIPT_BYTES_MAX`] are refused before they are read.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Mutex, PoisonError},
};

use tch::{CModule, Kind, Tensor};

use super::Network;
use crate::error::{KernelError, Result, first_line, io_error};

/// The largest TorchScript file a node reads (2 GiB: a 500 M-parameter fp32 model).
pub const SCRIPT_BYTES_MAX: u64 = 2 << 30;

/// How a model's output is turned into the loss it trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loss {
    /// Mean cross-entropy of logits `[..., C]` against class indices `[...]` (as
    /// `torch.nn.functional.cross_entropy` on the flattened tensors).
    #[default]
    CrossEntropy,
    /// Mean squared error of the output against float targets of the same shape.
    Mse,
    /// The module's own `loss(x, y)` method, which returns a scalar.
    Module,
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CrossEntropy => "cross-entropy",
            Self::Mse => "mse",
            Self::Module => "module",
        })
    }
}

impl FromStr for Loss {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cross-entropy" => Ok(Self::CrossEntropy),
            "mse" => Ok(Self::Mse),
            "module" => Ok(Self::Module),
            _ => Err(KernelError::InvalidConfig(
                "loss must be cross-entropy, mse or module (the module's own loss(x, y) method)",
            )),
        }
    }
}

/// A TorchScript file and the loss to train it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSpec {
    /// The file written by `ScriptModule.save`.
    pub path: PathBuf,
    /// How the loss is computed.
    pub loss: Loss,
}

/// A loaded module and the mode it is in. LibTorch switches a module between training and
/// evaluation mode in place; the mutex lets [`Network::set_training`] (which takes `&self`) do
/// that without aliasing.
#[derive(Debug)]
pub(crate) struct ScriptNet {
    module: Mutex<(CModule, bool)>,
}

/// What loading a module yields: the network, its parameters by name and the file's blake3
/// digest.
pub(crate) struct Loaded {
    pub(crate) net: ScriptNet,
    pub(crate) parameters: Vec<(String, Tensor)>,
    pub(crate) file_digest: [u8; 32],
}

impl ScriptNet {
    /// Reads and loads `path` onto `device` (see the module docs for the rules).
    pub(crate) fn load(path: &Path, device: tch::Device) -> Result<Loaded> {
        let refuse = |reason: String| KernelError::Script {
            path: path.to_path_buf(),
            reason,
        };
        let size = std::fs::metadata(path)
            .map_err(io_error("read", path))?
            .len();
        if size > SCRIPT_BYTES_MAX {
            return Err(refuse(format!(
                "{size} bytes, above the {SCRIPT_BYTES_MAX}-byte bound for model files"
            )));
        }
        let bytes = std::fs::read(path).map_err(io_error("read", path))?;
        let file_digest = *blake3::hash(&bytes).as_bytes();
        let mut module = CModule::load_data_on_device(&mut bytes.as_slice(), device)
            .map_err(|e| refuse(format!("not a TorchScript module: {}", first_line(&e))))?;
        module
            .f_set_train()
            .map_err(|e| refuse(first_line(&e).to_owned()))?;
        let parameters = module
            .named_parameters()
            .map_err(|e| refuse(first_line(&e).to_owned()))?;
        if parameters.is_empty() {
            return Err(refuse("it has no parameters to train".to_owned()));
        }
        if let Some((name, t)) = parameters.iter().find(|(_, t)| t.kind() != Kind::Float) {
            return Err(refuse(format!(
                "parameter {name} is {:?}, only float32 parameters train (export after \
                 model.float())",
                t.kind()
            )));
        }
        Ok(Loaded {
            net: Self {
                module: Mutex::new((module, true)),
            },
            parameters,
            file_digest,
        })
    }

    fn run(&self, call: impl FnOnce(&CModule) -> Result<Tensor, tch::TchError>) -> Result<Tensor> {
        let guard = self.module.lock().unwrap_or_else(PoisonError::into_inner);
        call(&guard.0).map_err(|e| KernelError::refused(&e))
    }
}

impl Network for ScriptNet {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(|m| m.forward_ts(&[xs]))
    }

    fn module_loss(&self, xs: &Tensor, ys: &Tensor) -> Result<Tensor> {
        self.run(|m| m.method_ts("loss", &[xs, ys]))
    }

    fn set_training(&self, training: bool) -> Result<()> {
        let mut guard = self.module.lock().unwrap_or_else(PoisonError::into_inner);
        let (module, mode) = &mut *guard;
        if *mode != training {
            if training {
                module.f_set_train()?;
            } else {
                module.f_set_eval()?;
            }
            *mode = training;
        }
        Ok(())
    }
}
