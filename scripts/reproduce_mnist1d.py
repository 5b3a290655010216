"""Reproduce Table 1 of the MNIST-1D paper: four models x {original, shuffled} x N seeds.

  python scripts/reproduce_mnist1d.py                     # 24 runs -> results/mnist1d_table.{md,json}
  python scripts/reproduce_mnist1d.py --config.seeds=5 --out runs/table_5seeds

Each (model, variant) trains its seeds side by side (one vmapped train chunk); these eight jobs
spread over the CPU cores, longest first (one process per core, each pinned). Finished jobs are
cached under --workdir and reused when their settings match; --fresh retrains.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = ("original", "shuffled")


@functools.lru_cache(maxsize=None)
def _dataset(variant: str):
  """Generated once per worker process and variant (generation takes seconds)."""
  from research.data.mnist1d import load_mnist1d
  return load_mnist1d(shuffle_seq=(variant == "shuffled"))


def train_job(model: str, variant: str, seeds: int, num_steps: int, eval_every: int,
              core: int | None) -> dict:
  """One model on one variant, all seeds; runs in a worker process pinned to `core`."""
  if core is not None:
    os.sched_setaffinity(0, {core})
  from research.runtime import configure_threads
  configure_threads(1)
  from research.config import load_config
  from research.multi_seed import train_side_by_side
  config = load_config(f"{ROOT}/experiments/mnist1d_{model}.py",
                       [f"num_steps={num_steps}", f"eval_every={eval_every}",
                        f"log_every={eval_every}", f"checkpoint_every={eval_every}"])
  data = _dataset(variant)
  members = [(variant, s) for s in range(seeds)]
  t = time.perf_counter()
  result = train_side_by_side(config, [data] * seeds, [s for _, s in members])
  result.pop("final_params")
  result["wall_seconds"] = time.perf_counter() - t
  result["members"] = [{"variant": v, "seed": s} for v, s in members]
  result["model_config"] = config.model.to_dict()
  return result


def main() -> int:
  from research.cli import parse_with_overrides
  from research.config import load_config
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="experiments/mnist1d_table1.py")
  p.add_argument("--workdir", default="runs/mnist1d_table1", help="cache of finished models")
  p.add_argument("--out", default="results/mnist1d_table", help="writes OUT.md and OUT.json")
  p.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))),
                 help="processes, one per core (default: up to 2)")
  p.add_argument("--fresh", action="store_true", help="retrain even when a cached result matches")
  args, overrides = parse_with_overrides(p)
  config = load_config(args.config, overrides)
  if config.num_steps % config.eval_every:
    p.error("num_steps must be a multiple of eval_every")

  import concurrent.futures as cf
  import multiprocessing as mp
  from tqdm.auto import tqdm

  from research.reproduce import assign_cores, markdown, merge_jobs, summarize
  from research.report import provenance, write_json

  os.makedirs(args.workdir, exist_ok=True)
  key = {"seeds": config.seeds, "num_steps": config.num_steps, "eval_every": config.eval_every}
  jobs = [(m, v) for m in config.models for v in VARIANTS]
  done, todo = {}, []
  for job in jobs:
    path = os.path.join(args.workdir, f"{job[0]}_{job[1]}.json")
    if not args.fresh and os.path.isfile(path):
      with open(path) as f:
        cached = json.load(f)
      if cached.get("key") == key:
        done[job] = {**cached["result"], "cached": True}
        continue
    todo.append(job)
  cores = sorted(os.sched_getaffinity(0))[:max(1, args.workers)]
  t = time.perf_counter()
  with cf.ProcessPoolExecutor(len(cores), mp_context=mp.get_context("spawn")) as pool, \
       tqdm(total=len(todo), desc="jobs", unit="job") as bar:
    futures = {pool.submit(train_job, *job, config.seeds, config.num_steps, config.eval_every,
                           core if len(cores) > 1 else None): job
               for job, core in assign_cores(todo, cores).items()}
    for future in cf.as_completed(futures):
      job = futures[future]
      done[job] = future.result()
      write_json(os.path.join(args.workdir, f"{job[0]}_{job[1]}.json"),
                 {"key": key, "result": done[job]})
      bar.update(1)
      bar.set_postfix_str(f"{job[0]} {job[1]} {done[job]['wall_seconds']:.0f} s")
  wall = time.perf_counter() - t

  results = merge_jobs(done, config.models, VARIANTS)
  rows = summarize(results, config.paper.to_dict(), config.models)
  torch_path = os.path.join(ROOT, "results", "speed_vs_torch.json")
  torch = json.load(open(torch_path)) if os.path.isfile(torch_path) else None
  meta = provenance(sys.argv, workers=len(cores), wall_seconds=wall,
                    retrained=[list(j) for j in todo],
                    cached=[list(j) for j in jobs if j not in todo])
  report = {"provenance": meta, "settings": key, "rows": rows, "wall_seconds": wall,
            "per_model": {m: {k: v for k, v in r.items()} for m, r in results.items()}}
  write_json(args.out + ".json", report)
  with open(args.out + ".md.tmp", "w") as f:
    f.write(markdown(report, torch) + "\n")
  os.replace(args.out + ".md.tmp", args.out + ".md")
  for r in rows:
    print(f"{r['model']:9s} {r['variant']:9s} ours {r['final_mean']:5.1f} ± {r['final_sd']:3.1f}  "
          f"paper {r['paper_mean']:3.0f} ± {r['paper_sd']:.0f}  "
          f"{'within 2 sd' if r['within_2sd'] else 'OUTSIDE 2 sd'}")
  print(f"{len(rows) * config.seeds} runs in {wall:.1f} s ({len(todo)} jobs trained, "
        f"{len(cores)} workers) -> {args.out}.md")
  return 0


if __name__ == "__main__":
  from research.cli import run_main
  run_main(main)
