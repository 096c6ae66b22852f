"""Reference MLP step in PyTorch eager, for kernels/tests/pytorch_parity.rs.

usage: mlp_step.py IN OUT STEPS
IN holds the MLP weights (fc1.weight, fc1.bias, fc2.weight, fc2.bias) and a batch (x f32 [B, 64],
y i64 [B]). OUT receives `loss` [1], `grad.<name>` for one forward/backward, and `<opt>.<name>`:
the weights after STEPS steps on the same batch with torch.optim SGD / AdamW, whose
hyper-parameters must equal the ones in the Rust test.
"""

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

NAMES = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, foreach=False),
    "adamw": lambda ps: torch.optim.AdamW(
        ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False
    ),
}


def loss_of(p, x, y):
    hidden = F.relu(F.linear(x, p["fc1.weight"], p["fc1.bias"]))
    return F.cross_entropy(F.linear(hidden, p["fc2.weight"], p["fc2.bias"]), y)


def fresh(t):
    return {n: t[n].clone().requires_grad_(True) for n in NAMES}


def main(inp: str, out: str, steps: int) -> None:
    torch.set_num_threads(1)
    t = load_file(inp)
    x, y = t["x"], t["y"]
    p = fresh(t)
    loss = loss_of(p, x, y)
    loss.backward()
    result = {"loss": loss.detach().reshape(1)}
    result.update({f"grad.{n}": p[n].grad for n in NAMES})
    for name, make in OPTIMIZERS.items():
        p = fresh(t)
        opt = make(list(p.values()))
        for _ in range(steps):
            opt.zero_grad()
            loss_of(p, x, y).backward()
            opt.step()
        result.update({f"{name}.{n}": p[n].detach() for n in NAMES})
    save_file({k: v.contiguous() for k, v in result.items()}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
