"""train_and_evaluate(config, workdir): data -> model -> jitted train chunks -> checkpoints.

The step is `research.training.step.make_train_step`; here it runs `log_every` steps at a time under
`lax.scan` with the state donated, gathering batches from the device-resident training set (the
fastest structure measured on CPU: results/train_loop_structure.md). Re-running on a workdir
resumes from its latest checkpoint and ends bitwise where an uninterrupted run ends. Evaluation
is the task's evaluator (`research.training.evaluators`), chosen by the dataset, not branched here.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import config as config_lib
from research import workdir as workdir_lib
from research.checkpoint import Checkpointer
from research.data import BatchSchedule, Dataset, load_dataset
from research.models import build_model, count_params
from research.provenance import write_json
from research.tensorboard_writer import SummaryWriter
from research.training.evaluators import make_evaluator
from research.training.optimizers import make_optimizer
from research.training.parallel import batch_sharded, check_batch, data_mesh, replicate
from research.training.step import TrainState, create_train_state, make_train_chunk, make_train_step


class TrainingError(RuntimeError):
  """Training cannot go on (the loss became non-finite)."""


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, progress: bool = True
) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; returns and writes its summary."""
  workdir = os.path.abspath(workdir)
  config_lib.validate(config)
  mesh = data_mesh(config.get("num_devices", 1))
  check_batch(mesh, config.batch_size)  # before anything is written
  workdir_lib.prepare(workdir, config)
  data = load_dataset(config.data)
  model = build_model(config.model, data.num_classes)
  optimizer = make_optimizer(**config.optimizer)
  # State and dataset on every device, each chunk's batch indices split over them.
  state = replicate(
    create_train_state(
      model,
      optimizer,
      jnp.zeros((1, *data.input_shape), data.x_train.dtype),
      jax.random.key(config.seed),
    ),
    mesh,
  )
  schedule = BatchSchedule(len(data.x_train), config.batch_size, config.data.shuffle, config.seed)
  x_train, y_train = replicate((data.x_train, data.y_train), mesh)
  indices_sharding = batch_sharded(mesh, batch_axis=1)

  with (
    Checkpointer(workdir_lib.checkpoint_dir(workdir), config.keep_checkpoints) as ckpt,
    SummaryWriter(workdir) as writer,
  ):
    state, meta = _restore_or_start(ckpt, state)
    meta["data_spec"] = {
      "input_shape": list(data.input_shape),
      "num_classes": data.num_classes,
      "input_dtype": str(data.x_train.dtype),
    }
    if int(state.step) == 0:
      writer.text("config", "```\n" + config.to_json(indent=2) + "\n```", 0)
      writer.hparams(config_lib.flatten(config), ["test/accuracy", "test/loss", "train/loss"])

    t = time.perf_counter()
    chunk_fn = jax.jit(make_train_chunk(make_train_step(model, optimizer)), donate_argnums=0)
    compiled = {}  # chunk length -> executable; at most two (the last chunk may be shorter)
    evaluator = make_evaluator(model, data, config.eval_batch_size)
    meta["compile_seconds"] += time.perf_counter() - t + evaluator.compile(state.params)

    bar = _progress_bar(progress, config.num_steps, int(state.step), config.experiment)
    while (step := int(state.step)) < config.num_steps:
      k = min(config.log_every, config.num_steps - step)
      indices = jax.device_put(schedule.chunk(step, k), indices_sharding)
      if k not in compiled:
        t = time.perf_counter()
        compiled[k] = chunk_fn.lower(state, x_train, y_train, indices).compile()
        meta["compile_seconds"] += time.perf_counter() - t
      t = time.perf_counter()
      ckpt.wait()  # a save still in flight would share the core with the timed chunk
      meta["checkpoint_seconds"] += time.perf_counter() - t
      t = time.perf_counter()
      state, metrics = compiled[k](state, x_train, y_train, indices)
      metrics = jax.device_get(metrics)  # blocks until the chunk is done
      seconds = time.perf_counter() - t
      meta["train_seconds"] += seconds
      _check_finite(metrics["loss"], step, ckpt)
      step += k
      logged = {f"train/{n}": float(np.mean(v)) for n, v in metrics.items()}
      logged.update(
        {
          "train/learning_rate": config.optimizer.learning_rate,
          "perf/step_time_ms": 1e3 * seconds / k,
          "perf/examples_per_second": k * config.batch_size / seconds,
        }
      )
      logged.update(evaluator.throughput(k * config.batch_size, seconds))
      if step % config.eval_every == 0 or step == config.num_steps:
        t = time.perf_counter()
        result = evaluator(state.params)
        meta["eval_seconds"] += time.perf_counter() - t
        logged.update(evaluator.scalars(result))
        meta["last_eval"] = {"step": step, **result}
        if result["test_accuracy"] > meta["best_eval"].get("test_accuracy", -1.0):
          meta["best_eval"] = {"step": step, **result}
      writer.scalars(logged, step)
      if step % config.checkpoint_every == 0 or step == config.num_steps:
        _save(ckpt, state, meta, step, schedule)
      bar.update(k)
      bar.set_postfix(
        loss=f"{logged['train/loss']:.3f}",
        test_acc=f"{meta['last_eval'].get('test_accuracy', float('nan')):.3f}",
      )
    bar.close()
    writer.flush()

  summary = _summary(config, model, state, meta, data)
  if meta["last_eval"]:
    summary.update(evaluator.summary(meta["last_eval"]))
  write_json(workdir_lib.path(workdir, workdir_lib.SUMMARY), summary)
  return summary


def _restore_or_start(ckpt: Checkpointer, state: TrainState) -> tuple[TrainState, dict]:
  meta = {
    "train_seconds": 0.0,
    "compile_seconds": 0.0,
    "eval_seconds": 0.0,
    "checkpoint_seconds": 0.0,
    "last_eval": {},
    "best_eval": {},
  }
  step = ckpt.latest_step()
  if step is None:
    return state, meta
  params, opt_state, saved = ckpt.restore(step, state.params, state.opt_state)
  meta.update({k: saved[k] for k in meta if k in saved})
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state), meta


def _save(
  ckpt: Checkpointer, state: TrainState, meta: dict, step: int, schedule: BatchSchedule
) -> None:
  epoch, batch_in_epoch = divmod(step, schedule.steps_per_epoch)
  saved = {
    **meta,
    "step": step,
    "data_position": {
      "next_step": step,
      "epoch": epoch,
      "batch_in_epoch": batch_in_epoch,
      "shuffle": schedule.shuffle,
      "shuffle_seed": schedule.seed,
    },
    "rng": {"init_seed": schedule.seed, "note": "no stochastic layers; init key = seed"},
  }
  ckpt.save(
    step,
    state.params,
    state.opt_state,
    saved,
    meta["last_eval"].get("test_accuracy") if meta["last_eval"].get("step") == step else None,
  )


def _check_finite(losses: np.ndarray, first_step: int, ckpt: Checkpointer) -> None:
  bad = ~np.isfinite(losses)
  if bad.any():
    at = first_step + int(np.argmax(bad)) + 1
    ckpt.wait()
    last = ckpt.latest_step()
    kept = (
      f"the last good checkpoint is step {last}"
      if last is not None
      else "no checkpoint was written"
    )
    raise TrainingError(
      f"loss became {losses[bad][0]} at step {at}; {kept}; lower --config.optimizer.learning_rate"
    )


def _progress_bar(enabled: bool, total: int, initial: int, name: str):
  from tqdm.auto import tqdm

  return tqdm(
    total=total,
    initial=initial,
    desc=name or "train",
    unit="step",
    disable=not enabled,
    dynamic_ncols=True,
    mininterval=0.5,
  )


def _summary(config, model, state: TrainState, meta: dict, data: Dataset) -> dict[str, Any]:
  import importlib.metadata as md

  device = jax.devices()[0]
  steps = int(state.step)
  return {
    "experiment": config.experiment,
    "model": config.model.name,
    "params": count_params(state.params),
    "dataset": data.name,
    "steps": steps,
    "batch_size": config.batch_size,
    "final_test_accuracy": meta["last_eval"].get("test_accuracy"),
    "final_test_loss": meta["last_eval"].get("test_loss"),
    "best_test_accuracy": meta["best_eval"].get("test_accuracy"),
    "best_step": meta["best_eval"].get("step"),
    "train_seconds": meta["train_seconds"],
    "compile_seconds": meta["compile_seconds"],
    "eval_seconds": meta["eval_seconds"],
    "checkpoint_seconds": meta["checkpoint_seconds"],
    "steps_per_second": steps / meta["train_seconds"] if meta["train_seconds"] else None,
    "device": f"{device.platform}:{device.device_kind}",
    "devices": int(config.get("num_devices", 1) or jax.device_count()),
    "jax_version": jax.__version__,
    "flax_version": md.version("flax"),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
