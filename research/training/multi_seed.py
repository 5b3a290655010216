"""Several runs of one model trained side by side: the train chunk `vmap`ped over members.

Each member has its own initialization seed and its own dataset (for instance the original and
the spatially shuffled MNIST-1D), and all see the same batch indices, so seeds change
initialization only. Member i starts from exactly the params a single run with seed i starts
from. On a small CPU model one vmapped step over M members costs far less than M steps. The
group and its chunk are `side_by_side`'s, as for `loop.train_runs`; here there are no run
directories, and every member is evaluated on its whole test split at once.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.data import BatchSchedule, Dataset
from research.models import build_model, count_params
from research.training.evaluators import make_eval_step
from research.training.optimizers import optimizer_from_config
from research.training.parallel import data_mesh
from research.training.side_by_side import Chunks, Group
from research.training.step import create_train_state, make_train_step


def train_side_by_side(
  config: ml_collections.ConfigDict, datasets: Sequence[Dataset], seeds: Sequence[int]
) -> dict[str, Any]:
  """Trains member i on `datasets[i]` from `seeds[i]`; test accuracy every `eval_every` steps."""
  if len(datasets) != len(seeds) or not seeds:
    raise ValueError("one dataset per seed, at least one member")
  shapes = {(d.x_train.shape, d.x_test.shape) for d in datasets}
  if len(shapes) != 1:
    raise ValueError(f"members' datasets differ in shape: {sorted(shapes)}")
  first = datasets[0]
  model = build_model(config.model, first.num_classes)
  optimizer = optimizer_from_config(config)
  # Stacked even for one member: every job runs the same vmapped program.
  group = Group(len(seeds), data_mesh(1), stacked=True, per_member_data=True, shared_indices=True)
  x0 = jnp.zeros((1, *first.input_shape), jnp.float32)
  t = time.perf_counter()
  # One member's init compiled once and called per seed (cheaper to compile than its vmap).
  init = jax.jit(lambda key: create_train_state(model, optimizer, x0, key))
  states = group.stack([init(jax.random.key(s)) for s in seeds])
  x_train, y_train, x_test, y_test = group.stack(
    [(d.x_train, d.y_train, d.x_test, d.y_test) for d in datasets]
  )
  schedule = BatchSchedule(len(first.x_train), config.batch_size, config.data.shuffle, config.seed)
  chunk_len = config.eval_every
  chunks = Chunks(group, make_train_step(model, optimizer), x_train, y_train)
  chunks.compile(states, group.indices([schedule.chunk(0, chunk_len)]))
  eval_step = make_eval_step(model)
  mask = jnp.ones(y_test.shape[1], bool)
  evaluate = (
    jax.jit(group.over_members(lambda p, x, y: eval_step(p, x, y, mask), (0, 0, 0)))
    .lower(states.params, x_test, y_test)
    .compile()
  )
  compile_seconds = time.perf_counter() - t

  train_seconds = eval_seconds = 0.0
  history = []  # (step, accuracy per member, loss per member)
  for step in range(0, config.num_steps, chunk_len):
    states, metrics, seconds = chunks(states, group.indices([schedule.chunk(step, chunk_len)]))
    train_seconds += seconds
    if not np.isfinite(metrics["loss"]).all():
      raise FloatingPointError(f"non-finite loss within steps {step}..{step + chunk_len}")
    t = time.perf_counter()
    loss_sum, correct, count = (np.asarray(v) for v in evaluate(states.params, x_test, y_test))
    eval_seconds += time.perf_counter() - t
    history.append((step + chunk_len, correct / count, loss_sum / count))

  accuracy = np.stack([h[1] for h in history])  # [evals, members]
  best = accuracy.max(axis=0)
  return {
    "params": count_params(group.member(states.params, 0)),
    "final_test_accuracy": accuracy[-1].tolist(),
    "final_test_loss": history[-1][2].tolist(),
    "best_test_accuracy": best.tolist(),
    "best_step": [history[i][0] for i in accuracy.argmax(axis=0)],
    "train_seconds": train_seconds,
    "eval_seconds": eval_seconds,
    "compile_seconds": compile_seconds,
    "members": len(seeds),
    "final_params": jax.device_get(states.params),
  }
