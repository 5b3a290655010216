"""Table 1's jobs trained in worker processes, one per core, and each finished job cached.

Workers are spawned, not forked, so each starts JAX itself after its own settings: pinned to a
core no other worker has, one XLA thread, the table's XLA flags. They take the next job when free
(the list comes longest first) and share a compilation cache. A finished job is written to the
workdir at once, so an interrupted reproduction resumes with the jobs it had finished.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from research.studies.mnist1d_table1 import ROOT
from research.studies.mnist1d_table1.plan import Member

if TYPE_CHECKING:
  from multiprocessing.queues import Queue

Job = tuple[str, tuple[Member, ...]]  # (model, its members trained side by side)


@functools.lru_cache(maxsize=None)
def _dataset(variant: str):
  """Generated once per worker process and variant."""
  from research.data.mnist1d import load_mnist1d

  return load_mnist1d(shuffle_seq=(variant == "shuffled"))


def start_worker(free_cores: Queue, xla_flags: str, compilation_cache: str) -> None:
  """Pins this worker to a core no other worker has, before JAX starts in it.

  The workers share a compilation cache: jobs of one model run the same programs (init, train
  chunk, evaluation), which then compile once per invocation instead of once per job (init
  alone took about 2 s to compile per job).
  """
  os.sched_setaffinity(0, {free_cores.get()})
  if xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  from research.runtime import configure_threads

  configure_threads(1)
  import jax

  jax.config.update("jax_compilation_cache_dir", compilation_cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def train_job(
  model: str, members: tuple[Member, ...], num_steps: int, eval_every: int
) -> dict[str, Any]:
  """Some of one model's runs, side by side; `members` are (variant, seed) pairs."""
  from research.config import load_config
  from research.training.multi_seed import train_side_by_side

  config = load_config(
    f"{ROOT}/experiments/mnist1d_{model}.py",
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
) -> dict[Job, dict[str, Any]]:
  """Trains `jobs` (longest first) on one worker per core; results in the order they finished.

  Each finished job is written to its cache file under `workdir` with `key`, the settings a
  later invocation must match to reuse it. A progress bar counts the jobs.
  """
  import concurrent.futures as cf
  import multiprocessing as mp

  from tqdm.auto import tqdm

  from research.provenance import write_json

  done: dict[Job, dict[str, Any]] = {}
  if not jobs:
    return done
  ctx = mp.get_context("spawn")
  free_cores = ctx.Queue()
  for core in cores:
    free_cores.put(core)
  with (
    cf.ProcessPoolExecutor(
      len(cores),
      mp_context=ctx,
      initializer=start_worker,
      initargs=(free_cores, xla_flags, compilation_cache_dir(workdir)),
    ) as pool,
    tqdm(total=len(jobs), desc="jobs", unit="job") as bar,
  ):
    futures = {
      pool.submit(train_job, model, job_members, num_steps, eval_every): (model, job_members)
      for model, job_members in jobs
    }  # submitted in list order
    for future in cf.as_completed(futures):
      job = futures[future]
      done[job] = future.result()
      write_json(cache_path(workdir, *job), {"key": dict(key), "result": done[job]})
      bar.update(1)
      bar.set_postfix_str(f"{job[0]} x{len(job[1])} {done[job]['wall_seconds']:.0f} s")
  return done
