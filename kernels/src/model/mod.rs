//! The networks a peer can train. Each is a plain forward function over parameters registered in a
//! `tch::nn::VarStore`; training, flat buffers and optimizers live in [`crate::Trainer`].

mod cnn;
mod mlp;
mod script;
mod transformer;

use tch::{Tensor, nn};

pub(crate) use self::script::ScriptNet;
pub use self::{
    script::{Loss, SCRIPT_BYTES_MAX, ScriptSpec},
    transformer::{TransformerConfig, TransformerConfigError},
};
use crate::error::{KernelError, Result};

/// Which network to build. Every kind is constructed under a fixed seed by [`crate::Trainer::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelKind {
    /// 64→128→10 ReLU MLP for the 8×8 digits (9,610 parameters).
    Mlp,
    /// Two 3×3 convolutions (16, 32 channels), 2×2 max-pool, linear 512→10, for the digits.
    Cnn,
    /// Byte-level causal transformer for a text corpus; sizes by name (`tiny`, `small`, `base`) or
    /// shape through [`TransformerConfig`]'s `FromStr`.
    Transformer(TransformerConfig),
}

/// A network maps a batch's inputs to logits `[B, classes]` or `[B, T, vocab]` (or, for a user's
/// module, to whatever its loss compares with the targets).
pub(crate) trait Network: std::fmt::Debug + Send {
    fn forward(&self, xs: &Tensor) -> Result<Tensor>;

    /// The network's own loss of `xs` against `ys`, for networks that define one.
    fn module_loss(&self, _xs: &Tensor, _ys: &Tensor) -> Result<Tensor> {
        Err(KernelError::InvalidConfig(
            "this model has no loss method of its own",
        ))
    }

    /// Training (`true`) or evaluation mode, for networks whose layers tell them apart
    /// (dropout, batch-norm); the built-in ones do not.
    fn set_training(&self, _training: bool) -> Result<()> {
        Ok(())
    }
}

/// `mlp`, `cnn`, or `transformer:` and the shape (`layers=…,width=…,heads=…,context=…`).
impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mlp => f.write_str("mlp"),
            Self::Cnn => f.write_str("cnn"),
            Self::Transformer(shape) => write!(f, "transformer:{shape}"),
        }
    }
}

impl ModelKind {
    pub(crate) fn build(self, root: &nn::Path<'_>) -> Box<dyn Network> {
        match self {
            Self::Mlp => Box::new(mlp::Mlp::new(root)),
            Self::Cnn => Box::new(cnn::Cnn::new(root)),
            Self::Transformer(config) => Box::new(transformer::Transformer::new(root, config)),
        }
    }
}
