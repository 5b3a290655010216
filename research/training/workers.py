"""Jobs spread over worker processes, one per core, each pinned: the runner shared by sweeps and
the Table 1 reproduction.

Workers are spawned, not forked, so each starts JAX itself after its own settings: pinned to a
core no other worker has, one XLA thread, the caller's XLA flags, and a compilation cache shared
by all of them (jobs of one kind run the same programs, which then compile once per invocation).
A worker takes the next job when free; give the list longest first. Each finished job is handed
to `on_done` at once, so a caller can write it down and an interrupted invocation resumes.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence

if TYPE_CHECKING:
  from multiprocessing.queues import Queue


def start_worker(free_cores: Queue, xla_flags: str, compilation_cache: str) -> None:
  """Pins this worker to a core no other worker has, before JAX starts in it."""
  os.sched_setaffinity(0, {free_cores.get()})
  if xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  from research.runtime import configure_threads

  configure_threads(1)
  import jax

  if compilation_cache:
    jax.config.update("jax_compilation_cache_dir", compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_jobs(
  fn: Callable[..., Any],
  jobs: Sequence[tuple[Hashable, tuple]],
  cores: Sequence[int],
  on_done: Callable[[Hashable, Any], str] | None = None,
  xla_flags: str = "",
  compilation_cache: str = "",
  desc: str = "jobs",
) -> dict[Hashable, Any]:
  """Calls `fn(*args)` for each `(name, args)` of `jobs` on one worker per core.

  `fn` must be importable by name (a module-level function). Results come back keyed by job
  name, in the order they finished; `on_done(name, result)` runs in this process as each one
  finishes and returns the progress bar's note. An exception in a job propagates.
  """
  import concurrent.futures as cf
  import multiprocessing as mp

  from tqdm.auto import tqdm

  done: dict[Hashable, Any] = {}
  if not jobs:
    return done
  if not cores:
    raise ValueError("no cores to run jobs on")
  ctx = mp.get_context("spawn")
  free_cores = ctx.Queue()
  for core in cores:
    free_cores.put(core)
  with (
    cf.ProcessPoolExecutor(
      len(cores),
      mp_context=ctx,
      initializer=start_worker,
      initargs=(free_cores, xla_flags, compilation_cache),
    ) as pool,
    tqdm(total=len(jobs), desc=desc, unit="job") as bar,
  ):
    futures = {pool.submit(fn, *args): name for name, args in jobs}  # submitted in list order
    for future in cf.as_completed(futures):
      name = futures[future]
      done[name] = future.result()
      note = on_done(name, done[name]) if on_done else ""
      bar.update(1)
      if note:
        bar.set_postfix_str(note)
  return done


def slice_count(work: float, total: float, workers: int, pieces_per_worker: int) -> int:
  """Into how many slices one group's `work` is cut, so that no slice exceeds a worker's share
  of `total` divided by `pieces_per_worker` (more pieces even out the cores' finishing times;
  fewer keep more runs side by side, which is cheaper per run)."""
  if workers <= 1:
    return 1
  cap = total / (pieces_per_worker * workers)
  return max(1, math.ceil(work / cap - 1e-9))


def split(items: Sequence, parts: int) -> list[list]:
  """`items` in `parts` contiguous slices whose lengths differ by at most one."""
  parts = max(1, min(parts, len(items)))
  q, r = divmod(len(items), parts)
  bounds = [0]
  for i in range(parts):
    bounds.append(bounds[-1] + q + (i < r))
  return [list(items[a:b]) for a, b in zip(bounds, bounds[1:])]
