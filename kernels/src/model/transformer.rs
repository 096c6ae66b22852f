//! A tiny byte-level causal transformer (GPT-style, pre-norm, learned positions, no dropout so a
//! step is a deterministic function of parameters and batch).

use std::{fmt, str::FromStr};

use tch::{Kind, Tensor, nn};

use super::Network;
use crate::error::{KernelError, Result};

/// Vocabulary: the 256 byte values, so no tokenizer file is needed.
const VOCAB_SIZE: usize = 256;
/// [`VOCAB_SIZE`] as LibTorch sizes it.
const VOCAB: i64 = VOCAB_SIZE as i64;

/// Caps on each size, so that a typo on a command line (`width=76800`) is refused before LibTorch
/// tries to allocate it, and so that [`TransformerConfig::parameter_count`] cannot overflow: at
/// the caps a model has ≈ 1.0e11 parameters, far below `usize::MAX` on 64-bit targets.
const LAYERS_MAX: usize = 128;
/// Width cap (see [`LAYERS_MAX`]); 8192 is wider than any model a peer trains.
const WIDTH_MAX: usize = 8192;
/// Context cap in tokens (bytes); the attention matrix is `context²` per head.
const CONTEXT_MAX: usize = 8192;

/// The forms [`TransformerConfig::from_str`] accepts, quoted by every parse error.
const SHAPE_FORMS: &str = "expected tiny, small, base or layers=L,width=W,heads=H,context=T";

/// Shape of the transformer. Built with [`TransformerConfig::new`], which checks it, or parsed from
/// a size name (`tiny`, `small`, `base`) or the explicit form `layers=4,width=128,heads=4,context=128`
/// that [`Display`](fmt::Display) prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerConfig {
    context: i64,
    d_model: i64,
    heads: i64,
    layers: usize,
}

impl TransformerConfig {
    /// `context` tokens per window, width `d_model` split over `heads`, `layers` blocks.
    /// Errors unless every size is positive and within its cap and `heads` divides `d_model`.
    pub fn new(context: usize, d_model: usize, heads: usize, layers: usize) -> Result<Self> {
        Self::checked(context, d_model, heads, layers).map_err(KernelError::InvalidConfig)
    }

    /// The tiny default: context 64, width 64, 4 heads, 2 layers (137,216 parameters).
    #[must_use]
    pub fn tiny() -> Self {
        Self {
            context: 64,
            d_model: 64,
            heads: 4,
            layers: 2,
        }
    }

    /// A model that visibly learns in minutes on two CPU cores: context 128, width 128, 4 heads,
    /// 4 layers (875,520 parameters; step times in `docs/kernels.md`).
    #[must_use]
    pub fn small() -> Self {
        Self {
            context: 128,
            d_model: 128,
            heads: 4,
            layers: 4,
        }
    }

    /// A GPU model: context 512, width 768, 12 heads, 16 layers (114,194,176 parameters).
    #[must_use]
    pub fn base() -> Self {
        Self {
            context: 512,
            d_model: 768,
            heads: 12,
            layers: 16,
        }
    }

    /// Tokens per training window.
    #[must_use]
    pub fn context(&self) -> usize {
        usize::try_from(self.context).unwrap_or(0)
    }

    /// Transformer blocks.
    #[must_use]
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Width of the residual stream (`d_model`).
    #[must_use]
    pub fn width(&self) -> usize {
        usize::try_from(self.d_model).unwrap_or(0)
    }

    /// Attention heads; each has `width / heads` dimensions.
    #[must_use]
    pub fn heads(&self) -> usize {
        usize::try_from(self.heads).unwrap_or(0)
    }

    /// Exactly the number of `f32`s the built model registers (the trainer's flat length):
    /// token embedding `256·w`, positions `context·w`, per block `12·w² + 13·w` (two layer norms,
    /// the fused QKV, the output projection and the 4× MLP, all with biases), the final layer
    /// norm `2·w` and the byte head `256·w + 256`. The caps keep this far from overflow.
    #[must_use]
    pub fn parameter_count(&self) -> usize {
        let (w, vocab) = (self.width(), VOCAB_SIZE);
        let block = 12 * w * w + 13 * w;
        vocab * w + self.context() * w + self.layers * block + 2 * w + vocab * w + vocab
    }

    /// The checks of [`TransformerConfig::new`], with the broken rule as the error.
    fn checked(
        context: usize,
        d_model: usize,
        heads: usize,
        layers: usize,
    ) -> Result<Self, &'static str> {
        if context == 0 || d_model == 0 || heads == 0 || layers == 0 {
            return Err("transformer sizes must be positive");
        }
        if layers > LAYERS_MAX || d_model > WIDTH_MAX || context > CONTEXT_MAX {
            return Err("transformer size above its cap (layers 128, width 8192, context 8192)");
        }
        if !d_model.is_multiple_of(heads) {
            return Err("heads must divide d_model");
        }
        // Below the caps every size fits an i64.
        let to_i64 = |n: usize| i64::try_from(n).map_err(|_| "size too large");
        Ok(Self {
            context: to_i64(context)?,
            d_model: to_i64(d_model)?,
            heads: to_i64(heads)?,
            layers,
        })
    }

    /// The explicit form: exactly the four keys, each once, in any order.
    fn parse_shape(s: &str) -> Result<Self, TransformerConfigError> {
        const KEYS: [&str; 4] = ["layers", "width", "heads", "context"];
        let mut values: [Option<usize>; 4] = [None; 4];
        for pair in s.split(',') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| TransformerConfigError::NotAKeyValue(pair.trim().to_owned()))?;
            let (key, value) = (key.trim(), value.trim());
            let slot = KEYS
                .iter()
                .position(|&k| k == key)
                .ok_or_else(|| TransformerConfigError::UnknownKey(key.to_owned()))?;
            if values[slot].is_some() {
                return Err(TransformerConfigError::DuplicateKey(KEYS[slot]));
            }
            let number = value
                .parse()
                .map_err(|_| TransformerConfigError::NotANumber {
                    key: KEYS[slot],
                    value: value.to_owned(),
                })?;
            values[slot] = Some(number);
        }
        let mut sizes = [0_usize; 4];
        for (slot, value) in values.iter().enumerate() {
            sizes[slot] = value.ok_or(TransformerConfigError::MissingKey(KEYS[slot]))?;
        }
        let [layers, width, heads, context] = sizes;
        Self::checked(context, width, heads, layers).map_err(TransformerConfigError::BadShape)
    }
}

/// Why a string is not a [`TransformerConfig`]; every message names the accepted forms, so a
/// command-line error needs no other help text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformerConfigError {
    /// A word that is neither a size name nor a `key=value` list.
    #[error("unknown transformer size {0:?}: {forms}", forms = SHAPE_FORMS)]
    UnknownName(String),
    /// An item of the explicit form without `=`.
    #[error("transformer shape item {0:?} is not key=value: {forms}", forms = SHAPE_FORMS)]
    NotAKeyValue(String),
    /// A key other than `layers`, `width`, `heads`, `context`.
    #[error("unknown transformer shape key {0:?}: {forms}", forms = SHAPE_FORMS)]
    UnknownKey(String),
    /// A key given twice.
    #[error("transformer shape key {0} given twice: {forms}", forms = SHAPE_FORMS)]
    DuplicateKey(&'static str),
    /// One of the four keys is absent.
    #[error("transformer shape is missing {0}: {forms}", forms = SHAPE_FORMS)]
    MissingKey(&'static str),
    /// A value that is not a non-negative decimal integer.
    #[error("transformer shape {key}={value:?} is not a number: {forms}", forms = SHAPE_FORMS)]
    NotANumber {
        /// The key whose value failed.
        key: &'static str,
        /// The value as written.
        value: String,
    },
    /// All four numbers parsed but break a rule of [`TransformerConfig::new`].
    #[error("invalid transformer shape ({0}): {forms}", forms = SHAPE_FORMS)]
    BadShape(&'static str),
}

impl FromStr for TransformerConfig {
    type Err = TransformerConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            "base" => Ok(Self::base()),
            shape if shape.contains('=') => Self::parse_shape(shape),
            other => Err(TransformerConfigError::UnknownName(other.to_owned())),
        }
    }
}

/// The explicit form, which [`FromStr`] parses back to the same config.
impl fmt::Display for TransformerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "layers={},width={},heads={},context={}",
            self.layers, self.d_model, self.heads, self.context
        )
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
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let t = xs.size().get(1).copied().unwrap_or(0);
        let mut h = xs.apply(&self.tok) + self.pos.narrow(0, 0, t);
        for block in &self.blocks {
            h = block.forward(&h);
        }
        Ok(h.apply(&self.ln_f).apply(&self.head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_explicit_shapes_round_trip_through_display() {
        let tiny: TransformerConfig = "tiny".parse().unwrap();
        assert_eq!(tiny, TransformerConfig::tiny());
        assert_eq!(
            (tiny.layers(), tiny.width(), tiny.heads(), tiny.context()),
            (2, 64, 4, 64)
        );
        let small: TransformerConfig = "small".parse().unwrap();
        assert_eq!(small.to_string(), "layers=4,width=128,heads=4,context=128");
        let base: TransformerConfig = " base ".parse().unwrap();
        assert_eq!(base.to_string(), "layers=16,width=768,heads=12,context=512");
        for config in [
            tiny,
            small,
            base,
            TransformerConfig::new(32, 96, 3, 5).unwrap(),
        ] {
            let text = config.to_string();
            assert_eq!(text.parse::<TransformerConfig>(), Ok(config), "{text}");
            // The named sizes obey the rules that `new` enforces.
            let checked = TransformerConfig::new(
                config.context(),
                config.width(),
                config.heads(),
                config.layers(),
            );
            assert_eq!(checked.unwrap(), config);
        }
        // Any key order, spaces around items.
        let shuffled: TransformerConfig =
            "context=128, heads=4,width=128 ,layers=4".parse().unwrap();
        assert_eq!(shuffled, small);
    }

    #[test]
    fn bad_forms_are_refused_with_the_accepted_forms() {
        use TransformerConfigError as E;
        let cases: [(&str, E); 8] = [
            ("huge", E::UnknownName("huge".into())),
            ("", E::UnknownName(String::new())),
            ("layers=4,width=128,heads=4", E::MissingKey("context")),
            (
                "layers=4,width=128,heads=4,context=128,depth=2",
                E::UnknownKey("depth".into()),
            ),
            (
                "layers=4,layers=4,width=128,heads=4,context=128",
                E::DuplicateKey("layers"),
            ),
            (
                "layers=4,width=12x,heads=4,context=128",
                E::NotANumber {
                    key: "width",
                    value: "12x".into(),
                },
            ),
            (
                "layers=4,width=128,heads=4,context=128,",
                E::NotAKeyValue(String::new()),
            ),
            (
                "layers=4,width=128,heads=3,context=128",
                E::BadShape("heads must divide d_model"),
            ),
        ];
        for (text, expected) in cases {
            let error = text.parse::<TransformerConfig>().unwrap_err();
            assert_eq!(error, expected, "{text:?}");
            let message = error.to_string();
            assert!(!message.contains('\n'), "{message}");
            assert!(message.ends_with(SHAPE_FORMS), "{message}");
        }
        for over in [
            "layers=129,width=64,heads=4,context=64",
            "layers=1,width=64,heads=4,context=0",
        ] {
            assert!(
                matches!(over.parse::<TransformerConfig>(), Err(E::BadShape(_))),
                "{over}"
            );
        }
        assert_eq!(
            "layers=4,width=128,heads=4"
                .parse::<TransformerConfig>()
                .unwrap_err()
                .to_string(),
            "transformer shape is missing context: expected tiny, small, base or \
             layers=L,width=W,heads=H,context=T"
        );
    }

    #[test]
    fn parameter_counts_of_the_named_sizes() {
        // Hand-computed from the layer list; the integration test `transformer_sizes` checks
        // tiny and small against a built model.
        assert_eq!(TransformerConfig::tiny().parameter_count(), 137_216);
        assert_eq!(TransformerConfig::small().parameter_count(), 875_520);
        assert_eq!(TransformerConfig::base().parameter_count(), 114_194_176);
        assert!(TransformerConfig::base().parameter_count() >= 100_000_000);
    }
}
