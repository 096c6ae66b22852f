//! The digits training labels from `data/digits.safetensors` (written by `scripts/setup.sh`), so
//! tests partition the real label distribution (1,437 samples, 10 classes).

use std::path::PathBuf;

/// `data/digits.safetensors` at the workspace root.
pub(crate) fn digits_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/digits.safetensors")
}

/// The training labels (int64 in the file) as `u32`.
pub(crate) fn digits_train_labels() -> Vec<u32> {
    let bytes =
        std::fs::read(digits_path()).expect("data/digits.safetensors: run scripts/setup.sh");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let y = tensors.tensor("train_y").expect("train_y");
    assert_eq!(y.dtype(), safetensors::Dtype::I64);
    y.data()
        .chunks_exact(8)
        .map(|c| {
            let v = i64::from_le_bytes(c.try_into().expect("8 bytes"));
            u32::try_from(v).expect("label")
        })
        .collect()
}
