//! Data sets: the 8×8 digits exported by `scripts/export_digits.py` and the text corpus exported by
//! `scripts/export_corpus.py`, both read from `data/` (no downloads at run time), plus seeded
//! batch samplers whose output depends only on `(seed, step)`, so a restored peer resumes the same
//! sequence without any sampler state of its own.

use std::path::Path;

use rand_chacha::{
    ChaCha8Rng,
    rand_core::{RngCore, SeedableRng},
};
use safetensors::{Dtype, SafeTensors};
use tch::Tensor;

use crate::{
    device::Device,
    error::{KernelError, Result, io_error},
};

/// Pixels per digit image (8×8).
pub(crate) const DIGIT_PIXELS: usize = 64;
/// Digit classes.
pub(crate) const DIGIT_CLASSES: i64 = 10;

/// Inputs and targets on one device: images `[B, 64]` f32 with labels `[B]` i64, or token
/// windows `[B, T]` i64 with next-token targets `[B, T]` i64.
#[derive(Debug)]
pub struct Batch {
    pub(crate) x: Tensor,
    pub(crate) y: Tensor,
}

impl Batch {
    /// Examples in the batch (the leading dimension), which is the weight of this batch's mean
    /// gradient when peers average gradients of unequal batches.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::try_from(self.x.size().first().copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Whether the batch holds no examples.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A digits batch from host data: `x` holds `y.len()` rows of 64 pixels, `y` labels in 0..10.
    pub fn images(x: &[f32], y: &[i64], device: Device) -> Result<Self> {
        if x.len() != y.len() * DIGIT_PIXELS {
            return Err(KernelError::LengthMismatch {
                what: "image pixels",
                expected: y.len() * DIGIT_PIXELS,
                found: x.len(),
            });
        }
        check_labels("labels", y)?;
        let rows = to_i64(y.len());
        Ok(Self {
            x: Tensor::from_slice(x)
                .view([rows, to_i64(DIGIT_PIXELS)])
                .to_device(device.tch()),
            y: Tensor::from_slice(y).to_device(device.tch()),
        })
    }

    /// Examples `start..start + len` of this batch (a view, no copy).
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        let (start, len) = (to_i64(start), to_i64(len));
        Ok(Self {
            x: self.x.f_narrow(0, start, len)?,
            y: self.y.f_narrow(0, start, len)?,
        })
    }
}

/// The digits set: 1,437 training and 360 test images, on one device.
#[derive(Debug)]
pub struct Dataset {
    train: Batch,
    test: Batch,
}

impl Dataset {
    /// Loads `data/digits.safetensors` (tensors `train_x`, `train_y`, `test_x`, `test_y`) and checks
    /// dtypes, shapes and label range before any tensor is built.
    pub fn load_digits(path: &Path, device: Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_error("read", path))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| KernelError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let train = digits_split(&file, path, "train", device)?;
        let test = digits_split(&file, path, "test", device)?;
        Ok(Self { train, test })
    }

    /// Training examples.
    #[must_use]
    pub fn train_len(&self) -> usize {
        self.train.len()
    }

    /// The training examples at `indices` (e.g. from a [`BatchSampler`]).
    pub fn train_batch(&self, indices: &[i64]) -> Result<Batch> {
        let index = Tensor::from_slice(indices).to_device(self.train.x.device());
        Ok(Batch {
            x: self.train.x.f_index_select(0, &index)?,
            y: self.train.y.f_index_select(0, &index)?,
        })
    }

    /// The whole test split.
    pub fn test(&self) -> Result<Batch> {
        self.test.narrow(0, self.test.len())
    }
}

fn digits_split(file: &SafeTensors<'_>, path: &Path, split: &str, device: Device) -> Result<Batch> {
    let (x_name, y_name) = (format!("{split}_x"), format!("{split}_y"));
    let (x, x_shape) = read_tensor(file, path, &x_name, Dtype::F32)?;
    let (y, y_shape) = read_tensor(file, path, &y_name, Dtype::I64)?;
    let rows = x_shape.first().copied().unwrap_or(0);
    if x_shape != [rows, DIGIT_PIXELS] || y_shape != [rows] {
        return Err(KernelError::BadTensor {
            name: format!("{x_name}/{y_name}"),
            expected: format!("[N, {DIGIT_PIXELS}] and [N]"),
            found: format!("{x_shape:?} and {y_shape:?}"),
        });
    }
    Batch::images(&decode_f32(x), &decode_i64(y), device).map_err(|e| match e {
        KernelError::BadTensor {
            expected, found, ..
        } => KernelError::BadTensor {
            name: y_name,
            expected,
            found,
        },
        other => other,
    })
}

fn check_labels(name: &str, labels: &[i64]) -> Result<()> {
    if labels
        .iter()
        .all(|label| (0..DIGIT_CLASSES).contains(label))
    {
        return Ok(());
    }
    Err(KernelError::BadTensor {
        name: name.to_owned(),
        expected: format!("labels in 0..{DIGIT_CLASSES}"),
        found: "a label out of range".to_owned(),
    })
}

/// The raw little-endian bytes and shape of tensor `name`, which must have dtype `dtype`.
pub(crate) fn read_tensor<'a>(
    file: &SafeTensors<'a>,
    path: &Path,
    name: &str,
    dtype: Dtype,
) -> Result<(&'a [u8], Vec<usize>)> {
    let view = file.tensor(name).map_err(|_| KernelError::MissingTensor {
        path: path.to_path_buf(),
        name: name.to_owned(),
    })?;
    if view.dtype() != dtype {
        return Err(KernelError::BadTensor {
            name: name.to_owned(),
            expected: format!("{dtype:?}"),
            found: format!("{:?}", view.dtype()),
        });
    }
    Ok((view.data(), view.shape().to_vec()))
}

/// Little-endian f32 bytes to values; safetensors gives no alignment guarantee, so no casts.
pub(crate) fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn decode_i64(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// Sizes index tensors; every size we pass is far below `i64::MAX`.
pub(crate) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A uniform draw in `0..n` (Lemire's multiply; the bias is below 2^-40 for our sizes).
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let n = n as u128;
    usize::try_from((u128::from(rng.next_u64()) * n) >> 64).unwrap_or(0)
}

/// Epoch-wise shuffled batches of training indices. Batch `step` depends only on `(seed, step)`:
/// epoch `e` is a ChaCha8 (stream `e`) Fisher–Yates permutation, cut into `len / batch_size`
/// batches (the remainder of each epoch is dropped so every batch has the same size).
#[derive(Debug)]
pub struct BatchSampler {
    seed: u64,
    batch_size: usize,
    batches_per_epoch: u64,
    epoch: Option<u64>,
    order: Vec<i64>,
}

impl BatchSampler {
    /// A sampler over `0..len`. Errors if `batch_size` is 0 or larger than `len`.
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 || batch_size > len {
            return Err(KernelError::DatasetTooSmall(
                "batch size must be in 1..=data set size",
            ));
        }
        let batches_per_epoch = u64::try_from(len / batch_size).unwrap_or(u64::MAX);
        let order = (0..to_i64(len)).collect();
        Ok(Self {
            seed,
            batch_size,
            batches_per_epoch,
            epoch: None,
            order,
        })
    }

    /// The indices of batch number `step` (counted from 0 across epochs).
    pub fn indices(&mut self, step: u64) -> &[i64] {
        let epoch = step / self.batches_per_epoch;
        if self.epoch != Some(epoch) {
            self.order.sort_unstable();
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            for i in (1..self.order.len()).rev() {
                self.order.swap(i, below(&mut rng, i + 1));
            }
            self.epoch = Some(epoch);
        }
        let within = usize::try_from(step % self.batches_per_epoch).unwrap_or(0);
        &self.order[within * self.batch_size..(within + 1) * self.batch_size]
    }
}

/// A byte-level text corpus (vocabulary: the 256 byte values) split 90/10 into train/validation.
#[derive(Debug)]
pub struct CharCorpus {
    train: Vec<u8>,
    valid: Vec<u8>,
    device: Device,
}

impl CharCorpus {
    /// Loads `data/corpus.txt` (or any file) as bytes.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let mut train = std::fs::read(path).map_err(io_error("read", path))?;
        let valid = train.split_off(train.len() - train.len() / 10);
        Ok(Self {
            train,
            valid,
            device,
        })
    }

    /// `batch_size` random windows of `context + 1` bytes from the training split: inputs are the
    /// first `context`, targets the last `context`. Depends only on `(seed, step)`.
    pub fn train_batch(
        &self,
        step: u64,
        batch_size: usize,
        context: usize,
        seed: u64,
    ) -> Result<Batch> {
        let span = self.train.len().checked_sub(context + 1).filter(|&s| s > 0);
        let span = span.ok_or(KernelError::DatasetTooSmall(
            "training text shorter than the context",
        ))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(step);
        let starts: Vec<usize> = (0..batch_size).map(|_| below(&mut rng, span)).collect();
        self.windows(&self.train, &starts, context)
    }

    /// The first `count` non-overlapping windows of the validation split.
    pub fn valid_batch(&self, count: usize, context: usize) -> Result<Batch> {
        if (count * (context + 1)) >= self.valid.len() {
            return Err(KernelError::DatasetTooSmall(
                "validation text shorter than count × context",
            ));
        }
        let starts: Vec<usize> = (0..count).map(|i| i * (context + 1)).collect();
        self.windows(&self.valid, &starts, context)
    }

    fn windows(&self, text: &[u8], starts: &[usize], context: usize) -> Result<Batch> {
        let mut x = Vec::with_capacity(starts.len() * context);
        let mut y = Vec::with_capacity(starts.len() * context);
        for &start in starts {
            x.extend(text[start..start + context].iter().map(|&b| i64::from(b)));
            y.extend(
                text[start + 1..=start + context]
                    .iter()
                    .map(|&b| i64::from(b)),
            );
        }
        let shape = [to_i64(starts.len()), to_i64(context)];
        let device = self.device.tch();
        Ok(Batch {
            x: Tensor::from_slice(&x).view(shape).to_device(device),
            y: Tensor::from_slice(&y).view(shape).to_device(device),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_is_a_function_of_seed_and_step() {
        let mut a = BatchSampler::new(100, 32, 7).unwrap();
        let mut b = BatchSampler::new(100, 32, 7).unwrap();
        let first: Vec<i64> = a.indices(4).to_vec();
        let _ = b.indices(0);
        assert_eq!(b.indices(4), first.as_slice());
        // One epoch is a permutation: three batches of 32 hit 96 distinct indices.
        let mut seen: Vec<i64> = (0..3).flat_map(|s| a.indices(s).to_vec()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 96);
        assert!(BatchSampler::new(10, 11, 0).is_err());
    }
}
