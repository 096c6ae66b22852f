//! Optimizers over flat `f32` buffers, in plain Rust.
//!
//! Why not LibTorch's: every peer applies the same averaged gradient, and must end with
//! bit-identical parameters so digests agree. These loops are element-wise, in a fixed order, use
//! only IEEE-exact operations (`+ - * /` and `sqrt`; no fused multiply-add, no `powf`: bias
//! corrections come from exponentiation by squaring in f64), so the result depends only on the
//! inputs. Their state is one flat vector plus a step count, which is what state sync ships.
//! The update rules follow PyTorch's single-tensor `SGD` and `AdamW` (checked in tests).

/// A rejected optimizer configuration or a buffer of the wrong length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A hyper-parameter is out of range; the message names it and its range.
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
    /// A flat buffer has a length other than the parameters'.
    #[error("{what}: expected {expected} values, got {found}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// The element count required.
        expected: usize,
        /// The buffer's element count.
        found: usize,
    },
}

type Result<T, E = OptimError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    AdamW {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
}

/// A validated optimizer choice and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerConfig {
    rule: Rule,
}

fn check(ok: bool, reason: &'static str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(OptimError::InvalidConfig(reason))
    }
}

impl OptimizerConfig {
    /// SGD with (optionally Nesterov) momentum and L2 weight decay, as `torch.optim.SGD`
    /// (dampening 0). Errors unless `lr > 0`, `0 <= momentum < 1`, `weight_decay >= 0`, and
    /// `nesterov` comes with a positive momentum.
    pub fn sgd(lr: f32, momentum: f32, nesterov: bool, weight_decay: f32) -> Result<Self> {
        check(lr > 0.0 && lr.is_finite(), "sgd: lr must be positive")?;
        check(
            (0.0..1.0).contains(&momentum),
            "sgd: momentum must be in [0, 1)",
        )?;
        check(
            weight_decay >= 0.0 && weight_decay.is_finite(),
            "sgd: weight_decay must be >= 0",
        )?;
        check(
            !nesterov || momentum > 0.0,
            "sgd: nesterov needs momentum > 0",
        )?;
        Ok(Self {
            rule: Rule::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
            },
        })
    }

    /// AdamW with decoupled weight decay, as `torch.optim.AdamW`. Errors unless `lr > 0`,
    /// both betas in `[0, 1)`, `eps > 0` and `weight_decay >= 0`.
    pub fn adamw(lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Result<Self> {
        check(lr > 0.0 && lr.is_finite(), "adamw: lr must be positive")?;
        check(
            (0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2),
            "adamw: betas in [0, 1)",
        )?;
        check(eps > 0.0 && eps.is_finite(), "adamw: eps must be positive")?;
        check(
            weight_decay >= 0.0 && weight_decay.is_finite(),
            "adamw: weight_decay must be >= 0",
        )?;
        Ok(Self {
            rule: Rule::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            },
        })
    }

    /// Length of the flat state for `params` parameters: momentum buffer (SGD with momentum),
    /// first then second moments (AdamW), nothing for plain SGD.
    #[must_use]
    pub fn state_len(&self, params: usize) -> usize {
        match self.rule {
            Rule::Sgd { momentum: 0.0, .. } => 0,
            Rule::Sgd { .. } => params,
            Rule::AdamW { .. } => 2 * params,
        }
    }
}

/// An optimizer's full state: steps taken and one flat vector (layout from [`OptimizerConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Updates applied so far.
    pub step: u64,
    /// Momentum / moment buffers, flat.
    pub values: Vec<f32>,
}

/// A flat-buffer optimizer: [`OptimizerConfig`] plus [`OptimizerState`].
#[derive(Debug, Clone)]
pub struct Optimizer {
    config: OptimizerConfig,
    state: OptimizerState,
}

impl Optimizer {
    /// A fresh optimizer for `params` parameters.
    #[must_use]
    pub fn new(config: OptimizerConfig, params: usize) -> Self {
        let values = vec![0.0; config.state_len(params)];
        Self {
            config,
            state: OptimizerState { step: 0, values },
        }
    }

    /// The hyper-parameters.
    #[must_use]
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The state to checkpoint or sync.
    #[must_use]
    pub fn state(&self) -> &OptimizerState {
        &self.state
    }

    /// Replaces the state (after a restore). Errors if its length does not fit `params`.
    pub fn set_state(&mut self, state: OptimizerState, params: usize) -> Result<()> {
        let expected = self.config.state_len(params);
        if state.values.len() != expected {
            return Err(OptimError::LengthMismatch {
                what: "optimizer state",
                expected,
                found: state.values.len(),
            });
        }
        self.state = state;
        Ok(())
    }

    /// One update of `params` with gradient `grads` (same length; the state must match too).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<()> {
        let n = params.len();
        let expected = self.config.state_len(n);
        if grads.len() != n || self.state.values.len() != expected {
            return Err(OptimError::LengthMismatch {
                what: "optimizer step",
                expected: n,
                found: grads.len(),
            });
        }
        let first = self.state.step == 0;
        self.state.step += 1;
        match self.config.rule {
            Rule::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
            } => {
                let sgd = Sgd {
                    lr,
                    momentum,
                    nesterov,
                    weight_decay,
                    first,
                };
                sgd.apply(params, grads, &mut self.state.values);
            }
            Rule::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let (m, v) = self.state.values.split_at_mut(n);
                let adam = AdamW::at_step(lr, beta1, beta2, eps, weight_decay, self.state.step);
                adam.apply(params, grads, m, v);
            }
        }
        Ok(())
    }
}

struct Sgd {
    lr: f32,
    momentum: f32,
    nesterov: bool,
    weight_decay: f32,
    first: bool,
}

impl Sgd {
    fn apply(&self, params: &mut [f32], grads: &[f32], buf: &mut [f32]) {
        if buf.is_empty() {
            for (p, &g) in params.iter_mut().zip(grads) {
                *p -= self.lr * (g + self.weight_decay * *p);
            }
            return;
        }
        for ((p, &g), b) in params.iter_mut().zip(grads).zip(buf.iter_mut()) {
            let g = g + self.weight_decay * *p;
            // torch: the buffer starts as a copy of the first gradient.
            *b = if self.first {
                g
            } else {
                self.momentum * *b + g
            };
            let update = if self.nesterov {
                g + self.momentum * *b
            } else {
                *b
            };
            *p -= self.lr * update;
        }
    }
}

struct AdamW {
    decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    bias2_sqrt: f32,
}

impl AdamW {
    fn at_step(lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, step: u64) -> Self {
        let bias1 = 1.0 - pow(f64::from(beta1), step);
        let bias2 = 1.0 - pow(f64::from(beta2), step);
        #[allow(clippy::cast_possible_truncation)] // f64 -> f32 rounding is intended, as in torch.
        Self {
            decay: 1.0 - lr * weight_decay,
            beta1,
            beta2,
            eps,
            step_size: (f64::from(lr) / bias1) as f32,
            bias2_sqrt: bias2.sqrt() as f32,
        }
    }

    fn apply(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (one_minus_b1, one_minus_b2) = (1.0 - self.beta1, 1.0 - self.beta2);
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            *p *= self.decay;
            *m += one_minus_b1 * (g - *m);
            *v = self.beta2 * *v + one_minus_b2 * g * g;
            let denom = v.sqrt() / self.bias2_sqrt + self.eps;
            *p -= self.step_size * (*m / denom);
        }
    }
}

/// `base^exp` by squaring: only multiplications, so identical on every IEEE machine.
fn pow(base: f64, mut exp: u64) -> f64 {
    let (mut acc, mut sq) = (1.0, base);
    while exp > 0 {
        if exp & 1 == 1 {
            acc *= sq;
        }
        sq *= sq;
        exp >>= 1;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_hyper_parameters() {
        assert!(OptimizerConfig::sgd(0.0, 0.9, false, 0.0).is_err());
        assert!(OptimizerConfig::sgd(0.1, 1.0, false, 0.0).is_err());
        assert!(OptimizerConfig::sgd(0.1, 0.0, true, 0.0).is_err());
        assert!(OptimizerConfig::adamw(1e-3, 0.9, 1.0, 1e-8, 0.0).is_err());
        assert!(OptimizerConfig::adamw(1e-3, 0.9, 0.999, 0.0, 0.0).is_err());
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let config = OptimizerConfig::sgd(0.5, 0.9, false, 0.0).unwrap();
        let mut opt = Optimizer::new(config, 1);
        let mut p = [1.0_f32];
        opt.step(&mut p, &[1.0]).unwrap(); // buf = 1, p = 1 - 0.5
        opt.step(&mut p, &[1.0]).unwrap(); // buf = 1.9, p = 0.5 - 0.95
        assert!((p[0] - (-0.45)).abs() < 1e-6, "{p:?}");
        assert_eq!(opt.state().step, 2);
        assert!(opt.step(&mut p, &[1.0, 2.0]).is_err());
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // After one step m̂ = g and v̂ = g², so the update is lr·g/(|g| + eps) ≈ lr·sign(g).
        let config = OptimizerConfig::adamw(0.01, 0.9, 0.999, 1e-8, 0.0).unwrap();
        let mut opt = Optimizer::new(config, 2);
        let mut p = [0.0_f32, 0.0];
        opt.step(&mut p, &[3.0, -0.5]).unwrap();
        assert!(
            (p[0] + 0.01).abs() < 1e-6 && (p[1] - 0.01).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!(pow(0.5, 10), 0.5f64.powi(10));
    }
}
