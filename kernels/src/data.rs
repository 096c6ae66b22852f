//! Data sets: the 8×8 digits exported by `scripts/export_digits.py` and byte-level text corpora
//! (`data/corpus.txt` from `scripts/export_corpus.py`, `data/pycorpus.txt` from `scripts/setup.sh`,
//! or any UTF-8 file or directory), read from disk (no downloads at run time), plus seeded
//! batch samplers whose output depends only on `(seed, step)`, so a restored peer resumes the same
//! sequence without any sampler state of its own.

use std::path::{Path, PathBuf};

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

    /// A batch of inputs `x` and targets `y` whose first dimensions count the same examples
    /// (a user's tensors; the caller puts them on the model's device).
    pub fn new(x: Tensor, y: Tensor) -> Result<Self> {
        if x.size().first() != y.size().first() {
            return Err(KernelError::BadTensor {
                name: "x/y".to_owned(),
                expected: "the same number of examples (first dimension)".to_owned(),
                found: format!("{} and {}", describe_all(&x), describe_all(&y)),
            });
        }
        Ok(Self { x, y })
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

/// Examples with targets, split into training and test sets, on one device: the digits (1,437
/// training and 360 test images), or a user's tensors ([`Dataset::load`]).
#[derive(Debug)]
pub struct Dataset {
    train: Batch,
    test: Batch,
}

impl Dataset {
    /// Loads `data/digits.safetensors` (tensors `train_x`, `train_y`, `test_x`, `test_y`) and checks
    /// dtypes, shapes and label range before any tensor is built.
    pub fn load_digits(path: &Path, device: Device) -> Result<Self> {
        let bytes = read_safetensors(path)?;
        let file = deserialize(&bytes, path)?;
        let train = digits_split(&file, path, "train", device)?;
        let test = digits_split(&file, path, "test", device)?;
        Ok(Self { train, test })
    }

    /// Loads a user's safetensors file with tensors `train_x`, `train_y`, `test_x`, `test_y` of any
    /// shape whose first dimension counts examples. Floating tensors (f32, f16, bf16, f64) become
    /// f32 and integer ones (u8, i8, i16, i32, i64) i64, the dtypes a model's `forward` and the
    /// losses take. `x` and `y` of a split must count the same examples, and the test split's
    /// examples must have the training split's shapes.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let bytes = read_safetensors(path)?;
        Self::from_file(&deserialize(&bytes, path)?, path, device)
    }

    fn from_file(file: &SafeTensors<'_>, path: &Path, device: Device) -> Result<Self> {
        let train = any_split(file, path, "train", device)?;
        let test = any_split(file, path, "test", device)?;
        for (name, train, test) in [("x", &train.x, &test.x), ("y", &train.y, &test.y)] {
            if train.size().get(1..) != test.size().get(1..) || train.kind() != test.kind() {
                return Err(KernelError::BadTensor {
                    name: format!("test_{name}"),
                    expected: format!("examples like train_{name}'s, {}", describe(train)),
                    found: describe(test),
                });
            }
        }
        Ok(Self { train, test })
    }

    /// One example's input and target, as `x f32[1,8,8], y i64[]`: two nodes whose data differ
    /// here cannot train one model.
    #[must_use]
    pub fn example_shapes(&self) -> String {
        format!(
            "x {}, y {}",
            describe(&self.train.x),
            describe(&self.train.y)
        )
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

fn any_split(file: &SafeTensors<'_>, path: &Path, split: &str, device: Device) -> Result<Batch> {
    let x = read_any(file, path, &format!("{split}_x"))?;
    if x.dim() == 0 {
        return Err(KernelError::BadTensor {
            name: format!("{split}_x"),
            expected: "a first dimension counting examples".to_owned(),
            found: "a scalar".to_owned(),
        });
    }
    let y = read_any(file, path, &format!("{split}_y"))?;
    let (rows_x, rows_y) = (x.size().first().copied(), y.size().first().copied());
    if rows_x != rows_y || rows_x.unwrap_or(0) == 0 {
        return Err(KernelError::BadTensor {
            name: format!("{split}_x/{split}_y"),
            expected: "the same number of examples (first dimension), at least one".to_owned(),
            found: format!("{} and {}", describe_all(&x), describe_all(&y)),
        });
    }
    let device = device.tch();
    Ok(Batch {
        x: x.f_to_device(device)?,
        y: y.f_to_device(device)?,
    })
}

/// Reads a safetensors file whole (the caller's data sets are held in memory anyway).
fn read_safetensors(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io_error("read", path))
}

fn deserialize<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| KernelError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Tensor `name` on the CPU: floating dtypes as f32, integer dtypes as i64.
fn read_any(file: &SafeTensors<'_>, path: &Path, name: &str) -> Result<Tensor> {
    use tch::Kind;
    let view = file.tensor(name).map_err(|_| KernelError::MissingTensor {
        path: path.to_path_buf(),
        name: name.to_owned(),
    })?;
    let shape: Vec<i64> = view.shape().iter().map(|&d| to_i64(d)).collect();
    let (stored, wanted) = match view.dtype() {
        Dtype::F32 => (Kind::Float, Kind::Float),
        Dtype::F16 => (Kind::Half, Kind::Float),
        Dtype::BF16 => (Kind::BFloat16, Kind::Float),
        Dtype::F64 => (Kind::Double, Kind::Float),
        Dtype::I64 => (Kind::Int64, Kind::Int64),
        Dtype::I32 => (Kind::Int, Kind::Int64),
        Dtype::I16 => (Kind::Int16, Kind::Int64),
        Dtype::I8 => (Kind::Int8, Kind::Int64),
        Dtype::U8 => (Kind::Uint8, Kind::Int64),
        // LibTorch has no unsigned 16/32-bit kinds: widen here.
        Dtype::U16 | Dtype::U32 => {
            let width = view.dtype().bitsize() / 8;
            let ids: Vec<i64> = view
                .data()
                .chunks_exact(width)
                .map(|c| {
                    let mut le = [0u8; 8];
                    le[..width].copy_from_slice(c);
                    i64::from_le_bytes(le)
                })
                .collect();
            return Ok(Tensor::from_slice(&ids).f_view(shape.as_slice())?);
        }
        other => {
            return Err(KernelError::BadTensor {
                name: name.to_owned(),
                expected: "f32, f16, bf16, f64, i64, i32, i16, i8, u32, u16 or u8".to_owned(),
                found: format!("{other:?}").to_lowercase(),
            });
        }
    };
    Ok(Tensor::f_from_data_size(view.data(), &shape, stored)?.f_to_kind(wanted)?)
}

/// `f32[1,8,8]`: dtype and shape after the first (example) dimension.
fn describe(t: &Tensor) -> String {
    shape_text(t, 1)
}

/// `f32[1437,1,8,8]`: dtype and whole shape.
fn describe_all(t: &Tensor) -> String {
    shape_text(t, 0)
}

fn shape_text(t: &Tensor, skip: usize) -> String {
    let kind = match t.kind() {
        tch::Kind::Float => "f32".to_owned(),
        tch::Kind::Int64 => "i64".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    };
    let dims: Vec<String> = t.size().iter().skip(skip).map(i64::to_string).collect();
    format!("{kind}[{}]", dims.join(","))
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

/// Cap on a corpus's bytes (4 GiB): the text is held in memory (twice while a shard is cut), and
/// a directory this large was almost certainly named by mistake. Checked on file sizes before a
/// byte is read, and again while reading in case a file grows.
pub(crate) const CORPUS_BYTES_MAX: u64 = 4 << 30;

/// Put between two files of a directory corpus, so that one file's last line and the next file's
/// first line are not glued into one.
const FILE_SEPARATOR: u8 = b'\n';

/// The validation split is the last `len / VALID_DIVISOR` bytes (10 %).
const VALID_DIVISOR: usize = 10;

/// A value a token stream can hold: a byte of text, or a tokenizer's id.
pub trait Token: Copy + Into<i64> + std::fmt::Debug + Send + Sync + 'static {}
impl Token for u8 {}
impl Token for u32 {}

/// A byte-level text corpus (vocabulary: the 256 byte values).
pub type CharCorpus = Corpus<u8>;

/// A stream of token ids from a safetensors file (see [`TokenCorpus::load_tokens`]).
pub type TokenCorpus = Corpus<u32>;

/// A token stream split into training and validation parts, each node training on its shard.
/// For text ([`CharCorpus`]) the tokens are bytes:
///
/// Rules, so that every node derives the same splits from the same files:
/// - A file is read whole; a directory contributes every regular file under it (recursively,
///   symlinks not followed), sorted by path component by component, joined with one `\n` between
///   files. Files that are not valid UTF-8 are skipped and counted ([`CharCorpus::files_skipped`]).
///   An empty result and anything above 4 GiB are errors.
/// - The last 10 % of the bytes (`len / 10`, rounded down) are the validation split, the rest is
///   the training split.
/// - [`CharCorpus::shard`] keeps one of `count` contiguous, equal (±1 byte) parts of the training
///   split; the validation split stays whole, so every node evaluates on the same bytes.
#[derive(Debug, Clone)]
pub struct Corpus<T> {
    train: Vec<T>,
    valid: Vec<T>,
    files_read: usize,
    files_skipped: usize,
    device: Device,
}

impl CharCorpus {
    /// Loads a UTF-8 file (e.g. `data/corpus.txt`) or a directory of them, by the rules above.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let files = corpus_files(path)?;
        let sizes_bytes = files.iter().map(|(_, len)| *len).sum::<u64>();
        let separators_bytes = u64::try_from(files.len().saturating_sub(1)).unwrap_or(u64::MAX);
        if sizes_bytes.saturating_add(separators_bytes) > CORPUS_BYTES_MAX {
            return Err(corpus_too_large(path));
        }
        let mut text = Vec::new();
        let (mut files_read, mut files_skipped) = (0, 0);
        for (file, _) in &files {
            let separator = usize::from(files_read > 0);
            let used = u64::try_from(text.len() + separator).unwrap_or(u64::MAX);
            let Some(bytes) = read_utf8(file, CORPUS_BYTES_MAX.saturating_sub(used), path)? else {
                files_skipped += 1;
                continue;
            };
            if files_read > 0 {
                text.push(FILE_SEPARATOR);
            }
            text.extend_from_slice(&bytes);
            files_read += 1;
        }
        if text.is_empty() {
            return Err(KernelError::Io {
                op: "read corpus",
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "no text in it ({files_skipped} file(s) not UTF-8, {files_read} empty)"
                    ),
                ),
            });
        }
        Ok(Self::from_text(text, files_read, files_skipped, device))
    }
}

impl TokenCorpus {
    /// Loads a safetensors file holding the token stream as two 1-D integer tensors (u8, u16,
    /// u32, i32 or i64): `train_tokens`, of which each node trains on its shard, and
    /// `test_tokens`, on which every node evaluates. Ids must be non-negative and below 2³².
    pub fn load_tokens(path: &Path, device: Device) -> Result<Self> {
        let bytes = read_safetensors(path)?;
        Self::from_file(&deserialize(&bytes, path)?, path, device)
    }

    fn from_file(file: &SafeTensors<'_>, path: &Path, device: Device) -> Result<Self> {
        let split = |name: &str| -> Result<Vec<u32>> {
            let t = read_any(file, path, name)?;
            if t.dim() != 1 || t.kind() != tch::Kind::Int64 {
                return Err(KernelError::BadTensor {
                    name: name.to_owned(),
                    expected: "a 1-D integer tensor of token ids".to_owned(),
                    found: describe(&t),
                });
            }
            let ids = Vec::<i64>::try_from(&t)?;
            ids.into_iter()
                .map(u32::try_from)
                .collect::<Result<_, _>>()
                .map_err(|_| KernelError::BadTensor {
                    name: name.to_owned(),
                    expected: "token ids in 0..2^32".to_owned(),
                    found: "an id out of range".to_owned(),
                })
        };
        let (train, valid) = (split("train_tokens")?, split("test_tokens")?);
        if train.is_empty() || valid.is_empty() {
            return Err(KernelError::DatasetTooSmall(
                "train_tokens and test_tokens must both hold tokens",
            ));
        }
        Ok(Self {
            train,
            valid,
            files_read: 1,
            files_skipped: 0,
            device,
        })
    }
}

impl<T: Token> Corpus<T> {
    /// Splits `text` by the validation rule.
    fn from_text(
        mut text: Vec<T>,
        files_read: usize,
        files_skipped: usize,
        device: Device,
    ) -> Self {
        let valid = text.split_off(text.len() - text.len() / VALID_DIVISOR);
        Self {
            train: text,
            valid,
            files_read,
            files_skipped,
            device,
        }
    }

    /// Keeps part `index` of `count` contiguous parts of the training split, bytes
    /// `len·index/count .. len·(index+1)/count`, so the parts of `0..count` concatenate to the whole
    /// split. The validation split is kept whole. `context` is the model's window: a shard shorter
    /// than one window of `context + 1` bytes could not yield a training batch, so it is refused here,
    /// where the node is configured, rather than at its first step.
    pub fn shard(mut self, index: usize, count: usize, context: usize) -> Result<Self> {
        if count == 0 {
            return Err(KernelError::InvalidConfig("shard count must be positive"));
        }
        if index >= count {
            return Err(KernelError::InvalidConfig(
                "shard index must be below the shard count",
            ));
        }
        let (start, end) = shard_bounds(self.train.len(), index, count);
        if end - start < context.saturating_add(1) {
            return Err(KernelError::DatasetTooSmall(
                "training shard shorter than one window of context + 1 bytes",
            ));
        }
        self.train.truncate(end);
        self.train.drain(..start);
        self.train.shrink_to_fit();
        Ok(self)
    }

    /// Bytes in the training split (of this shard, after [`CharCorpus::shard`]).
    #[must_use]
    pub fn train_len(&self) -> usize {
        self.train.len()
    }

    /// Bytes in the validation split (the same on every shard).
    #[must_use]
    pub fn valid_len(&self) -> usize {
        self.valid.len()
    }

    /// Files whose text is in the corpus (1 for a file).
    #[must_use]
    pub fn files_read(&self) -> usize {
        self.files_read
    }

    /// Files of a directory left out because they are not valid UTF-8.
    #[must_use]
    pub fn files_skipped(&self) -> usize {
        self.files_skipped
    }

    /// The largest `count` that [`CharCorpus::valid_batch`] accepts for `context`.
    #[must_use]
    pub fn valid_windows(&self, context: usize) -> usize {
        self.valid.len().saturating_sub(1) / context.saturating_add(1)
    }

    /// `batch_size` random windows of `context + 1` bytes from the training split: inputs are the
    /// first `context`, targets the last `context`. Depends only on `(seed, step)` (and the split).
    pub fn train_batch(
        &self,
        step: u64,
        batch_size: usize,
        context: usize,
        seed: u64,
    ) -> Result<Batch> {
        // Window starts 0..=len - context - 1: the last window ends on the last byte.
        let span = self.train.len().checked_sub(context).filter(|&s| s > 0);
        let span = span.ok_or(KernelError::DatasetTooSmall(
            "training text shorter than the context + 1",
        ))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(step);
        let starts: Vec<usize> = (0..batch_size).map(|_| below(&mut rng, span)).collect();
        self.windows(&self.train, &starts, context)
    }

    /// The first `count` non-overlapping windows of the validation split.
    pub fn valid_batch(&self, count: usize, context: usize) -> Result<Batch> {
        if count.saturating_mul(context.saturating_add(1)) >= self.valid.len() {
            return Err(KernelError::DatasetTooSmall(
                "validation text shorter than count × context",
            ));
        }
        let starts: Vec<usize> = (0..count).map(|i| i * (context + 1)).collect();
        self.windows(&self.valid, &starts, context)
    }

    fn windows(&self, text: &[T], starts: &[usize], context: usize) -> Result<Batch> {
        let mut x = Vec::with_capacity(starts.len() * context);
        let mut y = Vec::with_capacity(starts.len() * context);
        for &start in starts {
            x.extend(text[start..start + context].iter().map(|&b| b.into()));
            y.extend(text[start + 1..=start + context].iter().map(|&b| b.into()));
        }
        let shape = [to_i64(starts.len()), to_i64(context)];
        let device = self.device.tch();
        Ok(Batch {
            x: Tensor::from_slice(&x).view(shape).to_device(device),
            y: Tensor::from_slice(&y).view(shape).to_device(device),
        })
    }
}

/// A user's data file: examples with targets, or a token stream.
#[derive(Debug)]
pub enum TensorData {
    /// `train_x`, `train_y`, `test_x`, `test_y` ([`Dataset::load`]).
    Examples(Dataset),
    /// `train_tokens`, `test_tokens` ([`TokenCorpus::load_tokens`]).
    Tokens(TokenCorpus),
}

impl TensorData {
    /// Reads `path` once: a token stream if it holds `train_tokens`, else examples.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let bytes = read_safetensors(path)?;
        let file = deserialize(&bytes, path)?;
        if file.names().contains(&"train_tokens") {
            Ok(Self::Tokens(TokenCorpus::from_file(&file, path, device)?))
        } else {
            Ok(Self::Examples(Dataset::from_file(&file, path, device)?))
        }
    }
}

/// A token stream's batches whatever its token type, for callers that hold either corpus.
pub trait TokenWindows: std::fmt::Debug + Send {
    /// See [`Corpus::train_batch`].
    fn train_batch(&self, step: u64, batch_size: usize, context: usize, seed: u64)
    -> Result<Batch>;
    /// See [`Corpus::valid_batch`].
    fn valid_batch(&self, count: usize, context: usize) -> Result<Batch>;
    /// See [`Corpus::valid_len`].
    fn valid_len(&self) -> usize;
}

impl<T: Token> TokenWindows for Corpus<T> {
    fn train_batch(
        &self,
        step: u64,
        batch_size: usize,
        context: usize,
        seed: u64,
    ) -> Result<Batch> {
        Self::train_batch(self, step, batch_size, context, seed)
    }

    fn valid_batch(&self, count: usize, context: usize) -> Result<Batch> {
        Self::valid_batch(self, count, context)
    }

    fn valid_len(&self) -> usize {
        Self::valid_len(self)
    }
}

/// Bytes `len·index/count .. len·(index+1)/count` (in u128: no overflow for any `usize`s).
fn shard_bounds(len: usize, index: usize, count: usize) -> (usize, usize) {
    let at = |i: usize| {
        let cut = len as u128 * i as u128 / count as u128;
        usize::try_from(cut).unwrap_or(len)
    };
    (at(index), at(index + 1))
}

/// The files of a corpus with their sizes: `path` itself, or every regular file under the
/// directory `path`, sorted. Symlinks are not followed, so a link cycle cannot loop.
fn corpus_files(path: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let meta = std::fs::metadata(path).map_err(io_error("stat", path))?;
    if !meta.is_dir() {
        return Ok(vec![(path.to_path_buf(), meta.len())]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            let kind = entry.file_type().map_err(io_error("stat", &entry.path()))?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                let len = entry
                    .metadata()
                    .map_err(io_error("stat", &entry.path()))?
                    .len();
                files.push((entry.path(), len));
            }
        }
    }
    files.sort_unstable();
    Ok(files)
}

/// The bytes of `file` if they are UTF-8, `None` if not. A file longer than `room` (what is left
/// under [`CORPUS_BYTES_MAX`]) makes the whole `corpus` too large; only `room + 1` bytes are read.
fn read_utf8(file: &Path, room: u64, corpus: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let handle = std::fs::File::open(file).map_err(io_error("open", file))?;
    let mut bytes = Vec::new();
    handle
        .take(room.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error("read", file))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > room {
        return Err(corpus_too_large(corpus));
    }
    Ok(std::str::from_utf8(&bytes).is_ok().then_some(bytes))
}

fn corpus_too_large(path: &Path) -> KernelError {
    KernelError::Io {
        op: "read corpus",
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            "more than 4 GiB in its files (the cap on a corpus held in memory)",
        ),
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

    fn corpus(text: &[u8]) -> CharCorpus {
        CharCorpus::from_text(text.to_vec(), 1, 0, Device::Cpu)
    }

    /// Deterministic printable text of `len` bytes that repeats nowhere short.
    fn text(len: usize) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        (0..len)
            .map(|_| b'a' + (rng.next_u64() % 26) as u8)
            .collect()
    }

    fn rows(tensor: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(&tensor.reshape([-1])).unwrap()
    }

    #[test]
    fn directory_corpus_joins_sorted_utf8_files_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/deeper")).unwrap();
        // Written out of order. Sorted by path component they are a.txt, b/deeper/z.py, b/m.txt,
        // b.txt, c.txt ("b" < "b.txt" as components, though "b." < "b/" as strings).
        std::fs::write(dir.path().join("c.txt"), "fourth: ünïcode is fine\n").unwrap();
        std::fs::write(dir.path().join("b.txt"), "third").unwrap();
        std::fs::write(dir.path().join("b/deeper/z.py"), [0x66, 0x6f, 0xff, 0xfe]).unwrap();
        std::fs::write(dir.path().join("b/m.txt"), "second\n").unwrap();
        std::fs::write(dir.path().join("a.txt"), "first file, no trailing newline").unwrap();
        let corpus = CharCorpus::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!((corpus.files_read(), corpus.files_skipped()), (4, 1));
        let all = [corpus.train.as_slice(), corpus.valid.as_slice()].concat();
        assert_eq!(
            String::from_utf8(all.clone()).unwrap(),
            "first file, no trailing newline\nsecond\n\nthird\nfourth: ünïcode is fine\n"
        );
        assert_eq!(corpus.valid_len(), all.len() / 10);
        assert_eq!(corpus.train_len() + corpus.valid_len(), all.len());

        // A file is read whole, as before.
        let file = CharCorpus::load(&dir.path().join("a.txt"), Device::Cpu).unwrap();
        assert_eq!(
            (file.files_read(), file.train_len() + file.valid_len()),
            (1, 31)
        );
    }

    #[test]
    fn corpus_without_text_or_too_large_is_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("binary"), [0xc3, 0x28]).unwrap();
        let message = CharCorpus::load(dir.path(), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("1 file(s) not UTF-8"), "{message}");
        let empty = tempfile::tempdir().unwrap();
        assert!(CharCorpus::load(empty.path(), Device::Cpu).is_err());
        assert!(CharCorpus::load(&dir.path().join("absent"), Device::Cpu).is_err());

        // A sparse file one byte over the cap: refused from its size, before any byte is read.
        std::fs::write(dir.path().join("a.txt"), "some text").unwrap();
        let big = std::fs::File::create(dir.path().join("huge.txt")).unwrap();
        big.set_len(CORPUS_BYTES_MAX).unwrap();
        let message = CharCorpus::load(dir.path(), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(message.contains("more than 4 GiB"), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn shards_partition_the_training_split() {
        let whole = corpus(&text(1000));
        assert_eq!((whole.train_len(), whole.valid_len()), (900, 100));
        for count in [1, 2, 3, 7, 64] {
            let shards: Vec<CharCorpus> = (0..count)
                .map(|index| whole.clone().shard(index, count, 8).unwrap())
                .collect();
            let joined: Vec<u8> = shards.iter().flat_map(|s| s.train.clone()).collect();
            assert_eq!(joined, whole.train, "{count} shards");
            let lens: Vec<usize> = shards.iter().map(CharCorpus::train_len).collect();
            let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
            assert!(max - min <= 1, "{count} shards: {lens:?}");
            assert!(shards.iter().all(|s| s.valid == whole.valid));
        }
    }

    #[test]
    fn invalid_shards_are_refused() {
        let whole = corpus(&text(1000));
        assert!(whole.clone().shard(0, 0, 8).is_err());
        assert!(whole.clone().shard(3, 3, 8).is_err());
        // 900 training bytes in 100 shards of 9: a window of context + 1 = 9 fits, 10 does not.
        assert!(whole.clone().shard(99, 100, 9).is_err());
        let last = whole.clone().shard(99, 100, 8).unwrap();
        assert_eq!(last.train, whole.train[891..]);
        // The one window of a minimal shard is the whole shard, at every step.
        for step in 0..4 {
            let batch = last.train_batch(step, 2, 8, 1).unwrap();
            let expected: Vec<i64> = last.train[..8].iter().map(|&b| i64::from(b)).collect();
            assert_eq!(rows(&batch.x), [expected.clone(), expected].concat());
            assert_eq!(rows(&batch.y)[7], i64::from(last.train[8]));
        }
    }

    #[test]
    fn corpus_batches_depend_only_on_seed_and_step() {
        let a = corpus(&text(1000));
        let b = corpus(&text(1000));
        let first = rows(&a.train_batch(5, 4, 16, 9).unwrap().x);
        let _ = b.train_batch(0, 4, 16, 9).unwrap();
        assert_eq!(rows(&b.train_batch(5, 4, 16, 9).unwrap().x), first);
        assert_ne!(rows(&a.train_batch(6, 4, 16, 9).unwrap().x), first);
        assert_ne!(rows(&a.train_batch(5, 4, 16, 10).unwrap().x), first);
        // Targets are the inputs shifted by one byte.
        let batch = a.train_batch(5, 4, 16, 9).unwrap();
        let (x, y) = (rows(&batch.x), rows(&batch.y));
        assert_eq!(x[1..16], y[..15]);
    }

    #[test]
    fn valid_windows_is_the_largest_count_valid_batch_takes() {
        let c = corpus(&text(1000));
        for context in [1, 8, 9, 32, 99] {
            let n = c.valid_windows(context);
            assert!(c.valid_batch(n, context).is_ok(), "context {context}");
            assert!(c.valid_batch(n + 1, context).is_err(), "context {context}");
        }
        assert_eq!(c.valid_windows(100), 0);
    }
}
