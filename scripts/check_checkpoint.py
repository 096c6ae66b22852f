"""Load a gradmesh checkpoint with safetensors.torch and check it.

usage: check_checkpoint.py PATH
Always: loads PATH with `safetensors.torch.load_file`, checks the format tag and prints a summary.
If PATH's directory also holds `expected.txt` (+ `params.bin`, `optimizer.bin`), as written by
kernels/tests/pytorch_parity.rs, every tensor must equal those values exactly. Exit status 0 = ok.
"""

import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file


def check_expected(tensors: dict, directory: str) -> None:
    params = np.fromfile(os.path.join(directory, "params.bin"), dtype="<f4")
    optimizer = np.fromfile(os.path.join(directory, "optimizer.bin"), dtype="<f4")
    for line in open(os.path.join(directory, "expected.txt")):
        kind, rest = line.split(" ", 1)
        if kind == "param":
            name, offset, length, _shape = rest.split(" ", 3)
            got = tensors[f"param.{name}"].flatten().numpy()
            want = params[int(offset) : int(offset) + int(length)]
            assert np.array_equal(got, want), f"param.{name} differs"
        elif kind == "mesh_digest":
            got = bytes(tensors["mesh_digest"].tolist()).hex()
            assert got == rest.strip(), f"mesh_digest {got} != {rest.strip()}"
        else:
            name = {"optimizer_step": "optimizer.step"}.get(kind, kind)
            assert int(tensors[name].item()) == int(rest), f"{name} {tensors[name].item()} != {rest}"
    assert np.array_equal(tensors["optimizer.values"].numpy(), optimizer), "optimizer.values differ"


def main(path: str) -> None:
    with safe_open(path, framework="pt") as f:
        fmt = (f.metadata() or {}).get("format")
    assert fmt == "gradmesh-checkpoint-v1", f"format {fmt!r}"
    tensors = load_file(path)
    assert tensors["mesh_digest"].dtype == torch.uint8 and tensors["mesh_digest"].shape == (32,)
    params = sum(t.numel() for n, t in tensors.items() if n.startswith("param."))
    print(f"{path}: round {tensors['round'].item()}, step {tensors['step'].item()}, {params} parameters")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(os.path.join(directory, "expected.txt")):
        check_expected(tensors, directory)
        print("check_checkpoint: all tensors equal the expected values")


if __name__ == "__main__":
    main(sys.argv[1])
