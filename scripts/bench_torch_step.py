"""PyTorch eager baseline for `make bench-kernels` (kernels/examples/bench_mlp.rs).

usage: bench_torch_step.py DIGITS THREADS STEPS WARMUP REPEATS
Trains the same 64->128->10 ReLU MLP on the digits set (batch 64, SGD lr 0.1 momentum 0.9,
mean cross-entropy, loss read back every step like our trainer does) and prints
`steps_per_s=<best of REPEATS>`.
"""

import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

BATCH = 64


def main(digits: str, threads: int, steps: int, warmup: int, repeats: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(20261123)
    data = load_file(digits)
    x, y = data["train_x"], data["train_y"]
    order = torch.randperm(len(y))
    batches = [(x[order[i : i + BATCH]], y[order[i : i + BATCH]]) for i in range(0, len(y) - BATCH + 1, BATCH)]
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def run(n: int) -> None:
        for i in range(n):
            bx, by = batches[i % len(batches)]
            opt.zero_grad()
            loss = F.cross_entropy(model(bx), by)
            loss.backward()
            opt.step()
            loss.item()

    run(warmup)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        best = max(best, steps / (time.perf_counter() - start))
    print(f"steps_per_s={best:.1f}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:6]))
