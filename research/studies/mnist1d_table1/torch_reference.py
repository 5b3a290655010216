"""Independent PyTorch reference of the MNIST-1D paper's four models and training protocol.

Why this exists: it is a speed yardstick for the JAX code in this repo. It re-implements the
reference models (logistic, MLP, CNN, GRU) and the reference protocol (Adam lr 1e-2, batch 100 as
sequential slices, no shuffling, 6000 steps) in plain torch.nn and times the pure training step
loop on one pinned CPU thread. `scripts/bench_torch_reference.py` runs it and writes the results.

The one module of this package that imports torch (pip install -e '.[reference]').
"""

from __future__ import annotations

import copy
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

BATCH_SIZE = 100
LEARNING_RATE = 1e-2
WARMUP_STEPS = 20
EXPECTED_PARAMS = {"logistic": 410, "mlp": 15_210, "cnn": 5_210, "gru": 5_134}
TIMING = (
  "time.perf_counter around the pure step loop (forward, loss, backward, Adam step, "
  f"zero_grad); {WARMUP_STEPS} warm-up steps on a throwaway model/optimizer copy excluded; "
  "evaluation excluded"
)
PROTOCOL = (
  f"Adam lr {LEARNING_RATE}, CrossEntropyLoss, batch {BATCH_SIZE} as sequential slices "
  f"x[bix:bix+{BATCH_SIZE}], bix=(step*{BATCH_SIZE})%4000, no shuffling"
)


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


def pin_threads() -> None:
  """One intra-op and one inter-op thread: the reference is timed on one core."""
  torch.set_num_threads(1)
  torch.set_num_interop_threads(1)


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


def run_steps(
  model: nn.Module,
  optimizer: torch.optim.Optimizer,
  loss_fn: nn.Module,
  x: torch.Tensor,
  y: torch.Tensor,
  start: int,
  n: int,
) -> float:
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


def bench_model(
  name: str, data: dict, steps: int, seed: int, eval_every: int, onnx_path: str | None = None
) -> dict[str, Any]:
  """Warm up on a throwaway copy, then train and time one model under the reference protocol.

  With `onnx_path`, the trained model is also exported there (PyTorch's own ONNX exporter, batch
  dimension free): the independent deployment our engines are timed against.
  """
  torch.manual_seed(seed)
  model = MODELS[name]()
  params = count_params(model)
  assert params == EXPECTED_PARAMS[name], f"{name}: {params} params != {EXPECTED_PARAMS[name]}"
  loss_fn = nn.CrossEntropyLoss()
  x, y = data["x"], data["y"]

  # Warm-up on a deep copy so one-time setup (allocator, kernel dispatch caches) is excluded
  # from the timing without touching the real model's init or optimizer state.
  scratch = copy.deepcopy(model)
  run_steps(
    scratch,
    torch.optim.Adam(scratch.parameters(), lr=LEARNING_RATE),
    loss_fn,
    x,
    y,
    0,
    WARMUP_STEPS,
  )
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
  if onnx_path:
    export_onnx(model.eval(), onnx_path, tuple(x.shape[1:]))
    rec["onnx"] = onnx_path
  return rec


def export_onnx(model: nn.Module, path: str, input_shape: Sequence[int]) -> None:
  """The model as ONNX (TorchScript-based exporter, opset 17), input "x" [B, ...], output
  "logits"; written to a temp file and renamed, so a failure leaves no half file."""
  import warnings

  from research.outputs import atomic_path

  with atomic_path(path) as tmp, warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
    torch.onnx.export(
      model,
      (torch.zeros(1, *input_shape),),
      tmp,
      input_names=["x"],
      output_names=["logits"],
      dynamic_axes={"x": {0: "B"}, "logits": {0: "B"}},
      opset_version=17,
      dynamo=False,
    )


def provenance(argv: Sequence[str]) -> dict[str, Any]:
  """`research.provenance`'s record without JAX's device (starting JAX would add about a second
  to this process, whose whole wall time the reproduction reports), plus torch's threads."""
  from research.provenance import provenance as project_provenance

  meta = project_provenance(argv, jax_device=False, timing=TIMING, protocol=PROTOCOL)
  meta["threads"].update(
    {
      "torch_num_threads": torch.get_num_threads(),
      "torch_num_interop_threads": torch.get_num_interop_threads(),
    }
  )
  meta["versions"]["torch"] = torch.__version__
  return meta


def markdown(meta: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
  """Human-readable summary table, written next to the JSON."""
  from research.outputs import markdown_table

  aff, threads, v = meta["threads"]["cpu_affinity"], meta["threads"], meta["versions"]
  prefix = f"taskset -c {aff[0]} " if aff and len(aff) == 1 else ""
  lines = [
    "# PyTorch reference timings (MNIST-1D, speed yardstick)",
    "",
    f"- Command: `{prefix}{meta['command']}` (CPU affinity seen by the process: {aff})",
    f"- Commit: `{meta['commit']}`, {meta['date']}",
    f"- Machine: {meta['machine']['cpu']}, 1 thread pinned "
    f"(torch num_threads={threads['torch_num_threads']}, "
    f"interop={threads['torch_num_interop_threads']})",
    f"- Versions: torch {v['torch']}, numpy {v.get('numpy')}, python {v['python']}",
    f"- Protocol: {meta['protocol']}",
    f"- Timing: {meta['timing']}",
    "",
    markdown_table(
      ["model", "params", "steps", "train_seconds", "steps/s", "final test acc"],
      [
        [
          r["model"],
          f"{r['params']:,}",
          r["steps"],
          f"{r['train_seconds']:.2f}",
          f"{r['steps_per_second']:.1f}",
          f"{r['final_test_accuracy']:.3f}",
        ]
        for r in records
      ],
      align="lrrrrr",
    ),
  ]
  return "\n".join(lines) + "\n"
