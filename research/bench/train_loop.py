"""Which training-loop structure is fastest for the MNIST-1D models on this machine?

Compares, in one process on the same data and model: a Python loop over a jitted step fed host
batches; the same loop with the dataset on the device and indices fed; and `lax.scan` over chunks
of J steps gathering from the device-resident dataset. On the CNN each structure runs with the
convolution as XLA's conv and as im2col (research/kernels). Compilation is timed apart (ahead-of-
time lower+compile); the timed part runs all steps and blocks on the result; each is repeated and
the median reported. `scripts/bench_train_loop.py` is the entry point.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from research.bench.timing import median_and_percentiles
from research.config import ConfigError
from research.data import BatchSchedule, Dataset, load_dataset
from research.models import ModelError, build_model
from research.outputs import json_text, markdown_table, write_all
from research.provenance import provenance
from research.training.optimizers import make_optimizer
from research.training.step import create_train_state, make_train_chunk, make_train_step

STRUCTURES = ("python_host", "python_device", "scan")
SEQUENCE_MODELS = ("logistic", "mlp", "cnn1d", "gru")  # the families that take [N, 40]


def compare_loop_structures(
  model_name: str = "cnn1d",
  steps: int = 6000,
  repeats: int = 3,
  chunks: Sequence[int] = (100, 1000, 6000),
  impls: Sequence[str] = ("im2col", "xla"),
  structures: Sequence[str] = STRUCTURES,
  log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
  """One record per (conv implementation, loop structure): compile seconds, median train seconds."""
  if model_name not in SEQUENCE_MODELS:
    raise ModelError(
      f"model {model_name!r} does not take MNIST-1D sequences; choose one of: "
      f"{', '.join(SEQUENCE_MODELS)}"
    )
  unknown = sorted(set(structures) - set(STRUCTURES))
  if unknown:
    raise ConfigError(f"unknown structure(s) {', '.join(unknown)}; use {', '.join(STRUCTURES)}")
  impls = list(impls) if model_name == "cnn1d" else [""]
  models = {  # built first: a bad kernel name fails before the data is made
    impl: build_model({"name": model_name, **({"conv_impl": impl} if impl else {})}, 10)
    for impl in impls
  }
  data = load_dataset({"name": "mnist1d"})
  batch_size = 100
  loop = _Loop(
    data,
    BatchSchedule(len(data.x_train), batch_size),
    jax.device_put(data.x_train),
    jax.device_put(data.y_train),
    make_optimizer("adam", 1e-2),
    steps,
    batch_size,
  )
  records = []
  for impl in impls:
    for label, plan in _plans(loop, models[impl], structures, chunks):
      compile_s, run = plan()
      times, loss = [], None
      for _ in range(repeats):
        seconds, loss = run()
        times.append(seconds)
      stats = median_and_percentiles(times)
      rec = {
        "model": model_name,
        "conv_impl": impl or None,
        "structure": label,
        "steps": steps,
        "compile_seconds": compile_s,
        "train_seconds_median": stats["p50"],
        "train_seconds_all": times,
        "steps_per_second": steps / stats["p50"],
        "final_loss": loss,
      }
      records.append(rec)
      log(
        f"{model_name:7s} {impl or '-':7s} {label:28s} compile {compile_s:6.2f}s  "
        f"train {stats['p50']:7.2f}s  ({rec['steps_per_second']:8.0f} steps/s)  loss {loss:.4f}"
      )
  return records


# A loop structure, ready to time: (compile seconds, a run returning (train seconds, last loss)).
_Plan = Callable[[], tuple[float, Callable[[], tuple[float, float]]]]


@dataclasses.dataclass(frozen=True)
class _Loop:
  """What every structure trains with: the same data, batch schedule, optimizer and steps."""

  data: Dataset
  schedule: BatchSchedule
  x_all: jax.Array  # the training set on the device
  y_all: jax.Array
  optimizer: Any
  steps: int
  batch_size: int

  def fresh_state(self, model: Any) -> Any:
    return create_train_state(model, self.optimizer, jnp.zeros((1, 40)), jax.random.key(0))


def _plans(
  loop: _Loop, model: Any, structures: Sequence[str], chunks: Sequence[int]
) -> list[tuple[str, _Plan]]:
  """(label, plan) per structure asked for; scan once per chunk length."""
  plans: list[tuple[str, _Plan]] = []
  for structure in structures:
    if structure == "python_host":
      plans.append(("python loop, host batches", lambda: _python_host(loop, model)))
    elif structure == "python_device":
      plans.append(("python loop, device data", lambda: _python_device(loop, model)))
    elif structure == "scan":
      for k in [int(c) for c in chunks if c]:
        plans.append((f"scan, chunks of {k}", lambda k=k: _scan(loop, model, k)))
  return plans


def _python_host(loop: _Loop, model: Any):
  """A Python loop over the jitted step, each batch gathered on the host and fed."""
  data, schedule, steps = loop.data, loop.schedule, loop.steps
  step = jax.jit(make_train_step(model, loop.optimizer), donate_argnums=0)
  xb, yb = data.x_train[: loop.batch_size], data.y_train[: loop.batch_size]
  t = time.perf_counter()
  compiled = step.lower(loop.fresh_state(model), (xb, yb)).compile()
  compile_s = time.perf_counter() - t

  def run():
    state = loop.fresh_state(model)
    jax.block_until_ready(state)
    t = time.perf_counter()
    for s in range(steps):
      idx = schedule.indices(s)
      state, metrics = compiled(state, (data.x_train[idx], data.y_train[idx]))
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - t, float(metrics["loss"])

  return compile_s, run


def _python_device(loop: _Loop, model: Any):
  """A Python loop over one-step chunks, the dataset on the device and only indices fed."""
  x_all, y_all, steps = loop.x_all, loop.y_all, loop.steps
  chunk = jax.jit(make_train_chunk(make_train_step(model, loop.optimizer)), donate_argnums=0)
  rows = loop.schedule.chunk(0, 1)
  t = time.perf_counter()
  compiled = chunk.lower(loop.fresh_state(model), x_all, y_all, rows).compile()
  compile_s = time.perf_counter() - t
  all_rows = jax.device_put(loop.schedule.chunk(0, steps))

  def run():
    state = loop.fresh_state(model)
    jax.block_until_ready(state)
    t = time.perf_counter()
    for s in range(steps):
      state, metrics = compiled(state, x_all, y_all, all_rows[s : s + 1])
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - t, float(metrics["loss"][-1])

  return compile_s, run


def _scan(loop: _Loop, model: Any, k: int):
  """`lax.scan` over chunks of `k` steps gathering from the device-resident dataset."""
  x_all, y_all, steps, schedule = loop.x_all, loop.y_all, loop.steps, loop.schedule
  if steps % k:
    raise ValueError(f"steps ({steps}) is not a multiple of chunk {k}")
  chunk = jax.jit(make_train_chunk(make_train_step(model, loop.optimizer)), donate_argnums=0)
  t = time.perf_counter()
  compiled = chunk.lower(loop.fresh_state(model), x_all, y_all, schedule.chunk(0, k)).compile()
  compile_s = time.perf_counter() - t

  def run():
    state = loop.fresh_state(model)
    jax.block_until_ready(state)
    t = time.perf_counter()
    for first in range(0, steps, k):
      state, metrics = compiled(state, x_all, y_all, schedule.chunk(first, k))
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - t, float(metrics["loss"][-1])

  return compile_s, run


def write_loop_report(
  records: list[dict[str, Any]], out: str, argv: Sequence[str], threads: int
) -> None:
  """OUT.json (records and provenance) and OUT.md (the table)."""
  meta = provenance(argv, xla_threads=threads)
  rows = [
    [
      r["model"],
      r["conv_impl"] or "-",
      r["structure"],
      f"{r['compile_seconds']:.2f}",
      f"{r['train_seconds_median']:.2f}",
      f"{r['steps_per_second']:.0f}",
    ]
    for r in records
  ]
  table = markdown_table(
    ["model", "conv", "loop structure", "compile s", "train s (median)", "steps/s"], rows
  )
  model, steps = records[0]["model"], records[0]["steps"]
  text = (
    f"# Training loop structure, {model}, {steps} Adam steps at batch 100"
    f"\n\n{meta['markdown']}\n\n{table}\n"
  )
  write_all({out + ".json": json_text({"meta": meta, "records": records}), out + ".md": text})
