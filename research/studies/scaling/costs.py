"""Measured costs per model size: training seconds per token, and serving seconds per token from
the serving engine, at batch 1 (real time) and at its best slot count.

Both are measured in one worker pinned to one core with one XLA thread, alone on the machine,
after the grid, from each size's trained weights (its longest run), one size after another:
- training: the run's own train step (its optimizer and schedule) scanned over a chunk of
  batches as the training loop runs it, compilation excluded, the median chunk over the tokens it
  trained;
- serving: `DecodeEngine`'s time per output token at one slot (real time), and tokens/s with
  every slot busy at each slot count, the best kept.
The grid runs' own train seconds are kept too (`costs.grid_train_seconds_per_token`), but they
ran two at a time, one per core, beside whatever else the machine did.
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

TRAIN_CHUNK_STEPS = 32
TRAIN_CHUNKS = 5


def train_seconds_per_token(run: Any) -> dict[str, float]:
  """Median seconds per training token of a chunk of the run's train steps (scanned, as the
  loop runs them), on random tokens of the run's batch shape."""
  import time

  import jax
  import numpy as np

  from research.training.optimizers import optimizer_from_config
  from research.training.step import create_train_state, make_train_step

  c = run.config
  optimizer = optimizer_from_config(c)
  rng = np.random.default_rng(0)
  shape = (TRAIN_CHUNK_STEPS, c.batch_size, run.model.n_ctx)
  xs = jax.numpy.asarray(rng.integers(0, run.num_classes, shape), jax.numpy.int32)
  ys = jax.numpy.asarray(rng.integers(0, run.num_classes, shape), jax.numpy.int32)
  state = create_train_state(run.model, optimizer, xs[0, :1], jax.random.key(0))
  state = state.replace(params=run.params)
  step = make_train_step(run.model, optimizer)

  def chunk(state, xs, ys):
    return jax.lax.scan(lambda s, b: step(s, b), state, (xs, ys))

  chunk = jax.jit(chunk, donate_argnums=0)
  t = time.perf_counter()
  state, _ = jax.block_until_ready(chunk(state, xs, ys))
  compile_seconds = time.perf_counter() - t
  times = []
  for _ in range(TRAIN_CHUNKS):
    t = time.perf_counter()
    state, _ = jax.block_until_ready(chunk(state, xs, ys))
    times.append(time.perf_counter() - t)
  tokens = TRAIN_CHUNK_STEPS * c.batch_size * run.model.n_ctx
  return {
    "seconds_per_token": float(np.median(times)) / tokens,
    "chunk_seconds_p50": float(np.median(times)),
    "chunk_seconds_max": float(np.max(times)),
    "first_call_seconds": compile_seconds,
    "tokens_per_chunk": tokens,
  }


def cost_job(workdirs: Sequence[str], measure: Mapping[str, Any]) -> dict[str, Any]:
  """In a worker: each run's training and serving costs (keyed by workdir)."""
  import numpy as np

  from research.bench.generation import engine_decode_sweep, engine_realtime_generation
  from research.serving.decode_engine import for_serving
  from research.serving.restore import load_run

  out = {}
  for workdir in workdirs:
    run = load_run(workdir)
    model = for_serving(run.model)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, model.num_classes, measure["prompt_tokens"]).tolist()
    realtime = engine_realtime_generation(
      model, run.params, prompt, measure["new_tokens"], measure["sequences"]
    )
    batched = engine_decode_sweep(
      model,
      run.params,
      measure["slots"],
      measure["prompt_tokens"],
      measure["new_tokens"],
      repeats=2,
    )
    best = max(batched, key=lambda r: r["tokens_per_second"])
    out[workdir] = {
      "train": train_seconds_per_token(run),
      "realtime_tpot_p50_ms": realtime["tpot"]["p50_ms"],
      "realtime_tpot_p99_ms": realtime["tpot"].get("p99_ms"),
      "realtime_seconds_per_token": realtime["tpot"]["p50_ms"] / 1e3,
      "batched": [
        {"slots": r["batch_size"], "tokens_per_second": r["tokens_per_second"]} for r in batched
      ],
      "best_slots": best["batch_size"],
      "best_seconds_per_token": 1.0 / best["tokens_per_second"],
    }
  return out


def measure_costs(
  workdirs: Sequence[str], measure: Mapping[str, Any], core: int
) -> dict[str, dict[str, Any]]:
  """`cost_job` on one worker pinned to `core`."""
  from research.training.workers import run_jobs

  done = run_jobs(
    cost_job,
    [("costs", (list(workdirs), dict(measure)))],
    [core],
    lambda name, r: f"{len(r)} sizes",
    desc="costs",
  )
  return done["costs"]


def grid_train_seconds_per_token(grid: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Per size, the median over its runs of train seconds per training token."""
  per_size: dict[str, list[float]] = {}
  for run in grid:
    per_size.setdefault(run["size"], []).append(run["train_seconds"] / run["tokens"])
  return {size: statistics.median(v) for size, v in per_size.items()}
