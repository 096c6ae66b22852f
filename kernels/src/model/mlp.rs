//! A 64→128→10 ReLU MLP for the 8×8 digits.

use tch::{Tensor, nn};

use super::Network;
use crate::data::{DIGIT_CLASSES, DIGIT_PIXELS, to_i64};
use crate::error::Result;

const HIDDEN: i64 = 128;

/// Parameters `fc1.{weight,bias}`, `fc2.{weight,bias}` — the names `scripts/mlp_step.py` uses.
#[derive(Debug)]
pub(crate) struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Mlp {
    pub(crate) fn new(root: &nn::Path<'_>) -> Self {
        let config = nn::LinearConfig::default();
        Self {
            fc1: nn::linear(root / "fc1", to_i64(DIGIT_PIXELS), HIDDEN, config),
            fc2: nn::linear(root / "fc2", HIDDEN, DIGIT_CLASSES, config),
        }
    }
}

impl Network for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.apply(&self.fc1).relu().apply(&self.fc2))
    }
}
