"""How Table 1's runs are cut into jobs and spread over cores.

A job is a slice of one model's runs (both variants, several seeds) trained side by side under
`vmap`; a model is cut into several jobs only when one job would take more than half a worker's
share. Workers take the longest remaining job when free.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from research.training.workers import slice_count, split

# Seconds one member takes for 6000 steps on one core (train and compile; measured on an AMD EPYC
# core under the table's XLA flags). Only the ratios matter: they size and order the jobs.
EXPECTED_SECONDS = {"logistic": 0.15, "mlp": 1.0, "cnn": 3.2, "gru": 6.0}
# PyTorch reference seconds per run (an earlier results/speed_vs_torch.md), to spread its runs
# over cores. Only the ratios matter; the GRU dominates in every measurement so far.
TORCH_EXPECTED_SECONDS = {"logistic": 1.0, "mlp": 2.7, "cnn": 9.4, "gru": 62.7}

Member = tuple[str, int]  # (variant, seed)


def plan_jobs(
  models: Sequence[str], members: Sequence[Member], workers: int
) -> list[tuple[str, tuple[Member, ...]]]:
  """(model, members) jobs, longest first, for workers that each take the next job when free.

  A model's members train side by side in one job (one compilation) unless that job would be
  longer than half of one worker's share of the whole work; such a model is cut into the
  fewest equal slices under that size, so the longest-first list has pieces small enough to
  even out the cores' finishing times.
  """
  if workers < 1 or not members:
    raise ValueError(f"need workers >= 1 and at least one member, got {workers}, {len(members)}")
  work = {m: EXPECTED_SECONDS.get(m, 1.0) * len(members) for m in models}
  total = sum(work.values())
  jobs = []
  for m in models:
    slices = slice_count(work[m], total, workers, pieces_per_worker=2)
    jobs += [(m, tuple(map(tuple, part))) for part in split(members, slices)]
  return sorted(jobs, key=lambda j: -EXPECTED_SECONDS.get(j[0], 1.0) * len(j[1]))


def torch_groups(models: Sequence[str], cores: Sequence[int]) -> dict[int, list[str]]:
  """The PyTorch reference's models spread over cores, longest first onto the least loaded."""
  load = {c: 0.0 for c in cores}
  groups: dict[int, list[str]] = {c: [] for c in cores}
  for m in sorted(models, key=lambda m: -TORCH_EXPECTED_SECONDS.get(m, 1.0)):
    core = min(load, key=load.get)
    load[core] += TORCH_EXPECTED_SECONDS.get(m, 1.0)
    groups[core].append(m)
  return {c: g for c, g in groups.items() if g}


def merge_jobs(done: Mapping[tuple[str, tuple], dict], models: Sequence[str]) -> dict[str, dict]:
  """Per model: its jobs' members in (variant, seed) order, their accuracies, summed seconds."""
  out = {}
  for model in models:
    parts = sorted(
      (r for (m, _), r in done.items() if m == model),
      key=lambda r: [(mm["variant"], mm["seed"]) for mm in r["members"]],
    )
    if not parts:
      raise ValueError(f"no finished job for model {model!r}")
    merged = {
      k: [x for p in parts for x in p[k]]
      for k in (
        "members",
        "final_test_accuracy",
        "final_test_loss",
        "best_test_accuracy",
        "best_step",
      )
    }
    order = sorted(
      range(len(merged["members"])),
      key=lambda i: (merged["members"][i]["variant"], merged["members"][i]["seed"]),
    )
    merged = {k: [v[i] for i in order] for k, v in merged.items()}
    for k in ("train_seconds", "compile_seconds", "eval_seconds", "wall_seconds"):
      merged[k] = sum(p[k] for p in parts)
    merged["jobs"] = len(parts)
    merged["cached"] = all(p.get("cached") for p in parts)
    merged["params"] = parts[0]["params"]
    out[model] = merged
  return out
