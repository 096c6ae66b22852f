//! A small CNN for the 8×8 digits: conv3×3(16) → ReLU → conv3×3(32) → ReLU → maxpool 2 → linear.

use tch::{Tensor, nn};

use super::Network;
use crate::data::DIGIT_CLASSES;
use crate::error::Result;

const SIDE: i64 = 8;
const CHANNELS: [i64; 2] = [16, 32];

#[derive(Debug)]
pub(crate) struct Cnn {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc: nn::Linear,
}

impl Cnn {
    pub(crate) fn new(root: &nn::Path<'_>) -> Self {
        let same = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let pooled = CHANNELS[1] * (SIDE / 2) * (SIDE / 2);
        Self {
            conv1: nn::conv2d(root / "conv1", 1, CHANNELS[0], 3, same),
            conv2: nn::conv2d(root / "conv2", CHANNELS[0], CHANNELS[1], 3, same),
            fc: nn::linear(root / "fc", pooled, DIGIT_CLASSES, Default::default()),
        }
    }
}

impl Network for Cnn {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs
            .f_view([-1, 1, SIDE, SIDE])?
            .apply(&self.conv1)
            .relu()
            .apply(&self.conv2)
            .relu()
            .max_pool2d_default(2)
            .flatten(1, -1)
            .apply(&self.fc))
    }
}
