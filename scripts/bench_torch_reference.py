"""Independent PyTorch reference of the MNIST-1D paper's four models and training protocol.

Why this exists: it is a speed yardstick for the JAX code in this repo. It re-implements
the reference models (logistic, MLP, CNN, GRU) and the reference protocol (Adam lr 1e-2,
batch 100 as sequential slices, no shuffling, 6000 steps) in plain torch.nn, times the pure
training step loop on one pinned CPU thread, and writes JSON + markdown results.

Run it pinned to one core, e.g.:
    taskset -c 0 python scripts/bench_torch_reference.py --models logistic,mlp,cnn,gru \
        --steps 6000 --seed 0 --out results/torch_reference.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

BATCH_SIZE = 100
LEARNING_RATE = 1e-2
WARMUP_STEPS = 20
EXPECTED_PARAMS = {"logistic": 410, "mlp": 15_210, "cnn": 5_210, "gru": 5_134}


class Logistic(nn.Module):
    """Multinomial logistic regression: the smallest reference model."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x)


class ResidualMLP(nn.Module):
    """Two-hidden-layer MLP with a residual second layer, as in the reference."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.inp = nn.Linear(40, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        h = h + torch.relu(self.mid(h))
        return self.out(h)


class ConvNet(nn.Module):
    """Three strided 1-D convolutions (40 -> 20 -> 10 -> 5 positions) then a linear head."""

    def __init__(self, channels: int = 25) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.c2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.c3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.out = nn.Linear(channels * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.view(x.shape[0], 1, x.shape[-1])
        h = torch.relu(self.c1(h))
        h = torch.relu(self.c2(h))
        h = torch.relu(self.c3(h))
        return self.out(h.flatten(1))


class BiGRU(nn.Module):
    """Bidirectional GRU (hidden 6) over the 40 scalar steps; all outputs feed a linear head."""

    def __init__(self, hidden: int = 6, seq_len: int = 40) -> None:
        super().__init__()
        self.hidden = hidden
        self.rnn = nn.GRU(input_size=1, hidden_size=hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(seq_len * 2 * hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(2, x.shape[0], self.hidden, dtype=x.dtype, device=x.device)
        seq, _ = self.rnn(x.unsqueeze(-1), h0)  # (B, 40, 12)
        return self.out(seq.flatten(1))


MODELS = {"logistic": Logistic, "mlp": ResidualMLP, "cnn": ConvNet, "gru": BiGRU}


def count_params(model: nn.Module) -> int:
    """Trainable parameter count, used to assert the reference model sizes."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_data(shuffle_seq: bool = False) -> dict[str, torch.Tensor]:
    """Build the default MNIST-1D dataset procedurally (no download) as float32/int64 tensors.

    `shuffle_seq` is the package's own spatially shuffled variant (one fixed permutation)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.shuffle_seq = shuffle_seq
    d = make_dataset(args)
    return {
        "x": torch.from_numpy(np.asarray(d["x"], dtype=np.float32)),
        "y": torch.from_numpy(np.asarray(d["y"], dtype=np.int64)),
        "x_test": torch.from_numpy(np.asarray(d["x_test"], dtype=np.float32)),
        "y_test": torch.from_numpy(np.asarray(d["y_test"], dtype=np.int64)),
    }


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy on a full split; kept outside the timed loop."""
    model.eval()
    acc = (model(x).argmax(-1) == y).float().mean().item()
    model.train()
    return acc


def run_steps(model, optimizer, loss_fn, x, y, start: int, n: int) -> float:
    """The pure reference step loop (sequential batches, no shuffle); returns the last loss."""
    n_train = x.shape[0]
    loss = torch.tensor(float("nan"))
    for step in range(start, start + n):
        bix = (step * BATCH_SIZE) % n_train
        xb, yb = x[bix : bix + BATCH_SIZE], y[bix : bix + BATCH_SIZE]
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return float(loss.item())


def bench_model(name: str, data: dict, steps: int, seed: int, eval_every: int) -> dict:
    """Warm up on a throwaway copy, then train and time one model under the reference protocol."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    params = count_params(model)
    assert params == EXPECTED_PARAMS[name], f"{name}: {params} params != {EXPECTED_PARAMS[name]}"
    loss_fn = nn.CrossEntropyLoss()
    x, y = data["x"], data["y"]

    # Warm-up on a deep copy so one-time setup (allocator, kernel dispatch caches) is excluded
    # from the timing without touching the real model's init or optimizer state.
    scratch = copy.deepcopy(model)
    run_steps(scratch, torch.optim.Adam(scratch.parameters(), lr=LEARNING_RATE), loss_fn, x, y, 0, WARMUP_STEPS)
    del scratch

    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    train_seconds = 0.0
    curve = []
    done = 0
    last_loss = float("nan")
    chunk = eval_every if eval_every > 0 else steps
    while done < steps:
        n = min(chunk, steps - done)
        t0 = time.perf_counter()
        last_loss = run_steps(model, optimizer, loss_fn, x, y, done, n)
        train_seconds += time.perf_counter() - t0  # evaluation below is not timed
        done += n
        if eval_every > 0 and done < steps:
            curve.append({"step": done, "test_accuracy": accuracy(model, data["x_test"], data["y_test"])})
    final_acc = accuracy(model, data["x_test"], data["y_test"])
    if eval_every > 0:
        curve.append({"step": done, "test_accuracy": final_acc})
    rec = {
        "model": name,
        "params": params,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "train_seconds": round(train_seconds, 4),
        "steps_per_second": round(steps / train_seconds, 2) if train_seconds > 0 else None,
        "final_test_accuracy": round(final_acc, 4),
        "final_train_loss": round(last_loss, 5),
        "seed": seed,
    }
    if curve:
        rec["test_accuracy_curve"] = curve
    return rec


def cpu_model() -> str:
    """CPU 'model name' from /proc/cpuinfo, so timings can be tied to hardware."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    """Short HEAD hash, or 'uncommitted' when the repo has no commits (or git is unavailable)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip() or "uncommitted"
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def machine_block(argv: list[str]) -> dict:
    """Versions, thread settings, CPU pinning and command line recorded with every result."""
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "command": " ".join(shlex.quote(a) for a in ["python", *argv]),
        "git_commit": git_commit(),
        "cpu_model": cpu_model(),
        "cpu_affinity": affinity,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "timing": (
            f"time.perf_counter around the pure step loop (forward, loss, backward, Adam step, zero_grad); "
            f"{WARMUP_STEPS} warm-up steps on a throwaway model/optimizer copy excluded; evaluation excluded"
        ),
        "protocol": f"Adam lr {LEARNING_RATE}, CrossEntropyLoss, batch {BATCH_SIZE} as sequential slices "
        f"x[bix:bix+{BATCH_SIZE}], bix=(step*{BATCH_SIZE})%4000, no shuffling",
    }


def write_markdown(path: str, meta: dict, records: list[dict]) -> None:
    """Human-readable summary table next to the JSON."""
    aff = meta.get("cpu_affinity")
    prefix = f"taskset -c {aff[0]} " if aff and len(aff) == 1 else ""
    lines = [
        "# PyTorch reference timings (MNIST-1D, speed yardstick)",
        "",
        f"- Command: `{prefix}{meta['command']}` (CPU affinity seen by the process: {meta['cpu_affinity']})",
        f"- Commit: `{meta['git_commit']}`",
        f"- Machine: {meta['cpu_model']}, 1 thread pinned "
        f"(torch num_threads={meta['torch_num_threads']}, interop={meta['torch_num_interop_threads']})",
        f"- Versions: torch {meta['torch_version']}, numpy {meta['numpy_version']}, python {meta['python_version']}",
        f"- Protocol: {meta['protocol']}",
        f"- Timing: {meta['timing']}",
        "",
        "| model | params | steps | train_seconds | steps/s | final test acc |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['steps']} | {r['train_seconds']:.2f} | "
            f"{r['steps_per_second']:.1f} | {r['final_test_accuracy']:.3f} |"
        )
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """CLI; bad model names or step counts exit with a one-line error."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="logistic,mlp,cnn,gru", help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle-seq", action="store_true", help="the spatially shuffled MNIST-1D variant")
    p.add_argument("--eval-every", type=int, default=0, help="untimed test eval every N steps (0 = only at end)")
    p.add_argument("--out", default="results/torch_reference.json")
    p.add_argument("--md", default=None, help="markdown path (default: --out with .md)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        sys.exit(f"error: unknown model name(s) {unknown or '(none given)'}; choose from {','.join(MODELS)}")
    if args.steps <= 0:
        sys.exit(f"error: --steps must be positive, got {args.steps}")
    if args.eval_every < 0:
        sys.exit(f"error: --eval-every must be >= 0, got {args.eval_every}")
    if args.md is None:
        args.md = os.path.splitext(args.out)[0] + ".md"
    return args


def main(argv: list[str]) -> int:
    """Pin threads, build data, benchmark each requested model, write JSON and markdown."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    meta = machine_block(sys.argv)
    if meta["cpu_affinity"] is not None and len(meta["cpu_affinity"]) != 1:
        print(f"warning: process may run on cores {meta['cpu_affinity']}; run under `taskset -c 0`", file=sys.stderr)
    data = load_data(args.shuffle_seq)
    records = []
    for name in args.models:
        r = bench_model(name, data, args.steps, args.seed, args.eval_every)
        records.append(r)
        print(
            f"{name:8s} params={r['params']:6d} train_seconds={r['train_seconds']:8.2f} "
            f"steps/s={r['steps_per_second']:8.1f} test_acc={r['final_test_accuracy']:.4f}",
            flush=True,
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": records}, f, indent=2)
        f.write("\n")
    write_markdown(args.md, meta, records)
    print(f"wrote {args.out} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
