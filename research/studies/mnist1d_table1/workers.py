"""Table 1's jobs, trained on the shared worker pool (`research/training/workers.py`: one pinned
process per core, one XLA thread, the table's XLA flags, a shared compilation cache), and each
finished job cached in the workdir at once, so an interrupted reproduction resumes with the jobs
it had finished.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Mapping, Sequence

from research.studies.mnist1d_table1.plan import Member

Job = tuple[str, tuple[Member, ...]]  # (model, its members trained side by side)


@functools.lru_cache(maxsize=None)
def _dataset(variant: str):
  """Generated once per worker process and variant."""
  from research.data.mnist1d import load_mnist1d

  return load_mnist1d(shuffle_seq=(variant == "shuffled"))


def train_job(
  model: str, members: tuple[Member, ...], num_steps: int, eval_every: int, root: str
) -> dict[str, Any]:
  """Some of one model's runs, side by side; `members` are (variant, seed) pairs; the model's
  config is experiments/mnist1d_<model>.py in the checkout `root`."""
  from research.config import load_config
  from research.training.multi_seed import train_side_by_side

  config = load_config(
    os.path.join(root, "experiments", f"mnist1d_{model}.py"),
    [
      f"num_steps={num_steps}",
      f"eval_every={eval_every}",
      f"log_every={eval_every}",
      f"checkpoint_every={eval_every}",
    ],
  )
  t = time.perf_counter()
  datasets = [_dataset(v) for v, _ in members]
  result = train_side_by_side(config, datasets, [s for _, s in members])
  result.pop("final_params")
  result["wall_seconds"] = time.perf_counter() - t
  result["members"] = [{"variant": v, "seed": s} for v, s in members]
  result["model_config"] = config.model.to_dict()
  result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
  return result


def compilation_cache_dir(workdir: str) -> str:
  """Where the workers share compiled programs; emptied for a fresh (timed) reproduction."""
  return os.path.join(workdir, "compilation_cache")


def cache_path(workdir: str, model: str, members: Sequence[Member]) -> str:
  """One file per job, named by its model and members."""
  return os.path.join(workdir, f"{model}_" + "_".join(f"{v}{s}" for v, s in members) + ".json")


def cached_result(
  workdir: str, model: str, members: Sequence[Member], key: Mapping[str, Any]
) -> dict[str, Any] | None:
  """The job's stored result, marked cached, when it was trained under the same `key`."""
  path = cache_path(workdir, model, members)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    cached = json.load(f)
  if cached.get("key") != key:
    return None
  return {**cached["result"], "cached": True}


def run_jobs(
  jobs: Sequence[Job],
  cores: Sequence[int],
  num_steps: int,
  eval_every: int,
  xla_flags: str,
  workdir: str,
  key: Mapping[str, Any],
  root: str,
) -> dict[Job, dict[str, Any]]:
  """Trains `jobs` (longest first) on one worker per core; results in the order they finished.

  Each finished job is written to its cache file under `workdir` with `key`, the settings a
  later invocation must match to reuse it. A progress bar counts the jobs.
  """
  from research.outputs import write_json
  from research.training.workers import run_jobs as run_on_workers

  def on_done(job: Job, result: dict[str, Any]) -> str:
    write_json(cache_path(workdir, *job), {"key": dict(key), "result": result})
    return f"{job[0]} x{len(job[1])} {result['wall_seconds']:.0f} s"

  return run_on_workers(
    train_job,
    [(job, (*job, num_steps, eval_every, root)) for job in jobs],
    cores,
    on_done,
    xla_flags,
    compilation_cache_dir(workdir),
  )
