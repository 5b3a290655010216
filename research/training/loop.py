"""train_and_evaluate(config, workdir): data -> model -> jitted train chunks -> checkpoints.

The step is `research.training.step.make_train_step`; here it runs `log_every` steps at a time under
`lax.scan` with the state donated, gathering batches from the device-resident training set (the
fastest structure measured on CPU: results/train_loop_structure.md). Re-running on a workdir
resumes from its latest checkpoint and ends bitwise where an uninterrupted run ends. Evaluation
is the task's evaluator (`research.training.evaluators`), chosen by the dataset, not branched here.

`train_runs` trains several runs side by side: runs that differ only in seed and in the optimizer
scalars Optax injects (`config.SIDE_BY_SIDE`) share one compiled chunk, `vmap`ped over members
(`research.training.side_by_side`), each member with its own run directory (config,
checkpoints, events, summary), exactly as if it had been trained alone. One run is the group of
one, trained without `vmap`. Each workdir is locked first (one writer per workdir:
`research/workdir_lock.py`); a config, or a numeric environment (x64 mode, XLA:CPU threads), that
its workdir's run may not resume is refused before the dataset is loaded; a resume says from
which step it goes on.

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
from jax.sharding import Mesh

from research import config as config_lib
from research import dashboard
from research import workdir as workdir_lib
from research.checkpoint import Checkpointer
from research.data import BatchSchedule, Dataset, load_dataset
from research.errors import UserError
from research.models import build_model
from research.outputs import write_json
from research.tensorboard_writer import SummaryWriter
from research.training import preemption, resume, run_dirs
from research.training.evaluators import ClassificationEvaluator, make_evaluator
from research.training.optimizers import optimizer_from_config
from research.training.parallel import check_batch, data_mesh, replicate
from research.training.profiling import ProfileWindow
from research.training.progress import postfix, progress_bar, start_line
from research.training.run_summary import run_summary
from research.training.side_by_side import Chunks, Group
from research.training.step import TrainState, create_train_state, make_train_step


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
  mesh = _check_group(configs, workdirs)
  options = _Options(jax.process_index() == 0, progress, keep_going)
  with run_dirs.claimed(configs, workdirs, options.primary) as numerics:
    setup = _setup(configs, mesh)  # all a config can fail on comes before anything is written
    with (
      preemption.deferred(),
      run_dirs.undone_if_failed(workdirs, configs, options.primary, numerics),
    ):
      metas, state = _train(configs, workdirs, setup, options)
      summaries = []
      for i, (c, w, meta) in enumerate(zip(configs, workdirs, metas)):
        member = setup.group.member(state, i)
        summary = run_summary(
          c, setup.model, member, meta, setup.data, setup.evaluator, len(configs)
        )
        if options.primary:
          write_json(workdir_lib.path(w, workdir_lib.SUMMARY), summary)
          dashboard.publish_training(w, c, summary["steps"], summary)
        summaries.append(summary)
  return summaries


def _check_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]) -> Mesh:
  """Refuses, in seconds and before the dataset is generated, a group that cannot train as
  asked: bad values, members that differ beyond SIDE_BY_SIDE, a device count or batch that does
  not split. Returns the data mesh. The workdirs are checked once locked (`run_dirs.claimed`)."""
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
  return mesh


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What a group trains with, built before anything is written (a bad config leaves no trace)."""

  data: Dataset
  model: Any
  group: Group
  chunks: Chunks  # the compiled train chunk over the device-resident training set
  states: list[TrainState]  # each member's fresh state
  schedules: list[BatchSchedule]
  evaluator: ClassificationEvaluator


def _setup(configs: Sequence[ml_collections.ConfigDict], mesh: Mesh) -> _Setup:
  config = configs[0]
  data = load_dataset(config.data)
  model = build_model(config.model, data.num_classes)
  x0 = jnp.zeros((1, *data.input_shape), data.x_train.dtype)
  # Each member starts as its run alone would: its seed, its optimizer scalars in its state.
  states = [
    create_train_state(model, optimizer_from_config(c), x0, jax.random.key(c.seed)) for c in configs
  ]
  optimizer = optimizer_from_config(config)  # the update reads every scalar from the state
  group = Group(len(configs), mesh)
  x_train, y_train = replicate((data.x_train, data.y_train), mesh)
  return _Setup(
    data,
    model,
    group,
    Chunks(group, make_train_step(model, optimizer), x_train, y_train),
    states,
    [BatchSchedule(len(data.x_train), c.batch_size, c.data.shuffle, c.seed) for c in configs],
    make_evaluator(model, data, config.eval_batch_size),
  )


@dataclasses.dataclass(frozen=True)
class _Options:
  primary: bool  # the one process that writes events, config and summary
  progress: bool
  keep_going: bool  # a diverged member stops alone instead of raising TrainingError


@dataclasses.dataclass(eq=False)
class _Run:
  """One member of the group: its config, its batch schedule, and what it writes to."""

  config: ml_collections.ConfigDict
  workdir: str
  schedule: BatchSchedule
  ckpt: Checkpointer
  writer: SummaryWriter
  meta: dict  # timings and evaluations, saved in every checkpoint


@dataclasses.dataclass(frozen=True)
class _Chunk:
  """A chunk just trained: `k` steps ending at `end`, in `seconds`; `stopping` on a signal."""

  end: int
  k: int
  seconds: float
  stopping: bool


def _train(
  configs: Sequence[ml_collections.ConfigDict],
  workdirs: Sequence[str],
  setup: _Setup,
  options: _Options,
) -> tuple[list[dict], TrainState]:
  """The loop proper: restore, compile, chunks until done or a signal; (metas, final state)."""
  config, group, evaluator = configs[0], setup.group, setup.evaluator
  with contextlib.ExitStack() as stack:
    runs, state, step = _open_runs(stack, configs, workdirs, setup, options.primary)
    _add_seconds(runs, "compile_seconds", evaluator.compile(group.member(state, 0).params))
    live = list(runs)
    bar = progress_bar(
      options.progress and options.primary, config.num_steps, step, config.experiment, len(runs)
    )
    stack.callback(bar.close)
    window = config.get("profile_steps", "") if options.primary else ""  # one trace, process 0's
    profile = ProfileWindow(window, config.num_steps, workdirs[0])
    stack.callback(profile.stop)
    while step < config.num_steps and live:
      k = profile.chunk_length(step, min(config.log_every, config.num_steps - step))
      indices = group.indices([run.schedule.chunk(step, k) for run in runs])
      _add_seconds(runs, "compile_seconds", setup.chunks.compile(state, indices))
      _add_seconds(runs, "checkpoint_seconds", _wait_for_saves(runs))
      profile.before_chunk(step)
      with profile.step_marker(step):
        state, metrics, seconds = setup.chunks(state, indices)
      profile.after_chunk(step + k)
      signum = preemption.agreed(preemption.requested())
      chunk = _Chunk(step + k, k, seconds, stopping=signum is not None)
      for i, run in enumerate(runs):
        if run not in live:
          continue
        run.meta["train_seconds"] += seconds
        member_metrics = group.member(metrics, i)
        if _diverged(run, member_metrics["loss"], step, options.keep_going, len(runs)):
          live.remove(run)
          continue
        member_state = functools.partial(group.member, state, i)  # sliced only when needed
        _log_and_save(run, chunk, member_metrics, member_state, evaluator)
      for run in runs:  # a live TensorBoard sees every chunk; a kill loses none
        run.writer.flush()
      step += k
      bar.update(k)
      shown = [(i, run) for i, run in enumerate(runs) if run in live]
      losses = [float(np.mean(group.member(metrics, i)["loss"])) for i, _ in shown]
      bar.set_postfix_str(
        postfix(losses, [r.meta["last_eval"].get("test_accuracy") for _, r in shown])
      )
      if chunk.stopping:
        bar.close()
        _wait_for_saves(runs)
        raise preemption.Interrupted(signum, step)
  return [run.meta for run in runs], state


def _open_runs(
  stack: contextlib.ExitStack,
  configs: Sequence[ml_collections.ConfigDict],
  workdirs: Sequence[str],
  setup: _Setup,
  primary: bool,
) -> tuple[list[_Run], TrainState, int]:
  """Every member's checkpoints and events, restored where they stand: (runs, the group's
  state, the step they all stand at). A resume says so in one line."""
  config, data = configs[0], setup.data
  runs, states = [], []
  for c, w, schedule, fresh in zip(configs, workdirs, setup.schedules, setup.states):
    ckpt = stack.enter_context(Checkpointer(workdir_lib.checkpoint_dir(w), config.keep_checkpoints))
    writer = stack.enter_context(SummaryWriter(w, enabled=primary))
    state, meta = resume.restore_or_start(ckpt, fresh)
    meta["data_spec"] = {
      "input_shape": list(data.input_shape),
      "num_classes": data.num_classes,
      "input_dtype": str(data.x_train.dtype),
    }
    runs.append(_Run(c, w, schedule, ckpt, writer, meta))
    states.append(state)
  steps = {int(s.step) for s in states}
  if len(steps) > 1:
    raise TrainingError(
      f"runs of one group stand at different steps ({sorted(steps)}); resume them one by one"
    )
  step = steps.pop()  # kept here: reading it from a stacked state would slice every leaf
  for run in runs:
    if step < run.config.num_steps:  # a finished run keeps its trial and events as they are
      run.writer.session_start(step + 1)  # drops what a killed run logged after `step`
      if primary:
        dashboard.publish_training(run.workdir, run.config, step)
  line = start_line([_shown(w) for w in workdirs], step, config.num_steps)
  if line and primary:
    print(line, flush=True)
  return runs, setup.group.stack(states), step


def _shown(workdir: str) -> str:
  """A workdir as a message names it: relative to the current directory when under it."""
  relative = os.path.relpath(workdir)
  return workdir if relative.startswith("..") else relative


def _add_seconds(runs: Sequence[_Run], key: str, seconds: float) -> None:
  for run in runs:  # the group's time is every member's
    run.meta[key] += seconds


def _wait_for_saves(runs: Sequence[_Run]) -> float:
  """Waits for checkpoint saves in flight (one would share the core with the timed chunk)."""
  t = time.perf_counter()
  for run in runs:
    run.ckpt.wait()
  return time.perf_counter() - t


def _log_and_save(
  run: _Run,
  chunk: _Chunk,
  metrics: dict[str, np.ndarray],
  member_state: Callable[[], TrainState],
  evaluator: ClassificationEvaluator,
) -> None:
  """One member's scalars after a chunk; its evaluation and checkpoint when due, or when the
  run is about to stop on a signal."""
  config, meta, step, k = run.config, run.meta, chunk.end, chunk.k
  # Every step's metrics, not the chunk's mean: 24x denser curves at the defaults, and what
  # each update used (learning_rate is read back from the optimizer state).
  per_step = {f"train/{n}": np.asarray(v).tolist() for n, v in metrics.items()}
  for j in range(k):
    run.writer.scalars({tag: values[j] for tag, values in per_step.items()}, step - k + j + 1)
  logged = {
    "train_speed/step_time_ms": 1e3 * chunk.seconds / k,
    "train_speed/examples_per_second": k * config.batch_size / chunk.seconds,
  }
  logged.update(evaluator.throughput(k * config.batch_size, chunk.seconds))
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
  run.writer.scalars(logged, step)
  due = step % config.checkpoint_every == 0 or step == config.num_steps
  if due or chunk.stopping or new_best is not None:
    resume.save(run.ckpt, member_state(), meta, step, run.schedule, new_best)


def _diverged(run: _Run, losses: np.ndarray, step: int, keep_going: bool, members: int) -> bool:
  """Whether the chunk from `step` met a non-finite loss: with `keep_going` the member stops
  and its summary will say so; else TrainingError names the last good checkpoint."""
  bad = ~np.isfinite(losses)
  if not bad.any():
    return False
  at, loss = step + int(np.argmax(bad)) + 1, float(losses[bad][0])
  if keep_going:
    run.meta["diverged_at_step"] = at
    return True
  run.ckpt.wait()
  last = run.ckpt.latest_step()
  kept = (
    f"the last good checkpoint is step {last}" if last is not None else "no checkpoint was written"
  )
  where = f"{run.workdir}: " if members > 1 else ""
  raise TrainingError(
    f"{where}loss became {loss} at step {at}; {kept}; lower --config.optimizer.learning_rate"
  )
