"""Export scikit-learn's bundled 8x8 digits set to safetensors.

The data ships inside the scikit-learn wheel, so this needs no network. Pixel values are scaled
from 0..16 to 0..1. A fixed, seeded 80/20 split is stored so every tool sees the same test set.
"""

import sys

import numpy as np
from safetensors.numpy import save_file
from sklearn.datasets import load_digits


def main(path: str) -> None:
    digits = load_digits()
    x = (digits.data.astype(np.float32) / 16.0).reshape(-1, 64)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(20261123).permutation(len(y))
    cut = int(len(y) * 0.8)
    train, test = order[:cut], order[cut:]
    save_file(
        {
            "train_x": np.ascontiguousarray(x[train]),
            "train_y": np.ascontiguousarray(y[train]),
            "test_x": np.ascontiguousarray(x[test]),
            "test_y": np.ascontiguousarray(y[test]),
        },
        path,
    )
    print(f"digits: {len(train)} train, {len(test)} test -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
