"""The fault campaign: one reference run, then every trial kind, two trials at a time.

The trial run is the MNIST-1D MLP for 2000 steps in chunks of 50, a checkpoint every 100 and the
latest 3 kept (three on disk, so two damaged steps still leave one to resume from). On one core
of this 2-core machine it takes about 5 s from start to exit: about 2 s of startup before it
writes anything, then 3 s of training in which Orbax is writing one of the 20 checkpoints about
two thirds of the time, so signals land in startup, in training and mid-save alike. Two choices
keep each start short without changing what is tested: the data is MNIST-1D written once to an
`.npz` (`data.name=npz`; generating it costs about 7 s per start), and every start reads a copy
of a JAX compilation cache the reference warmed (about 10 s of compilation per start). The
reference runs twice, cold and warm, and must agree with itself bitwise, so a trial that differs
from it is a resume that differs, not a nondeterministic run.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import queue
import shutil
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from tools.reliability import damage as damage_lib
from tools.reliability import trials as trials_lib
from tools.reliability.harness import (
  Launch,
  TrialResult,
  TrialSetup,
  abort,
  compare,
  kill_all,
  read_outcome,
  saving,
  steps_on_disk,
)

KINDS = (
  "kill9",
  "sigterm",
  "sigint",
  "damaged",
  "bad_inputs",
  "two_process",
  "concurrent",
  "storage",
  "sweep_signals",
)
SCENARIO_MODULES = {  # kind -> the module with its TRIALS (Scenarios) and QUICK (their names)
  "concurrent": "tools.reliability.concurrent_writers",
  "storage": "tools.reliability.storage_failures",
  "sweep_signals": "tools.reliability.sweep_signals",
}
CONFIG = "experiments/mnist1d_mlp.py"
NUM_STEPS, CHECKPOINT_EVERY = 2000, 100
OVERRIDES = (
  f"num_steps={NUM_STEPS}",
  "log_every=50",
  "eval_every=50",
  f"checkpoint_every={CHECKPOINT_EVERY}",
  "keep_checkpoints=3",  # three steps on disk: two newest damaged still leave one to resume
)
QUICK_BAD_INPUTS = 6  # --quick: this many bad-input cases, spread over the list
# Each kind's RNG stream: the new kinds come after sigterm_startup, so older draws stay the same.
_KIND_IDS = {k: i for i, k in enumerate((*KINDS[:6], "sigterm_startup", *KINDS[6:]))}


class CampaignError(RuntimeError):
  """The campaign cannot judge anything (the reference run failed or is not reproducible)."""


def prepare(root: str, progress: Callable[[str], None] = print) -> dict[str, Any]:
  """The dataset file, the warmed compilation cache, the reference outcome and its timeline."""
  from research.config import load_config
  from research.data import load_dataset

  data = load_dataset(load_config(CONFIG).data)
  npz, examples = os.path.join(root, "mnist1d.npz"), os.path.join(root, "infer_input.npy")
  np.savez(npz, x=data.x_train, y=data.y_train, x_test=data.x_test, y_test=data.y_test)
  np.save(examples, data.x_test[:16])
  setup = TrialSetup(
    CONFIG,
    (*OVERRIDES, "data.name=npz", f"data.path={npz}"),
    NUM_STEPS,
    CHECKPOINT_EVERY,
    cache=os.path.join(root, "jax_cache"),
    infer_input=examples,
  )
  outcomes, timelines = [], []
  for name in ("reference_cold", "reference"):
    t = time.monotonic()
    workdir = os.path.join(root, name)
    timeline, rc, stderr = _timed_run(setup, workdir)
    if rc != 0:
      raise CampaignError(f"the reference run exited {rc}: {stderr[-1] if stderr else ''}")
    outcomes.append(read_outcome(workdir))
    if outcomes[-1].summary is None or outcomes[-1].error:
      raise CampaignError(f"the reference run left no summary or checkpoint in {workdir}")
    timelines.append(timeline)
    progress(f"{name:16s} done in {time.monotonic() - t:5.1f} s")
  differ = compare(outcomes[0], outcomes[1], NUM_STEPS)
  if differ or outcomes[1].error:
    raise CampaignError(f"two uninterrupted runs differ ({'; '.join(differ)}): nothing to compare")
  reference_dir = os.path.join(root, "reference")
  return {
    "setup": setup,
    "reference": outcomes[1],
    "reference_dir": reference_dir,
    "timeline": timelines[1],
  }


def _timed_run(setup: TrialSetup, workdir: str) -> tuple[trials_lib.Timeline, int | None, list]:
  """An uninterrupted run, watched: when startup ends, the first save begins, the run exits."""
  launch = Launch(setup.command(workdir), setup.env(setup.cache), workdir + "_log", None)
  first_write = first_save = None
  previous: set[str] = set()
  saves = 0
  while launch.poll() is None and time.monotonic() - launch.started < 600:
    now = time.monotonic() - launch.started
    if first_write is None and os.path.exists(os.path.join(workdir, "config.json")):
      first_write = now
    tmp = set(saving(workdir))
    saves += len(tmp - previous)
    previous = tmp
    if first_save is None and (tmp or steps_on_disk(workdir)):
      first_save = now
    time.sleep(0.002)
  rc = launch.wait(1)
  if rc is None:
    launch.kill()
  end = time.monotonic() - launch.started
  timeline = trials_lib.Timeline(first_write or end, first_save or end, end, saves)
  return timeline, rc, launch.stderr_lines()


def scenarios(kind: str, quick: bool) -> list[trials_lib.Scenario]:
  """The named trials of a scenario kind (concurrent, storage, sweep_signals); --quick's few."""
  module = importlib.import_module(SCENARIO_MODULES[kind])
  return [s for s in module.TRIALS if not quick or s.name in module.QUICK]


def plan(kinds: Sequence[str], trials: int, quick: bool) -> list[tuple[str, int, Any]]:
  """(kind, index, what) of every trial of the signal, damage and scenario kinds, in running
  order: `what` is the Damage or the Scenario."""
  jobs = []
  if "kill9" in kinds:
    jobs += [("kill9", i, None) for i in range(trials)]
  if "sigterm" in kinds:
    jobs += [("sigterm", i, None) for i in range(trials)]
    jobs += [("sigterm_startup", i, None) for i in range(max(1, trials // 4))]
  if "sigint" in kinds:
    jobs += [("sigint", i, None) for i in range(trials)]
  if "damaged" in kinds:
    chosen = [d for d in damage_lib.DAMAGES if not quick or d.name in damage_lib.QUICK]
    jobs += [("damaged", i, d) for i, d in enumerate(chosen)]
  for kind in SCENARIO_MODULES:
    if kind in kinds:
      jobs += [(kind, i, s) for i, s in enumerate(scenarios(kind, quick))]
  return jobs


def run_trials(
  prepared: dict[str, Any],
  jobs: Sequence[tuple[str, int, Any]],
  root: str,
  seed: int,
  workers: int,
  progress: Callable[[str], None] = print,
) -> list[TrialResult]:
  """Runs the jobs `workers` at a time, each pinned to a core of its own."""
  cores: queue.Queue = queue.Queue()
  for core in sorted(os.sched_getaffinity(0))[:workers]:
    cores.put(core)

  def one(kind: str, index: int, what: Any) -> TrialResult:
    core = cores.get()
    directory = os.path.join(root, f"{kind}_{index:02d}")
    os.makedirs(directory, exist_ok=True)
    ctx = trials_lib.Context(
      prepared["setup"],
      prepared["reference"],
      prepared["timeline"],
      directory,
      np.random.default_rng([seed, _KIND_IDS[kind], index]),
      core,
      prepared.get("reference_dir", ""),
      prepared.get("sweep"),
    )
    t = time.monotonic()
    try:
      if kind == "kill9":
        result = trials_lib.kill9_trial(ctx, index)
      elif kind == "damaged":
        result = damage_lib.damage_trial(ctx, index, what)
      elif isinstance(what, trials_lib.Scenario):
        result = what.run(ctx, index)
      else:
        result = trials_lib.signal_trial(ctx, index, kind)
    except Exception as e:  # a harness bug fails its trial, never the whole campaign
      why = [f"harness error: {_describe(e)}"]
      label = {"name": what.name} if isinstance(what, trials_lib.Scenario) else {}
      result = TrialResult(kind, index, False, time.monotonic() - t, why, label)
    finally:
      kill_all(directory + os.sep)
      cores.put(core)
    progress(progress_line(result, len([j for j in jobs if j[0] == kind])))
    return result

  pool = concurrent.futures.ThreadPoolExecutor(max(1, cores.qsize()))
  try:
    futures = [pool.submit(one, *job) for job in jobs]
    return [f.result() for f in futures]
  except BaseException:  # Ctrl-C: the trials' processes are in sessions of their own
    abort()
    raise
  finally:
    pool.shutdown(cancel_futures=True)


def progress_line(r: TrialResult, total: int) -> str:
  label = r.details.get("damage") or r.details.get("name") or ""
  verdict = "pass" if r.ok else "skip" if r.skipped else "FAIL"
  line = f"{r.kind:16s} {r.index + 1:3d}/{total:<3d} {verdict} {r.seconds:6.1f} s"
  line += f"  {label}" if label else ""
  reason = r.why[0] if r.why else r.skipped
  return line + (f"  ({reason})" if reason else "")


def run_bad_inputs(
  root: str, limit: int | None, workers: int, progress: Callable[[str], None] = print, module=None
) -> list[TrialResult]:
  """Every bad-input case through `bad_inputs.run_case`, `workers` at a time."""
  tmp = os.path.join(root, "bad_inputs")
  os.makedirs(tmp, exist_ok=True)
  try:
    if module is None:
      from tools.reliability import bad_inputs as module
    run = module.make_trained_run(os.path.join(root, "bad_inputs_run"))
  except Exception as e:  # no cases can run: one failed trial says why
    result = TrialResult("bad_inputs", 0, False, 0.0, [f"harness error: {_describe(e)}"])
    progress(progress_line(result, 1))
    return [result]
  cases = list(module.CASES)
  if limit is not None:
    cases = cases[:: max(1, len(cases) // limit)][:limit]

  def one(index: int, case: Any) -> TrialResult:
    try:
      r = module.run_case(case, tmp, run)
      details = {
        "name": r.name,
        "exit_code": r.exit_code,
        "stderr": list(r.stderr_lines)[-3:],
        "changed": r.changed,
      }
      why = [] if r.ok else [r.why or "failed"]
      result = TrialResult("bad_inputs", index, bool(r.ok), float(r.seconds), why, details)
    except Exception as e:
      why = [f"harness error: {_describe(e)}"]
      result = TrialResult("bad_inputs", index, False, 0.0, why, {"name": case.name})
    progress(progress_line(result, len(cases)))
    return result

  pool = concurrent.futures.ThreadPoolExecutor(workers)
  try:
    return list(pool.map(one, range(len(cases)), cases))
  finally:
    pool.shutdown(cancel_futures=True)  # Ctrl-C: no further case starts


def run_two_process(root: str, progress: Callable[[str], None] = print, module=None):
  """The two-process run on loopback, as `two_process.run_two_process_trial` judges it."""
  t = time.monotonic()
  directory = os.path.join(root, "two_process")
  os.makedirs(directory, exist_ok=True)
  try:
    if module is None:
      from tools.reliability import two_process as module
    d = dict(module.run_two_process_trial(directory))
    ok = bool(d.get("ok"))
    why = [] if ok else [str(d.get("why") or d.get("reason") or "failed")]
    result = TrialResult("two_process", 0, ok, time.monotonic() - t, why, d)
  except Exception as e:
    why = [f"harness error: {_describe(e)}"]
    result = TrialResult("two_process", 0, False, time.monotonic() - t, why)
  progress(progress_line(result, 1))
  return result


def _prepare_sweep(root: str, setup, workers: int, progress: Callable[[str], None]):
  from tools.reliability import sweep_runs

  cores = sorted(os.sched_getaffinity(0))[:workers]
  try:
    return sweep_runs.prepare_reference(root, setup, cores, progress)
  except RuntimeError as e:
    raise CampaignError(str(e)) from None


def _describe(e: BaseException) -> str:
  return f"{type(e).__name__}: {str(e)[:300]}"


def run_campaign(
  kinds: Sequence[str],
  trials: int,
  seed: int = 0,
  quick: bool = False,
  scratch: str | None = None,
  keep: bool = False,
  workers: int = 2,
  progress: Callable[[str], None] = print,
) -> tuple[list[TrialResult], dict[str, Any]]:
  """Every trial of `kinds` in a fresh campaign directory (under `scratch`), deleted at the end
  unless `keep`. Returns the trials' results and what the report says about the setup."""
  t0 = time.monotonic()
  if scratch:
    os.makedirs(scratch, exist_ok=True)
  root = tempfile.mkdtemp(prefix="fault_campaign_", dir=scratch)
  workers = max(1, min(workers, len(os.sched_getaffinity(0))))
  info: dict[str, Any] = {"seed": seed, "kinds": list(kinds), "trials": trials, "quick": quick}
  info["workers"] = workers
  results: list[TrialResult] = []
  try:
    jobs = plan(kinds, trials, quick)
    if jobs:
      prepared = prepare(root, progress)
      setup, reference = prepared["setup"], prepared["reference"]
      data = ["data.name=npz", "data.path=<campaign>/mnist1d.npz"]
      info["setup"] = {"config": setup.config, "overrides": [*OVERRIDES, *data]}
      info["timeline"] = prepared["timeline"].to_dict()
      info["reference"] = {
        k: reference.summary.get(k) for k in ("steps", "final_test_loss", "final_test_accuracy")
      }
      if any(getattr(what, "sweep", False) for _, _, what in jobs):
        prepared["sweep"] = _prepare_sweep(root, setup, workers, progress)
        info["sweep_reference"] = {
          "seconds": round(prepared["sweep"].seconds, 2),
          "final_test_loss": {
            run: o.summary.get("final_test_loss") for run, o in prepared["sweep"].outcomes.items()
          },
        }
      results += run_trials(prepared, jobs, root, seed, workers, progress)
    if "bad_inputs" in kinds:
      results += run_bad_inputs(root, QUICK_BAD_INPUTS if quick else None, workers, progress)
    if "two_process" in kinds:
      results.append(run_two_process(root, progress))
  finally:
    kill_all()
    info["wall_seconds"] = time.monotonic() - t0
    if keep:
      info["campaign_dir"] = root
    else:
      shutil.rmtree(root, ignore_errors=True)
  return results, info
