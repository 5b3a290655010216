"""Table 1 of "Scaling Down Deep Learning with MNIST-1D" (Greydanus & Kobak, ICML 2024), reproduced.

Four models x {original, shuffled} x N seeds under the public reference protocol. A job trains
some of one model's runs (both variants, several seeds) side by side in one vmapped train chunk;
one worker process per core, each pinned, takes the next job when free, longest first, sharing a
compilation cache. Finished jobs are cached under the workdir and reused when their settings
match. The independent PyTorch implementation can be timed in the same invocation, for the speed
comparison.

  plan             how runs are cut into jobs and spread over cores
  workers          the worker processes, a job's training, the cache of finished jobs
  report           the table next to the paper's numbers, the notes, the PyTorch comparison
  torch_reference  the independent PyTorch implementation (the one module that needs torch)
  torch_timing     runs it pinned beside ours, or reads an earlier timing

`reproduce` is the entry point; `scripts/reproduce_mnist1d.py` parses flags into it. The modules
are imported inside functions here: every worker process and every timed PyTorch process imports
this package, and neither should pay for what it does not use.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

VARIANTS = ("original", "shuffled")


def reproduce(
  config: Any,
  workdir: str,
  out: str,
  workers: int,
  fresh: bool = False,
  torch_reference: bool = False,
  argv: Sequence[str] = (),
  root: str = ".",
) -> dict[str, Any]:
  """Trains the jobs the cache lacks, writes OUT.md and OUT.json atomically, returns the report.

  `config` is experiments/mnist1d_table1.py's, with num_steps a multiple of eval_every. Jobs run
  in `workers` processes on the first `workers` cores this process may use. `fresh` retrains
  every job and empties the compilation cache, so a timed reproduction compiles every program it
  runs. `torch_reference` then times one PyTorch run per model on those cores (needs torch and
  taskset); without it the comparison uses results/speed_vs_torch.json when there is one.
  `argv` is the command line recorded in the provenance. `root` is the checkout whose
  experiments/, scripts/ and results/ are read (the entry point passes its own; the installed
  package does not know where a checkout is).
  """
  import shutil
  import time

  from research.outputs import json_text, write_all
  from research.provenance import provenance
  from research.runtime import ONE_THREAD_FLAGS
  from research.studies.mnist1d_table1.plan import merge_jobs, plan_jobs
  from research.studies.mnist1d_table1.report import markdown, summarize
  from research.studies.mnist1d_table1.torch_timing import (
    stored_torch_reference,
    time_torch_reference,
  )
  from research.studies.mnist1d_table1.workers import cached_result, compilation_cache_dir, run_jobs

  if config.num_steps % config.eval_every:
    raise ValueError("num_steps must be a multiple of eval_every")
  cores = sorted(os.sched_getaffinity(0))
  if not 1 <= workers <= len(cores):
    raise ValueError(f"workers must be between 1 and the {len(cores)} core(s) this process may use")
  cores = cores[:workers]
  os.makedirs(workdir, exist_ok=True)
  if fresh:  # a timed reproduction compiles every program it runs
    shutil.rmtree(compilation_cache_dir(workdir), ignore_errors=True)
  key = {
    "num_steps": config.num_steps,
    "eval_every": config.eval_every,
    "xla_flags": config.xla_flags,
  }
  members = [(v, s) for v in VARIANTS for s in range(config.seeds)]
  jobs = plan_jobs(config.models, members, len(cores))
  done, todo = {}, []
  for job in jobs:
    cached = None if fresh else cached_result(workdir, *job, key)
    if cached is None:
      todo.append(job)
    else:
      done[job] = cached
  t = time.perf_counter()
  if todo:
    done.update(
      run_jobs(
        todo, cores, config.num_steps, config.eval_every, config.xla_flags, workdir, key, root
      )
    )
  wall = time.perf_counter() - t

  if torch_reference:
    print("timing the PyTorch reference, one run per model ...", flush=True)
    torch_ref = time_torch_reference(config.models, cores, workdir, root)
  else:
    torch_ref = stored_torch_reference(root)
  results = merge_jobs(done, config.models)
  rows = summarize(results, config.paper.to_dict(), config.models)
  meta = provenance(
    argv,
    workers=len(cores),
    wall_seconds=wall,
    retrained=[[m, [list(x) for x in ms]] for m, ms in todo],
    cached=[[m, [list(x) for x in ms]] for m, ms in jobs if (m, ms) not in todo],
  )
  report = {
    "provenance": meta,
    "settings": key,
    "rows": rows,
    "wall_seconds": wall,
    "worker_xla_flags": f"{config.xla_flags} {ONE_THREAD_FLAGS}".strip(),
    "torch_reference": torch_ref,
    "per_model": results,
  }
  write_all({out + ".json": json_text(report), out + ".md": markdown(report, root) + "\n"})
  return report


def format_summary(report: dict[str, Any], out: str) -> str:
  """The lines to print after a reproduction: each row against the paper, the time, PyTorch's."""
  lines = [
    f"{r['model']:9s} {r['variant']:9s} ours {r['final_mean']:5.1f} ± {r['final_sd']:3.1f}  "
    f"paper {r['paper_mean']:3.0f} ± {r['paper_sd']:.0f}  "
    f"{'within 2 sd' if r['within_2sd'] else 'OUTSIDE 2 sd'}"
    for r in report["rows"]
  ]
  meta, results, wall = report["provenance"], report["per_model"], report["wall_seconds"]
  n_runs = sum(len(r["members"]) for r in results.values())
  n_jobs = len(meta["retrained"]) + len(meta["cached"])
  lines.append(
    f"{n_runs} runs in {wall:.1f} s ({len(meta['retrained'])} of {n_jobs} jobs trained, "
    f"{meta['workers']} workers) -> {out}.md"
  )
  torch_ref = report["torch_reference"]
  if torch_ref and not meta["cached"]:
    sequential = sum(
      torch_ref["per_run_seconds"].get(m, 0.0) * len(r["members"]) for m, r in results.items()
    )
    line = (
      f"PyTorch, the same runs one after another ({torch_ref['source']}): {sequential:.0f} s "
      f"of training loops, {sequential / wall:.1f}x our time"
    )
    if torch_ref.get("whole_run_seconds"):
      whole = sum(
        torch_ref["whole_run_seconds"].get(m, 0.0) * len(r["members"]) for m, r in results.items()
      )
      line += f"; {whole:.0f} s as whole runs, {whole / wall:.1f}x"
    lines.append(line)
  return "\n".join(lines)
