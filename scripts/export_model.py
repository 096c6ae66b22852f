"""From an nn.Module to files a gradmesh node trains, and back; also the PyTorch side of parity tests.

usage:
  export_model.py export OUT_DIR [--digits data/digits.safetensors] [--corpus data/pycorpus.txt]
                                 [--corpus-bytes 4000000]
  export_model.py reference MODEL.pt DATA.safetensors OUT.safetensors [--steps 20] [--batch 16]
                                 [--lr 0.05] [--momentum 0.9] [--loss cross-entropy|mse|module]
                                 [--context 64]
  export_model.py check-checkpoint gpt|cnn CHECKPOINT.safetensors REF.safetensors [--loss ...]
  export_model.py loop gpt|cnn DATA.safetensors [--steps 500] [--warmup 20] [--batch 16]
                                 [--context 64] [--lr 0.001] [--threads 1] [--seed 1]

`export` writes four files into OUT_DIR:
  gpt.pt               torch.jit.script(TinyGPT()): byte-level causal LM, int64 [B, T<=64] ->
                       logits f32 [B, T, 256], plus an exported `loss(x, y)` (mean cross-entropy).
  cnn.pt               torch.jit.script(TinyResNet()): f32 [B, 1, 8, 8] -> logits f32 [B, 10].
  digits.safetensors   train_x/test_x f32 [N, 1, 8, 8] in 0..1 (raw 0..16 pixels are divided by 16;
                       data/digits.safetensors is already 0..1), train_y/test_y i64 [N].
  tokens.safetensors   train_tokens u16 [N] (first 90 %) and test_tokens u16 [M] (last len//10)
                       of the first --corpus-bytes bytes of the corpus, one token per byte.
To train your own model, write an nn.Module whose forward takes one tensor and returns logits (add an
`@torch.jit.export def loss(self, x, y)` if the loss is not plain cross-entropy), then
`torch.jit.script(model).save("model.pt")`, as `export` does below.

`reference` loads MODEL.pt with torch.jit.load, puts it in train mode and runs STEPS steps of
torch.optim.SGD(lr, momentum; no dampening, nesterov or weight decay) on deterministic batches.
Batch i is examples [i*B, (i+1)*B) of train_x/train_y, or, for a token file, B windows of
context+1 tokens, window j starting at token (i*B + j) * (context + 1). OUT receives
`batch.{i}.x`, `batch.{i}.y` (the exact tensors used), `loss.0` [1] and `grad.{name}` (loss and
gradient of batch 0 at the initial parameters: the first step's forward/backward), `param.{name}`
and `buffer.{name}` (a module's buffers, if it has any) after the steps, and `eval_loss` [1]: the
loss of batch 0 in eval mode after the steps.

`check-checkpoint` loads a gradmesh checkpoint's `param.*` (and any `buffer.*`) tensors into the eager
TinyGPT / TinyResNet with load_state_dict(strict=True) and prints {"loss": ...}: the eval-mode loss
of REF's batch 0. Every other checkpoint entry (optimizer.values, step, round, ...) is ignored.

`loop` is the baseline of `gradmesh bench torchscript`: the eager model trained the way a user's
plain PyTorch loop would — torch.optim.AdamW(lr, betas 0.9/0.95, weight decay 0.1), mean
cross-entropy, random batches (B random examples, or B random windows of context+1 tokens) drawn
with torch's generator seeded --seed — on --threads intra-op threads. It times --steps steps after
--warmup untimed ones and prints one JSON line: {"steps", "seconds", "steps_per_s", "loss"}.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT_SEED = 0
CNN_SEED = 1
GROUPS = 4  # GroupNorm groups of the CNN
LOSSES = ["cross-entropy", "mse", "module"]


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size()
        q, k, v = self.qkv(x).split(c, dim=2)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = k.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale  # [B, H, T, T]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(causal.logical_not(), float("-inf"))
        out = torch.matmul(F.softmax(scores, dim=-1), v)  # [B, H, T, D]
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.fc_out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """Byte-level GPT: pre-LayerNorm blocks, learned positions, untied head. No dropout."""

    def __init__(self, vocab: int = 256, context: int = 64, width: int = 64, heads: int = 4, layers: int = 2):
        super().__init__()
        self.context = context
        self.tok_emb = nn.Embedding(vocab, width)
        self.pos_emb = nn.Embedding(context, width)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.size(1)
        if t > self.context:
            raise ValueError("sequence longer than the context")
        h = self.tok_emb(x) + self.pos_emb(torch.arange(t, device=x.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))

    @torch.jit.export
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.forward(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(GROUPS, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(x + self.norm2(self.conv2(out)))


class TinyResNet(nn.Module):
    """ResNet for 8x8 digits: conv stem, two residual blocks of 16 channels, pool, linear.

    GroupNorm, not BatchNorm: batch-norm's running statistics are buffers, which a mesh neither
    averages nor syncs (each peer would keep its own), and they drift apart on peers whose data
    differ; group-norm has no state beyond its parameters (docs/models.md).
    """

    def __init__(self, channels: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.blocks = nn.Sequential(ResidualBlock(channels), ResidualBlock(channels))
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.relu(self.norm(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(kind: str) -> nn.Module:
    """The eager model with its fixed initial parameters."""
    torch.manual_seed(GPT_SEED if kind == "gpt" else CNN_SEED)
    return TinyGPT() if kind == "gpt" else TinyResNet()


def loss_of(model, rule: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if rule == "module":
        return model.loss(x, y)
    logits = model(x)
    if rule == "mse":
        return F.mse_loss(logits, y.float())
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def report(path: str, what: str) -> None:
    print(f"{path}: {os.path.getsize(path)} bytes, {what}")


def export(args) -> None:
    os.makedirs(args.out_dir, exist_ok=True)
    for kind in ["gpt", "cnn"]:
        model = build(kind)
        path = os.path.join(args.out_dir, f"{kind}.pt")
        torch.jit.script(model).save(path)
        count = sum(p.numel() for p in model.parameters())
        report(path, f"{type(model).__name__}, {count} parameters")

    digits = load_file(args.digits)
    # data/digits.safetensors (scripts/export_digits.py) is already scaled to 0..1; raw 0..16 pixels
    # are divided by 16 so both give inputs in 0..1.
    scale = 16.0 if max(digits["train_x"].max().item(), digits["test_x"].max().item()) > 1.0 else 1.0
    out = {}
    for split in ["train", "test"]:
        out[f"{split}_x"] = (digits[f"{split}_x"].float() / scale).reshape(-1, 1, 8, 8).contiguous()
        out[f"{split}_y"] = digits[f"{split}_y"].to(torch.int64).contiguous()
    path = os.path.join(args.out_dir, "digits.safetensors")
    save_file(out, path)
    report(path, f"{len(out['train_y'])} train, {len(out['test_y'])} test, pixels / {scale:g} -> 0..1")

    with open(args.corpus, "rb") as f:
        data = f.read(args.corpus_bytes)
    tokens = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.uint16))
    cut = len(tokens) - len(tokens) // 10
    path = os.path.join(args.out_dir, "tokens.safetensors")
    save_file({"train_tokens": tokens[:cut].clone(), "test_tokens": tokens[cut:].clone()}, path)
    report(path, f"{cut} train tokens, {len(tokens) - cut} test tokens")


def make_batches(data: dict, steps: int, batch: int, context: int, rule: str) -> list:
    """The deterministic batches 0..steps-1 described in the module docstring."""
    batches = []
    if "train_x" in data:
        xs, ys = data["train_x"], data["train_y"]
        if steps * batch > len(ys):
            raise SystemExit(f"{steps} x {batch} examples needed, DATA has {len(ys)}")
        pairs = [(xs[i * batch : (i + 1) * batch], ys[i * batch : (i + 1) * batch]) for i in range(steps)]
    elif "train_tokens" in data:
        tokens = data["train_tokens"].to(torch.int64)
        need = steps * batch * (context + 1)
        if need > len(tokens):
            raise SystemExit(f"{need} tokens needed ({steps * batch} windows), DATA has {len(tokens)}")
        pairs = []
        for i in range(steps):
            starts = [(i * batch + j) * (context + 1) for j in range(batch)]
            x = torch.stack([tokens[s : s + context] for s in starts])
            y = torch.stack([tokens[s + 1 : s + context + 1] for s in starts])
            pairs.append((x, y))
    else:
        raise SystemExit("DATA needs train_x/train_y or train_tokens")
    for x, y in pairs:
        batches.append((x.contiguous(), (y.float() if rule == "mse" else y).contiguous()))
    return batches


def reference(args) -> None:
    model = torch.jit.load(args.model)
    model.train()
    if args.loss == "module" and not hasattr(model, "loss"):
        raise SystemExit(f"{args.model} has no exported loss method; use --loss cross-entropy or mse")
    batches = make_batches(load_file(args.data), args.steps, args.batch, args.context, args.loss)
    out = {}
    for i, (x, y) in enumerate(batches):
        out[f"batch.{i}.x"], out[f"batch.{i}.y"] = x, y

    params = list(model.named_parameters())
    opt = torch.optim.SGD(
        [p for _, p in params], lr=args.lr, momentum=args.momentum, dampening=0.0, nesterov=False,
        weight_decay=0.0, foreach=False,
    )
    for i, (x, y) in enumerate(batches):
        opt.zero_grad()
        loss = loss_of(model, args.loss, x, y)
        loss.backward()
        if i == 0:
            out["loss.0"] = loss.detach().float().reshape(1)
            out.update({f"grad.{n}": p.grad.detach().float().clone() for n, p in params})
        opt.step()
    out.update({f"param.{n}": p.detach().float().clone() for n, p in params})
    out.update({f"buffer.{n}": b.detach().clone() for n, b in model.named_buffers()})

    model.eval()
    with torch.no_grad():
        out["eval_loss"] = loss_of(model, args.loss, *batches[0]).float().reshape(1)
    # One metadata key: safetensors writes a multi-key map in random order, and OUT should be byte-stable.
    settings = {k: getattr(args, k) for k in ["steps", "batch", "lr", "momentum", "loss", "context"]}
    meta = {"reference": json.dumps(settings)}
    save_file({k: v.contiguous() for k, v in out.items()}, args.out, metadata=meta)
    count = sum(p.numel() for _, p in params)
    print(
        f"{args.out}: {args.steps} steps of {args.batch}, {count} parameters, "
        f"loss.0 {out['loss.0'].item():.6f}, last train loss {loss.item():.6f}, "
        f"eval_loss {out['eval_loss'].item():.6f}"
    )


def check_checkpoint(args) -> None:
    model = build(args.kind)
    checkpoint = load_file(args.checkpoint)
    state = {}
    for key, tensor in checkpoint.items():
        for prefix in ["param.", "buffer."]:
            if key.startswith(prefix):
                state[key[len(prefix) :]] = tensor
    model.load_state_dict(state, strict=True)
    model.eval()
    ref = load_file(args.ref)
    with torch.no_grad():
        loss = loss_of(model, args.loss, ref["batch.0.x"], ref["batch.0.y"])
    print(json.dumps({"loss": loss.item()}))


def loop(args) -> None:
    torch.set_num_threads(args.threads)
    model = build(args.kind)
    model.train()
    data = load_file(args.data)
    gen = torch.Generator().manual_seed(args.seed)
    if "train_x" in data:
        xs, ys = data["train_x"], data["train_y"].to(torch.int64)

        def batch():
            idx = torch.randint(len(ys), (args.batch,), generator=gen)
            return xs[idx], ys[idx]
    else:
        windows = data["train_tokens"].to(torch.int64).unfold(0, args.context + 1, 1)

        def batch():
            idx = torch.randint(len(windows), (args.batch,), generator=gen)
            w = windows[idx]
            return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)

    def step():
        x, y = batch()
        opt.zero_grad()
        loss = loss_of(model, "cross-entropy", x, y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    seconds = time.perf_counter() - start
    print(json.dumps({"steps": args.steps, "seconds": seconds, "steps_per_s": args.steps / seconds,
                      "loss": loss.item()}))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("export", formatter_class=fmt, help="write the two modules and the two data files")
    p.add_argument("out_dir", metavar="OUT_DIR", help="created if missing")
    p.add_argument("--digits", default=os.path.join(REPO, "data/digits.safetensors"),
                   help="train_x/test_x f32 [N, 64] in 0..1 (0..16 is divided by 16), train_y/test_y i64")
    p.add_argument("--corpus", default=os.path.join(REPO, "data/pycorpus.txt"),
                   help="any file; one token per byte")
    p.add_argument("--corpus-bytes", type=int, default=4_000_000, help="bytes of the corpus to tokenize")
    p.set_defaults(run=export)

    p = sub.add_parser("reference", formatter_class=fmt,
                       help="SGD steps of a TorchScript module: batches, loss, grads, params")
    p.add_argument("model", metavar="MODEL.pt", help="a torch.jit.save'd module")
    p.add_argument("data", metavar="DATA.safetensors", help="train_x/train_y, or train_tokens")
    p.add_argument("out", metavar="OUT.safetensors",
                   help="batch.{i}.x/y, loss.0, grad.*, param.*, buffer.*, eval_loss")
    p.add_argument("--steps", type=int, default=20, help="SGD steps, on batches 0..steps-1 (>= 1)")
    p.add_argument("--batch", type=int, default=16, help="examples (or token windows) per batch")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (dampening 0, not Nesterov)")
    p.add_argument("--loss", choices=LOSSES, default="cross-entropy",
                   help="cross-entropy of the logits (mean), mse against y.float(), or module.loss(x, y)")
    p.add_argument("--context", type=int, default=64, help="tokens per window (token data only)")
    p.set_defaults(run=reference)

    p = sub.add_parser("check-checkpoint", formatter_class=fmt,
                       help="load a gradmesh checkpoint into the eager model, print its loss")
    p.add_argument("kind", choices=["gpt", "cnn"], metavar="KIND", help="gpt (TinyGPT) or cnn (TinyResNet)")
    p.add_argument("checkpoint", metavar="CHECKPOINT.safetensors",
                   help="its param.<name> and buffer.<name> entries are loaded")
    p.add_argument("ref", metavar="REF.safetensors", help="a reference output; its batch.0.x/y are used")
    p.add_argument("--loss", choices=LOSSES, default="cross-entropy", help="as for reference")
    p.set_defaults(run=check_checkpoint)

    p = sub.add_parser("loop", formatter_class=fmt,
                       help="time a plain PyTorch AdamW loop of the eager model (bench baseline)")
    p.add_argument("kind", choices=["gpt", "cnn"], metavar="KIND", help="gpt (TinyGPT) or cnn (TinyResNet)")
    p.add_argument("data", metavar="DATA.safetensors", help="train_x/train_y, or train_tokens")
    p.add_argument("--steps", type=int, default=500, help="timed steps (>= 1)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument("--batch", type=int, default=16, help="examples (or token windows) per batch")
    p.add_argument("--context", type=int, default=64, help="tokens per window (token data only)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=1, help="seed of the batch draws")
    p.set_defaults(run=loop)

    args = parser.parse_args(argv)
    if args.command in ("reference", "loop") and args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main() -> None:
    torch.set_num_threads(1)
    args = parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
