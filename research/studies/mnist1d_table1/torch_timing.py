"""The PyTorch reference's time per run, for the speed comparison under Table 1.

Either measured in this invocation, by running scripts/bench_torch_reference.py in processes of
its own, or read from an earlier results/speed_vs_torch.json. Kept apart from `torch_reference`
so that the reproduction itself imports without torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Sequence

from research.studies import StudyError


def time_torch_reference(
  models: Sequence[str], cores: Sequence[int], workdir: str, root: str
) -> dict[str, Any]:
  """One PyTorch run per model, each its own process pinned to one core, all cores busy at once.

  Two figures per run: its training loop alone (the script's own timing) and the whole run, the
  process's wall time from start to exit (imports, data generation, training, evaluation): the
  same things our wall time includes. The script is scripts/bench_torch_reference.py in the
  checkout `root`.
  """
  import concurrent.futures as cf

  from research.studies.mnist1d_table1.plan import torch_groups

  script = os.path.join(root, "scripts", "bench_torch_reference.py")

  def run(core: int, model: str) -> dict:
    out = os.path.join(workdir, f"torch_{model}.json")
    cmd = [
      "taskset",
      "-c",
      str(core),
      sys.executable,
      script,
      "--models",
      model,
      "--out",
      out,
      "--md",
      out[:-5] + ".md",
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
      last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
      raise StudyError(f"the PyTorch reference failed on {model}: {last}")
    with open(out) as f:
      return {**json.load(f)["results"][0], "whole_run_seconds": wall, "core": core}

  groups = torch_groups(models, cores)
  with cf.ThreadPoolExecutor(len(groups)) as pool:
    per_core = pool.map(lambda item: [run(item[0], m) for m in item[1]], groups.items())
    records = [r for group in per_core for r in group]
  return {
    "source": "this invocation",
    "per_run_seconds": {r["model"]: r["train_seconds"] for r in records},
    "whole_run_seconds": {r["model"]: r["whole_run_seconds"] for r in records},
    "records": records,
    "groups": {str(c): g for c, g in groups.items()},
  }


def stored_torch_reference(root: str) -> dict[str, Any] | None:
  """Per-run PyTorch medians from results/speed_vs_torch.json in the checkout `root`, measured at
  another time."""
  path = os.path.join(root, "results", "speed_vs_torch.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    stored = json.load(f)
  return {
    "source": "results/speed_vs_torch.json",
    "date": stored.get("provenance", stored.get("meta", {})).get("date", "earlier"),
    "per_run_seconds": {r["model"]: r["torch_median"] for r in stored["records"]},
  }
