"""train_and_evaluate(config, workdir): data -> model -> jitted train chunks -> checkpoints.

The step is `research.training.step.make_train_step`; here it runs `log_every` steps at a time under
`lax.scan` with the state donated, gathering batches from the device-resident training set (the
fastest structure measured on CPU: results/train_loop_structure.md). Re-running on a workdir
resumes from its latest checkpoint and ends bitwise where an uninterrupted run ends. Evaluation
is the task's evaluator (`research.training.evaluators`), chosen by the dataset, not branched here.

`train_runs` trains several runs side by side: runs that differ only in seed and in the optimizer
scalars Optax injects (`config.SIDE_BY_SIDE`) share one compiled chunk, `vmap`ped over members,
each member with its own run directory (config, checkpoints, events, summary), exactly as if it
had been trained alone. One run is the group of one, trained without `vmap`.

The best checkpoint is chosen on the validation split (`data.validation_size`), never the test
split: every new best is saved, so `summary.json`'s `best_step` is the step `--checkpoint best`
restores. Without a validation split a run has no best.

A run survives what ends jobs: SIGTERM or Ctrl-C (`preemption`) stops it after the chunk in
progress with a checkpoint at that step; a damaged newest checkpoint is set aside and the run
resumes from the newest that restores (`resume`); a start that fails before its first
checkpoint is taken back, so the corrected command is not refused. With several processes,
the first alone writes events, config and summary; all of them save checkpoints through Orbax.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import config as config_lib
from research import dashboard
from research import workdir as workdir_lib
from research.checkpoint import Checkpointer
from research.data import BatchSchedule, Dataset, load_dataset
from research.errors import UserError
from research.models import build_model
from research.outputs import write_json
from research.tensorboard_writer import SummaryWriter
from research.training import preemption, resume
from research.training.evaluators import ClassificationEvaluator, make_evaluator
from research.training.optimizers import optimizer_from_config
from research.training.parallel import batch_sharded, check_batch, data_mesh, replicate
from research.training.profiling import ProfileWindow
from research.training.run_summary import run_summary
from research.training.step import TrainState, create_train_state, make_train_chunk, make_train_step


class TrainingError(UserError, RuntimeError):
  """Training cannot go on (the loss became non-finite)."""


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, progress: bool = True
) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; returns and writes its summary."""
  return train_runs([config], [workdir], progress)[0]


def train_runs(
  configs: Sequence[ml_collections.ConfigDict],
  workdirs: Sequence[str],
  progress: bool = True,
  keep_going: bool = False,
) -> list[dict[str, Any]]:
  """Trains (or resumes) one run per config side by side; returns and writes their summaries.

  The configs may differ only in `config.SIDE_BY_SIDE` fields, and every run must stand at the
  same step (a fresh group, or one checkpointed together). A run whose loss becomes non-finite
  raises TrainingError, or with `keep_going` stops alone and gets a summary saying so.
  """
  if len(configs) != len(workdirs) or not configs:
    raise ValueError("one workdir per config, at least one run")
  workdirs = [os.path.abspath(w) for w in workdirs]
  if len(set(workdirs)) != len(workdirs):
    raise config_lib.ConfigError("two runs of one group share a workdir; give each its own")
  for c in configs:
    config_lib.validate(c)
  config_lib.check_side_by_side(configs)
  config, members = configs[0], len(configs)
  mesh = data_mesh(config.get("num_devices", 1))
  check_batch(mesh, config.batch_size)
  if members > 1 and mesh.devices.size > 1:
    raise config_lib.ConfigError(
      "runs trained side by side use one device; set num_devices=1 or train them one by one"
    )
  if members > 1 and config.get("profile_steps", ""):
    raise config_lib.ConfigError("profile_steps traces one run; train the profiled run alone")
  # Everything a config can fail on comes before anything is written.
  data = load_dataset(config.data)
  model = build_model(config.model, data.num_classes)
  x0 = jnp.zeros((1, *data.input_shape), data.x_train.dtype)
  # Each member starts as its run alone would: its seed, its optimizer scalars in its state.
  states = [
    create_train_state(model, optimizer_from_config(c), x0, jax.random.key(c.seed)) for c in configs
  ]
  optimizer = optimizer_from_config(config)  # the update reads every scalar from the state
  schedules = [
    BatchSchedule(len(data.x_train), c.batch_size, c.data.shuffle, c.seed) for c in configs
  ]
  setup = _Setup(
    data, model, optimizer, states, schedules, make_evaluator(model, data, config.eval_batch_size)
  )
  x_train, y_train = replicate((data.x_train, data.y_train), mesh)
  group = _Group(members, mesh)
  primary = jax.process_index() == 0  # the one process that writes events, config and summary

  with preemption.deferred(), _undone_if_failed(workdirs, configs, primary):
    metas, state = _train(
      configs, workdirs, setup, (x_train, y_train), group, primary, progress, keep_going
    )
    summaries = []
    for i, (c, w, meta) in enumerate(zip(configs, workdirs, metas)):
      summary = run_summary(c, model, group.member(state, i), meta, data, setup.evaluator, members)
      if primary:
        write_json(workdir_lib.path(w, workdir_lib.SUMMARY), summary)
        dashboard.publish_training(w, c, summary["steps"], summary)
      summaries.append(summary)
  return summaries


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What a group trains with, built before anything is written (a bad config leaves no trace)."""

  data: Dataset
  model: Any
  optimizer: Any
  states: list[TrainState]  # each member's fresh state
  schedules: list[BatchSchedule]
  evaluator: ClassificationEvaluator


@contextlib.contextmanager
def _undone_if_failed(workdirs, configs, primary: bool):
  """Prepares every workdir; a run that fails before its first checkpoint is taken back, so the
  corrected command is not refused (22 of 92 bad starts had left a blocking config.json)."""
  starts = []
  try:
    for w, c in zip(workdirs, configs):
      starts.append(workdir_lib.prepare(w, c, write=primary))
    yield
  except BaseException:
    if primary:
      for start in starts:
        start.undo()
    raise


def _train(
  configs: Sequence[ml_collections.ConfigDict],
  workdirs: Sequence[str],
  setup: _Setup,
  train_arrays: tuple[jax.Array, jax.Array],
  group: "_Group",
  primary: bool,
  progress: bool,
  keep_going: bool,
) -> tuple[list[dict], TrainState]:
  """The loop proper: restore, compile, chunks until done or a signal; (metas, final state)."""
  config, members = configs[0], len(configs)
  x_train, y_train = train_arrays
  data, model, evaluator, schedules = setup.data, setup.model, setup.evaluator, setup.schedules
  with contextlib.ExitStack() as stack:
    ckpts = [
      stack.enter_context(Checkpointer(workdir_lib.checkpoint_dir(w), config.keep_checkpoints))
      for w in workdirs
    ]
    writers = [stack.enter_context(SummaryWriter(w, enabled=primary)) for w in workdirs]
    restored = [resume.restore_or_start(ck, s) for ck, s in zip(ckpts, setup.states)]
    steps = {int(s.step) for s, _ in restored}
    if len(steps) > 1:
      raise TrainingError(
        f"runs of one group stand at different steps ({sorted(steps)}); resume them one by one"
      )
    step = steps.pop()  # kept here: reading it from a stacked state would slice every leaf
    state = group.stack([s for s, _ in restored])
    metas = [m for _, m in restored]
    for c, w, meta, writer in zip(configs, workdirs, metas, writers):
      meta["data_spec"] = {
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "input_dtype": str(data.x_train.dtype),
      }
      if step < c.num_steps:  # a finished run keeps its trial and events as they are
        writer.session_start(step + 1)  # drops what a killed run logged after `step`
        if primary:
          dashboard.publish_training(w, c, step)

    t = time.perf_counter()
    chunk_fn = group.jit(make_train_chunk(make_train_step(model, setup.optimizer)))
    compiled = {}  # chunk length -> executable: log_every, a shorter last chunk, profiling's 1
    compile_seconds = time.perf_counter() - t + evaluator.compile(group.member(state, 0).params)
    for meta in metas:
      meta["compile_seconds"] += compile_seconds

    live = list(range(members))
    bar = _progress_bar(progress and primary, config.num_steps, step, config.experiment, members)
    window = config.get("profile_steps", "") if primary else ""  # one trace, process 0's
    profile = ProfileWindow(window, config.num_steps, workdirs[0])
    stack.callback(profile.stop)
    while step < config.num_steps and live:
      k = profile.chunk_length(step, min(config.log_every, config.num_steps - step))
      indices = group.indices([s.chunk(step, k) for s in schedules])
      if k not in compiled:
        t = time.perf_counter()
        compiled[k] = chunk_fn.lower(state, x_train, y_train, indices).compile()
        for meta in metas:
          meta["compile_seconds"] += time.perf_counter() - t
      t = time.perf_counter()
      for ck in ckpts:  # a save still in flight would share the core with the timed chunk
        ck.wait()
      for meta in metas:
        meta["checkpoint_seconds"] += time.perf_counter() - t
      profile.before_chunk(step)
      t = time.perf_counter()
      with profile.step_marker(step):
        state, metrics = compiled[k](state, x_train, y_train, indices)
        metrics = jax.device_get(metrics)  # blocks until the chunk is done
      seconds = time.perf_counter() - t
      profile.after_chunk(step + k)
      signum = preemption.agreed(preemption.requested())
      for i in list(live):
        member_metrics = group.member(metrics, i)
        meta = metas[i]
        meta["train_seconds"] += seconds
        diverged = _first_non_finite(member_metrics["loss"], step)
        if diverged is not None:
          if not keep_going:
            raise TrainingError(_divergence_message(diverged, ckpts[i], workdirs, i))
          meta["diverged_at_step"] = diverged[0]
          live.remove(i)
          continue
        _log_and_save(
          configs[i],
          step + k,
          functools.partial(group.member, state, i),  # sliced only to evaluate or save
          member_metrics,
          meta,
          evaluator,
          writers[i],
          ckpts[i],
          schedules[i],
          k,
          seconds,
          force_save=signum is not None,
        )
      for writer in writers:  # a live TensorBoard sees every chunk; a kill loses none
        writer.flush()
      step += k
      bar.update(k)
      bar.set_postfix_str(_postfix([metas[i] for i in live], metrics, live, group))
      if signum is not None:
        bar.close()
        for ck in ckpts:
          ck.wait()
        raise preemption.Interrupted(signum, step)
    bar.close()
  return metas, state


class _Group:
  """How a group's state, indices and metrics are laid out: one run as is, several stacked on a
  leading member axis (M) with the train chunk `vmap`ped over it."""

  def __init__(self, members: int, mesh):
    self.members, self.mesh = members, mesh
    self.stacked = members > 1
    self._indices_sharding = batch_sharded(mesh, batch_axis=2 if self.stacked else 1)

  def stack(self, states: Sequence[TrainState]) -> TrainState:
    if not self.stacked:
      return replicate(states[0], self.mesh)
    return replicate(jax.tree.map(lambda *leaves: jnp.stack(leaves), *states), self.mesh)

  def member(self, tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree) if self.stacked else tree

  def indices(self, chunks: Sequence[np.ndarray]) -> jax.Array:
    """[J, B] batch indices, or [M, J, B]: each member follows its own batch schedule."""
    return jax.device_put(np.stack(chunks) if self.stacked else chunks[0], self._indices_sharding)

  def jit(self, chunk):
    if self.stacked:
      chunk = jax.vmap(chunk, in_axes=(0, None, None, 0))
    return jax.jit(chunk, donate_argnums=0)


def _log_and_save(
  config: ml_collections.ConfigDict,
  step: int,
  member_state: Callable[[], TrainState],
  metrics: dict[str, np.ndarray],
  meta: dict,
  evaluator: ClassificationEvaluator,
  writer: SummaryWriter,
  ckpt: Checkpointer,
  schedule: BatchSchedule,
  k: int,
  seconds: float,
  force_save: bool = False,
) -> None:
  """One member's scalars after a chunk of `k` steps (ending at `step`); its evaluation and
  checkpoint when due, or when `force_save` (the run is about to stop on a signal)."""
  # Every step's metrics, not the chunk's mean: 24x denser curves at the defaults, and what
  # each update used (learning_rate is read back from the optimizer state).
  per_step = {f"train/{n}": np.asarray(v).tolist() for n, v in metrics.items()}
  for j in range(k):
    writer.scalars({tag: values[j] for tag, values in per_step.items()}, step - k + j + 1)
  logged = {
    "train_speed/step_time_ms": 1e3 * seconds / k,
    "train_speed/examples_per_second": k * config.batch_size / seconds,
  }
  logged.update(evaluator.throughput(k * config.batch_size, seconds))
  new_best = None
  if step % config.eval_every == 0 or step == config.num_steps:
    t = time.perf_counter()
    result = evaluator(member_state().params)
    meta["eval_seconds"] += time.perf_counter() - t
    logged.update(evaluator.scalars(result))
    meta["last_eval"] = {"step": step, **result}
    score = evaluator.score(result)
    if score is not None and score > meta["best_eval"].get("score", -np.inf):
      meta["best_eval"] = {"step": step, "score": score, **result}
      new_best = score
  writer.scalars(logged, step)
  due = step % config.checkpoint_every == 0 or step == config.num_steps
  if due or force_save or new_best is not None:
    resume.save(ckpt, member_state(), meta, step, schedule, new_best)


def _first_non_finite(losses: np.ndarray, first_step: int) -> tuple[int, float] | None:
  """(step, loss) of the chunk's first non-finite loss, or None."""
  bad = ~np.isfinite(losses)
  if not bad.any():
    return None
  return first_step + int(np.argmax(bad)) + 1, float(losses[bad][0])


def _divergence_message(
  diverged: tuple[int, float], ckpt: Checkpointer, workdirs: Sequence[str], i: int
) -> str:
  at, loss = diverged
  ckpt.wait()
  last = ckpt.latest_step()
  kept = (
    f"the last good checkpoint is step {last}" if last is not None else "no checkpoint was written"
  )
  run = f"{workdirs[i]}: " if len(workdirs) > 1 else ""
  return f"{run}loss became {loss} at step {at}; {kept}; lower --config.optimizer.learning_rate"


def _progress_bar(enabled: bool, total: int, initial: int, name: str, members: int):
  from tqdm.auto import tqdm

  return tqdm(
    total=total,
    initial=initial,
    desc=(name or "train") + (f" x{members}" if members > 1 else ""),
    unit="step",
    disable=not enabled,
    dynamic_ncols=True,
    mininterval=0.5,
  )


def _postfix(metas: list[dict], metrics: dict, live: list[int], group: _Group) -> str:
  losses = [float(np.mean(group.member(metrics, i)["loss"])) for i in live]
  accs = [m["last_eval"].get("test_accuracy", float("nan")) for m in metas]
  if len(losses) == 1:
    return f"loss={losses[0]:.3f}, test_acc={accs[0]:.3f}"
  return (
    f"{len(live)} runs, loss {min(losses):.3f}..{max(losses):.3f}, test_acc {max(accs):.3f} max"
  )
