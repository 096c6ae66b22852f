//! Flat views of a model: every parameter (and its gradient) packed back to back into one `f32`
//! buffer in a fixed order, so the network layer can all-reduce, hash and ship one slice.
//!
//! Design: the flat buffers are plain `Vec<f32>`s owned by the [`crate::Trainer`], not a tensor
//! whose slices alias the parameters. Gathering is one `memcpy` per parameter (`copy_data`);
//! scattering wraps the source sub-slice in a borrowed, non-owning tensor (`from_blob`) and
//! `copy_`s it into the parameter or its `.grad()`, so the hot loop allocates no tensor storage and
//! the same code works when the parameters live on a GPU. Parameters are ordered by name (sorted),
//! not by creation order, so the layout is the same on every peer and in every checkpoint.

use tch::{Kind, Tensor, nn::VarStore};

use crate::error::{KernelError, Result};

/// One parameter's place in the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpan {
    /// The VarStore name, e.g. `fc1.weight`.
    pub name: String,
    /// The tensor's shape.
    pub shape: Vec<i64>,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl ParamSpan {
    /// The element range of this parameter in the flat buffer.
    #[must_use]
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The order and shapes of a model's parameters in its flat buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatLayout {
    spans: Vec<ParamSpan>,
    len: usize,
}

impl FlatLayout {
    /// Parameters in flat order (sorted by name).
    #[must_use]
    pub fn spans(&self) -> &[ParamSpan] {
        &self.spans
    }

    /// Total number of `f32` elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the model has no parameters.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// blake3 of every parameter's name and shape in flat order: equal exactly when two models
    /// have the same architecture as far as training and checkpoints can tell.
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"gradmesh-layout-v1");
        for span in &self.spans {
            hasher.update(&(span.name.len() as u64).to_le_bytes());
            hasher.update(span.name.as_bytes());
            hasher.update(&(span.shape.len() as u64).to_le_bytes());
            for d in &span.shape {
                hasher.update(&d.to_le_bytes());
            }
        }
        *hasher.finalize().as_bytes()
    }

    pub(crate) fn check(&self, what: &'static str, found: usize) -> Result<()> {
        if found == self.len {
            Ok(())
        } else {
            Err(KernelError::LengthMismatch {
                what,
                expected: self.len,
                found,
            })
        }
    }
}

/// The parameter tensors of a VarStore in [`FlatLayout`] order, with gather/scatter to flat slices.
#[derive(Debug)]
pub struct FlatParams {
    layout: FlatLayout,
    tensors: Vec<Tensor>,
}

impl FlatParams {
    pub(crate) fn new(vs: &VarStore) -> Self {
        Self::from_named(vs.variables())
    }

    /// The tensors `named`, ordered by name.
    pub(crate) fn from_named(named: impl IntoIterator<Item = (String, Tensor)>) -> Self {
        let sorted: std::collections::BTreeMap<String, Tensor> = named.into_iter().collect();
        let mut spans = Vec::with_capacity(sorted.len());
        let mut offset = 0;
        for (name, tensor) in &sorted {
            let len = tensor.numel();
            spans.push(ParamSpan {
                name: name.clone(),
                shape: tensor.size(),
                offset,
                len,
            });
            offset += len;
        }
        let layout = FlatLayout { spans, len: offset };
        Self {
            layout,
            tensors: sorted.into_values().collect(),
        }
    }

    /// The layout these tensors follow.
    #[must_use]
    pub fn layout(&self) -> &FlatLayout {
        &self.layout
    }

    /// Copies every parameter into `out` (length [`FlatLayout::len`]).
    pub fn gather_params(&self, out: &mut [f32]) -> Result<()> {
        self.layout.check("parameters", out.len())?;
        for (tensor, span) in self.tensors.iter().zip(&self.layout.spans) {
            tensor.f_copy_data(&mut out[span.range()], span.len)?;
        }
        Ok(())
    }

    /// Copies every gradient into `out`; a parameter without a gradient yet contributes zeros.
    pub fn gather_grads(&self, out: &mut [f32]) -> Result<()> {
        self.layout.check("gradients", out.len())?;
        for (tensor, span) in self.tensors.iter().zip(&self.layout.spans) {
            let grad = tensor.grad();
            if grad.defined() {
                grad.f_copy_data(&mut out[span.range()], span.len)?;
            } else {
                out[span.range()].fill(0.0);
            }
        }
        Ok(())
    }

    /// Overwrites every parameter from `src` (outside autograd).
    pub fn scatter_params(&mut self, src: &[f32]) -> Result<()> {
        self.layout.check("parameters", src.len())?;
        let _guard = tch::no_grad_guard();
        for (tensor, span) in self.tensors.iter_mut().zip(&self.layout.spans) {
            copy_into(tensor, &src[span.range()], &span.shape)?;
        }
        Ok(())
    }

    /// Overwrites every `.grad()` from `src`, e.g. with a peer-averaged gradient before a LibTorch
    /// optimizer step. Errors with [`KernelError::BadState`] before the first backward pass.
    pub fn scatter_grads(&mut self, src: &[f32]) -> Result<()> {
        self.layout.check("gradients", src.len())?;
        let _guard = tch::no_grad_guard();
        for (tensor, span) in self.tensors.iter().zip(&self.layout.spans) {
            let mut grad = tensor.grad();
            if !grad.defined() {
                return Err(KernelError::BadState(
                    "no gradients before the first backward pass",
                ));
            }
            copy_into(&mut grad, &src[span.range()], &span.shape)?;
        }
        Ok(())
    }

    /// Zeroes every defined gradient in place (keeps the gradient tensors, so no reallocation).
    pub(crate) fn zero_grads(&mut self) {
        for tensor in &mut self.tensors {
            tensor.zero_grad();
        }
    }
}

/// Copies host values `src` into `dst` (any device) without allocating tensor storage.
fn copy_into(dst: &mut Tensor, src: &[f32], shape: &[i64]) -> Result<()> {
    // SAFETY: `view` borrows `src`'s memory without owning it. `src` is a live, initialized,
    // contiguous f32 slice whose length equals the product of `shape` (checked by the layout); the
    // view is only read by the synchronous `copy_` below (a host-to-device copy from pageable
    // memory completes before returning) and is dropped before this function returns.
    let view = unsafe {
        Tensor::f_from_blob(
            src.as_ptr().cast::<u8>(),
            shape,
            &[],
            Kind::Float,
            tch::Device::Cpu,
        )?
    };
    dst.f_copy_(&view)?;
    Ok(())
}
