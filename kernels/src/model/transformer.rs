//! A tiny byte-level causal transformer (GPT-style, pre-norm, learned positions, no dropout so a
//! step is a deterministic function of parameters and batch).

use tch::{Kind, Tensor, nn};

use super::Network;
use crate::error::{KernelError, Result};

/// Vocabulary: the 256 byte values, so no tokenizer file is needed.
const VOCAB: i64 = 256;

/// Shape of the transformer. Built with [`TransformerConfig::new`], which checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerConfig {
    context: i64,
    d_model: i64,
    heads: i64,
    layers: usize,
}

impl TransformerConfig {
    /// `context` tokens per window, width `d_model` split over `heads`, `layers` blocks.
    /// Errors unless every size is positive and `heads` divides `d_model`.
    pub fn new(context: usize, d_model: usize, heads: usize, layers: usize) -> Result<Self> {
        if context == 0 || d_model == 0 || heads == 0 || layers == 0 {
            return Err(KernelError::InvalidConfig(
                "transformer sizes must be positive",
            ));
        }
        if !d_model.is_multiple_of(heads) {
            return Err(KernelError::InvalidConfig("heads must divide d_model"));
        }
        let to_i64 =
            |n: usize| i64::try_from(n).map_err(|_| KernelError::InvalidConfig("size too large"));
        Ok(Self {
            context: to_i64(context)?,
            d_model: to_i64(d_model)?,
            heads: to_i64(heads)?,
            layers,
        })
    }

    /// The tiny default: context 64, width 64, 4 heads, 2 layers (≈135k parameters).
    #[must_use]
    pub fn tiny() -> Self {
        Self {
            context: 64,
            d_model: 64,
            heads: 4,
            layers: 2,
        }
    }

    /// Tokens per training window.
    #[must_use]
    pub fn context(&self) -> usize {
        usize::try_from(self.context).unwrap_or(0)
    }
}

#[derive(Debug)]
struct Block {
    ln1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    ln2: nn::LayerNorm,
    mlp_in: nn::Linear,
    mlp_out: nn::Linear,
    heads: i64,
}

impl Block {
    fn new(p: &nn::Path<'_>, d: i64, heads: i64) -> Self {
        let lin = nn::LinearConfig::default();
        Self {
            ln1: nn::layer_norm(p / "ln1", vec![d], Default::default()),
            qkv: nn::linear(p / "qkv", d, 3 * d, lin),
            proj: nn::linear(p / "proj", d, d, lin),
            ln2: nn::layer_norm(p / "ln2", vec![d], Default::default()),
            mlp_in: nn::linear(p / "mlp_in", d, 4 * d, lin),
            mlp_out: nn::linear(p / "mlp_out", 4 * d, d, lin),
            heads,
        }
    }

    fn attention(&self, xs: &Tensor) -> Tensor {
        let (b, t, d) = xs.size3().unwrap_or((0, 0, 0));
        let head = d / self.heads;
        let split = |x: &Tensor| x.view([b, t, self.heads, head]).transpose(1, 2);
        let qkv = xs.apply(&self.qkv).chunk(3, -1);
        let (q, k, v) = (split(&qkv[0]), split(&qkv[1]), split(&qkv[2]));
        let future = Tensor::ones([t, t], (Kind::Bool, xs.device())).triu(1);
        let scores = q.matmul(&k.transpose(-2, -1)) * (1.0 / (head as f64).sqrt());
        let weights = scores
            .masked_fill(&future, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float);
        weights
            .matmul(&v)
            .transpose(1, 2)
            .contiguous()
            .view([b, t, d])
            .apply(&self.proj)
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let xs = xs + self.attention(&xs.apply(&self.ln1));
        let mlp = xs
            .apply(&self.ln2)
            .apply(&self.mlp_in)
            .gelu("none")
            .apply(&self.mlp_out);
        xs + mlp
    }
}

#[derive(Debug)]
pub(crate) struct Transformer {
    tok: nn::Embedding,
    pos: Tensor,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
    head: nn::Linear,
}

impl Transformer {
    pub(crate) fn new(root: &nn::Path<'_>, c: TransformerConfig) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Self {
            tok: nn::embedding(root / "tok", VOCAB, c.d_model, Default::default()),
            pos: root.var("pos", &[c.context, c.d_model], init),
            blocks: (0..c.layers)
                .map(|i| Block::new(&(root / format!("block{i}")), c.d_model, c.heads))
                .collect(),
            ln_f: nn::layer_norm(root / "ln_f", vec![c.d_model], Default::default()),
            head: nn::linear(root / "head", c.d_model, VOCAB, Default::default()),
        }
    }
}

impl Network for Transformer {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let t = xs.size().get(1).copied().unwrap_or(0);
        let mut h = xs.apply(&self.tok) + self.pos.narrow(0, 0, t);
        for block in &self.blocks {
            h = block.forward(&h);
        }
        h.apply(&self.ln_f).apply(&self.head)
    }
}
