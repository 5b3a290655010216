"""Sweeps: a grid of runs, each its own run directory, trained side by side where they can be.

`--sweep optimizer.learning_rate=1e-3,3e-3 --sweep seed=0,1` expands into every combination; run
`<workdir>/learning_rate=1e-3_seed=0` gets the config with those overrides, its own checkpoints,
events and summary, so TensorBoard and `compare_runs.py` see each. Runs that differ only in
`config.SIDE_BY_SIDE` fields (seed, learning rate, weight decay, clipping norm) and stand at the
same step train as one vmapped program (`loop.train_runs`); the groups are cut into as many
slices as there are workers and spread over pinned worker processes, one per core
(`research/training/workers.py`). A finished run (its summary.json written) is skipped on re-run;
an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Any, Sequence

from research import config as config_lib
from research import workdir as workdir_lib

SWEEP_FILE = "sweep.json"
TABLE = "sweep"  # <workdir>/sweep.md and sweep.csv


class SweepError(config_lib.ConfigError):
  """A sweep that cannot run as asked; the message names the flag or run and the fix."""


@dataclasses.dataclass(frozen=True)
class SweepRun:
  name: str  # its directory under the sweep's workdir
  values: dict[str, str]  # the swept fields, as given on the command line
  overrides: tuple[str, ...]  # every override: the sweep's common ones, then the swept values


def parse_sweep(flags: Sequence[str]) -> dict[str, list[str]]:
  """`["a.b=1,2", "seed=0,1"]` -> {"a.b": ["1", "2"], "seed": ["0", "1"]}, in flag order."""
  axes: dict[str, list[str]] = {}
  for flag in flags:
    key, sep, raw = flag.partition("=")
    values = [v.strip() for v in raw.split(",")]
    if not sep or not key or not all(values):
      raise SweepError(f"--sweep {flag!r} is not of the form key=value1,value2,...")
    if key in axes:
      raise SweepError(f"--sweep names {key!r} twice; give all its values in one flag")
    if len(set(values)) != len(values):
      raise SweepError(f"--sweep {flag!r} repeats a value")
    axes[key] = values
  if not axes:
    raise SweepError("no --sweep given; e.g. --sweep optimizer.learning_rate=1e-3,3e-3")
  return axes


def expand(axes: dict[str, list[str]], common: Sequence[str] = ()) -> list[SweepRun]:
  """Every combination of the axes' values, named by its values (short names where unique)."""
  leaves = [k.rsplit(".", 1)[-1] for k in axes]
  labels = [leaf if leaves.count(leaf) == 1 else key for leaf, key in zip(leaves, axes)]
  runs = []
  for combo in itertools.product(*axes.values()):
    values = dict(zip(axes, combo))
    name = "_".join(f"{label}={v}" for label, v in zip(labels, combo))
    if "/" in name or name.startswith("."):
      raise SweepError(f"sweep values make the run name {name!r}, not a directory name")
    runs.append(SweepRun(name, values, (*common, *(f"{k}={v}" for k, v in values.items()))))
  return runs


def load_runs(spec: str, runs: Sequence[SweepRun]) -> list[Any]:
  """Every run's config, checked before anything trains (a bad value names its run)."""
  configs = []
  for run in runs:
    try:
      configs.append(config_lib.load_config(spec, run.overrides))
    except config_lib.ConfigError as e:
      raise SweepError(f"run {run.name}: {e}") from None
  return configs


def is_finished(workdir: str) -> bool:
  """A run whose summary says it finished (or diverged, which re-running would repeat)."""
  try:
    return workdir_lib.read_summary(workdir).get("status", "finished") in ("finished", "diverged")
  except workdir_lib.WorkdirError:
    return False


def plan_jobs(
  configs: Sequence[Any], workdirs: Sequence[str], workers: int
) -> list[tuple[str, list[int]]]:
  """Unfinished runs grouped (same side-by-side key, same checkpointed step), each group cut
  into slices for `workers` processes; (job name, run indices), largest first."""
  groups: dict[tuple, list[int]] = {}
  for i, (c, w) in enumerate(zip(configs, workdirs)):
    if is_finished(w):
      continue
    alone = c.get("num_devices", 1) != 1  # data parallel over devices: trained one by one
    key = (
      config_lib.side_by_side_key(c),
      workdir_lib.latest_checkpoint_step(w),
      i if alone else None,
    )
    groups.setdefault(key, []).append(i)
  from research.training.workers import slice_count, split

  total = sum(len(g) for g in groups.values())
  jobs = []
  for members in groups.values():
    for part in split(members, slice_count(len(members), total, workers, pieces_per_worker=1)):
      jobs.append((f"{len(part)} runs from {os.path.basename(workdirs[part[0]])}", part))
  return sorted(jobs, key=lambda j: -len(j[1]))


def train_group_job(spec: str, overrides: list[tuple[str, ...]], workdirs: list[str]) -> dict:
  """In a worker: the runs side by side; a diverged run stops alone and says so. Stopped by a
  signal, every run of the group is checkpointed (the parent counts them)."""
  from research.training.loop import train_runs
  from research.training.preemption import Interrupted

  configs = [config_lib.load_config(spec, o) for o in overrides]
  t = time.perf_counter()
  try:
    summaries = train_runs(configs, workdirs, progress=False, keep_going=True)
  except Interrupted as e:
    e.runs = len(workdirs)
    raise
  return {"summaries": summaries, "wall_seconds": time.perf_counter() - t}


def train_one_by_one_job(spec: str, overrides: list[tuple[str, ...]], workdirs: list[str]) -> dict:
  """In a worker: the same runs one after another, each alone (the sweep's timing baseline)."""
  from research.training.loop import train_runs

  t = time.perf_counter()
  summaries = [
    train_runs([config_lib.load_config(spec, o)], [w], progress=False, keep_going=True)[0]
    for o, w in zip(overrides, workdirs)
  ]
  return {"summaries": summaries, "wall_seconds": time.perf_counter() - t}


@dataclasses.dataclass(frozen=True)
class _Sweep:
  """A checked sweep: its runs, their configs and run directories, the cores it may use."""

  spec: str
  runs: list[SweepRun]
  configs: list[Any]
  workdir: str
  workdirs: list[str]
  cores: list[int]

  def job_args(self, indices: Sequence[int], dirs: Sequence[str]) -> tuple:
    return (self.spec, [self.runs[i].overrides for i in indices], [dirs[i] for i in indices])


def run_sweep(
  spec: str,
  common: Sequence[str],
  sweep_flags: Sequence[str],
  workdir: str,
  workers: int = 0,
  one_by_one: bool = False,
  out: str = "",
  argv: Sequence[str] = (),
) -> dict[str, Any]:
  """Trains the grid's unfinished runs, writes `<workdir>/sweep.{md,csv}` (and OUT.md/.json).

  `workers` 0 uses every core this process may use. `one_by_one` then trains the same runs
  again one after another, each alone, on one core (under `<workdir>/one_by_one/`), and reports
  both wall times: it needs a fresh workdir, and starts both from empty compilation caches.
  """
  runs = expand(parse_sweep(sweep_flags), common)
  return run_grid(spec, runs, workdir, workers, one_by_one, out, argv, common, sweep_flags)


def run_grid(
  spec: str,
  runs: Sequence[SweepRun],
  workdir: str,
  workers: int = 0,
  one_by_one: bool = False,
  out: str = "",
  argv: Sequence[str] = (),
  common: Sequence[str] = (),
  sweep_flags: Sequence[str] = (),
) -> dict[str, Any]:
  """`run_sweep` for runs listed one by one rather than a product of axes (the scaling study's
  sizes x budgets, where a size sets several fields at once)."""
  from research import workdir_lock

  if not runs:
    raise SweepError("the grid has no runs; give at least one")
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise SweepError(f"two runs of the grid share a name: {sorted(names)}; name each once")
  sweep = _check_sweep(spec, list(runs), workdir, workers, one_by_one, out)
  with workdir_lock.hold([sweep.workdir]):  # one sweep per directory: a second is refused
    return _run_checked(sweep, common, sweep_flags, one_by_one, out, argv)


def _run_checked(
  sweep: _Sweep,
  common: Sequence[str],
  sweep_flags: Sequence[str],
  one_by_one: bool,
  out: str,
  argv: Sequence[str],
) -> dict[str, Any]:
  import shutil

  from research.outputs import write_json
  from research.provenance import provenance

  spec = sweep.spec
  os.makedirs(sweep.workdir, exist_ok=True)
  write_json(
    os.path.join(sweep.workdir, SWEEP_FILE),
    {
      "config": spec,
      "overrides": list(common),
      "sweep": list(sweep_flags),
      "runs": {r.name: list(r.overrides) for r in sweep.runs},
    },
  )
  caches = {
    k: os.path.join(sweep.workdir, f".compilation_cache_{k}") for k in ("sweep", "one_by_one")
  }
  if one_by_one:
    for cache in caches.values():
      shutil.rmtree(cache, ignore_errors=True)
  jobs = plan_jobs(sweep.configs, sweep.workdirs, len(sweep.cores))
  timing = _train_grid(sweep, jobs, caches["sweep"])
  summaries = [workdir_lib.read_summary(w) for w in sweep.workdirs]
  if one_by_one:
    timing.update(_train_one_by_one(sweep, summaries, caches["one_by_one"], timing["wall_seconds"]))
  report = {
    "provenance": provenance(argv, jax_device=False, workers=timing["workers"]),
    "config": spec,
    "swept": list(sweep.runs[0].values),
    "runs": [
      {"name": r.name, "values": r.values, "summary": s} for r, s in zip(sweep.runs, summaries)
    ],
    "timing": timing if len(jobs) else None,
  }
  _write_tables(report, sweep.workdir, out)
  return report


def _check_sweep(
  spec: str,
  runs: list[SweepRun],
  workdir: str,
  workers: int,
  one_by_one: bool,
  out: str,
) -> _Sweep:
  """Every check a sweep can fail, before anything is written or trained."""
  from research.outputs import check_output_dir, check_output_prefix

  configs = load_runs(spec, runs)
  workdir = os.path.abspath(workdir)
  workdirs = [os.path.join(workdir, r.name) for r in runs]
  for run, c, w in zip(runs, configs, workdirs):
    try:
      workdir_lib.check_config(w, c)
    except workdir_lib.WorkdirError as e:
      raise SweepError(f"run {run.name}: {e}") from None
  check_output_dir(workdir, "--workdir")
  if out:
    check_output_prefix(out, "--out", (".md", ".csv", ".json"), runs=[workdir, *workdirs])
  cores = sorted(os.sched_getaffinity(0))
  if not 0 <= workers <= len(cores):
    raise SweepError(f"--workers must be between 1 and the {len(cores)} core(s) available")
  if one_by_one and any(os.path.exists(w) for w in workdirs):
    raise SweepError(
      f"--one-by-one times the whole sweep against the same runs trained one after another, "
      f"so it needs a fresh --workdir; {workdir} already holds runs"
    )
  return _Sweep(spec, runs, configs, workdir, workdirs, cores[: workers or len(cores)])


def _train_grid(sweep: _Sweep, jobs: list[tuple[str, list[int]]], cache: str) -> dict[str, Any]:
  """The unfinished runs, group by group, on one worker per core; the sweep's timing."""
  from research.training.workers import run_jobs

  cores = sweep.cores
  skipped = len(sweep.runs) - sum(len(ix) for _, ix in jobs)
  print(
    f"{len(sweep.runs)} runs: {skipped} finished, {len(sweep.runs) - skipped} to train in "
    f"{len(jobs)} job(s) ({', '.join(str(len(ix)) for _, ix in jobs) or 'none'} side by side) "
    f"on {min(len(cores), len(jobs))} core(s)",
    flush=True,
  )
  t = time.perf_counter()
  run_jobs(
    train_group_job,
    [(name, sweep.job_args(ix, sweep.workdirs)) for name, ix in jobs],
    cores[: len(jobs)],
    lambda name, r: f"{name}: {r['wall_seconds']:.0f} s",
    compilation_cache=cache,
    desc="sweep",
  )
  return {
    "wall_seconds": time.perf_counter() - t,
    "workers": min(len(cores), len(jobs)),
    "jobs": [len(ix) for _, ix in jobs],
  }


def _train_one_by_one(
  sweep: _Sweep, summaries: list[dict], cache: str, wall_seconds: float
) -> dict[str, Any]:
  """The same runs again, one after another on one core: the timing baseline of `--one-by-one`."""
  from research.training.sweep_table import agreement
  from research.training.workers import run_jobs

  alone_dirs = [os.path.join(sweep.workdir, "one_by_one", r.name) for r in sweep.runs]
  t = time.perf_counter()
  alone = run_jobs(
    train_one_by_one_job,
    [("one by one", sweep.job_args(range(len(sweep.runs)), alone_dirs))],
    sweep.cores[:1],
    compilation_cache=cache,
    desc="one by one",
  )["one by one"]
  timing = {"one_by_one_wall_seconds": time.perf_counter() - t}
  timing["speedup"] = timing["one_by_one_wall_seconds"] / wall_seconds
  timing["agreement"] = agreement(summaries, alone["summaries"])
  for key in ("train_seconds", "compile_seconds", "eval_seconds"):
    # A group's seconds are in each member's summary: count them once per group.
    timing[f"side_by_side_{key}"] = sum(s[key] / s["trained_side_by_side"] for s in summaries)
    timing[f"one_by_one_{key}"] = sum(s[key] for s in alone["summaries"])
  return timing


def _write_tables(report: dict[str, Any], workdir: str, out: str) -> None:
  """`<workdir>/sweep.{md,csv}`, and with `out` the same tables and the report as JSON; a signal
  meanwhile waits until all are written."""
  from research.outputs import write_json, write_text
  from research.training import preemption
  from research.training.sweep_table import csv_table, markdown

  text = markdown(report)
  with preemption.whole("after the sweep's runs had finished, once its tables were written"):
    write_text(os.path.join(workdir, TABLE + ".md"), text)
    write_text(os.path.join(workdir, TABLE + ".csv"), csv_table(report))
    if out:
      write_text(out + ".md", text)
      write_text(out + ".csv", csv_table(report))
      write_json(out + ".json", report)
