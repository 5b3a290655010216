"""Reproduce Table 1 of the MNIST-1D paper: four models x {original, shuffled} x N seeds.

  python scripts/reproduce_mnist1d.py                     # 24 runs -> results/mnist1d_table.{md,json}
  python scripts/reproduce_mnist1d.py --fresh --torch-reference   # retrain all, time PyTorch too
  python scripts/reproduce_mnist1d.py --config.seeds=5 --out runs/table_5seeds

A job trains some of one model's runs (both variants, several seeds) side by side in one vmapped
train chunk; one worker process per core, each pinned, takes the next job when free, longest
first, sharing a compilation cache. Finished jobs are cached under --workdir and reused when their
settings match; --fresh retrains and empties the compilation cache. --torch-reference then times one run per model of the independent PyTorch
implementation in the same invocation, for the speed comparison.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = ("original", "shuffled")


@functools.lru_cache(maxsize=None)
def _dataset(variant: str):
  """Generated once per worker process and variant."""
  from research.data.mnist1d import load_mnist1d
  return load_mnist1d(shuffle_seq=(variant == "shuffled"))


def _start_worker(cores, xla_flags: str, compilation_cache: str) -> None:
  """Pins this worker to a core no other worker has, before JAX starts in it.

  The workers share a compilation cache: jobs of one model run the same programs (init, train
  chunk, evaluation), which then compile once per invocation instead of once per job (init
  alone took about 2 s to compile per job).
  """
  os.sched_setaffinity(0, {cores.get()})
  if xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  from research.runtime import configure_threads
  configure_threads(1)
  import jax
  jax.config.update("jax_compilation_cache_dir", compilation_cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def train_job(model: str, members: tuple, num_steps: int, eval_every: int) -> dict:
  """Some of one model's runs, side by side; `members` are (variant, seed) pairs."""
  from research.config import load_config
  from research.multi_seed import train_side_by_side
  config = load_config(f"{ROOT}/experiments/mnist1d_{model}.py",
                       [f"num_steps={num_steps}", f"eval_every={eval_every}",
                        f"log_every={eval_every}", f"checkpoint_every={eval_every}"])
  t = time.perf_counter()
  datasets = [_dataset(v) for v, _ in members]
  result = train_side_by_side(config, datasets, [s for _, s in members])
  result.pop("final_params")
  result["wall_seconds"] = time.perf_counter() - t
  result["members"] = [{"variant": v, "seed": s} for v, s in members]
  result["model_config"] = config.model.to_dict()
  result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
  return result


def time_torch_reference(models, cores, workdir: str) -> dict:
  """One PyTorch run per model, each its own process pinned to one core, all cores busy at once.

  Two figures per run: its training loop alone (the script's own timing) and the whole run, the
  process's wall time from start to exit (imports, data generation, training, evaluation): the
  same things our wall time includes.
  """
  import concurrent.futures as cf
  from research.reproduce import torch_groups
  script = os.path.join(ROOT, "scripts", "bench_torch_reference.py")

  def run(core: int, model: str) -> dict:
    out = os.path.join(workdir, f"torch_{model}.json")
    cmd = ["taskset", "-c", str(core), sys.executable, script, "--models", model,
           "--out", out, "--md", out[:-5] + ".md"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
      raise RuntimeError(f"the PyTorch reference failed on {model}: "
                         f"{proc.stderr.strip().splitlines()[-1:]}")
    with open(out) as f:
      return {**json.load(f)["results"][0], "whole_run_seconds": wall, "core": core}

  groups = torch_groups(models, cores)
  with cf.ThreadPoolExecutor(len(groups)) as pool:
    per_core = pool.map(lambda item: [run(item[0], m) for m in item[1]], groups.items())
    records = [r for group in per_core for r in group]
  return {"source": "this invocation",
          "per_run_seconds": {r["model"]: r["train_seconds"] for r in records},
          "whole_run_seconds": {r["model"]: r["whole_run_seconds"] for r in records},
          "records": records, "groups": {str(c): g for c, g in groups.items()}}


def stored_torch_reference() -> dict | None:
  """Per-run PyTorch medians from results/speed_vs_torch.json, measured at another time."""
  path = os.path.join(ROOT, "results", "speed_vs_torch.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    stored = json.load(f)
  return {"source": "results/speed_vs_torch.json",
          "date": stored.get("provenance", stored.get("meta", {})).get("date", "earlier"),
          "per_run_seconds": {r["model"]: r["torch_median"] for r in stored["records"]}}


def main() -> int:
  from research.cli import parse_with_overrides
  from research.config import load_config
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="experiments/mnist1d_table1.py")
  p.add_argument("--workdir", default="runs/mnist1d_table1", help="cache of finished jobs")
  p.add_argument("--out", default="results/mnist1d_table", help="writes OUT.md and OUT.json")
  p.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))),
                 help="processes, one per core (default: up to 2)")
  p.add_argument("--fresh", action="store_true", help="retrain even when a cached result matches")
  p.add_argument("--torch-reference", action="store_true",
                 help="also time one PyTorch run per model here (needs pip install -e '.[reference]')")
  args, overrides = parse_with_overrides(p)
  config = load_config(args.config, overrides)
  if config.num_steps % config.eval_every:
    p.error("num_steps must be a multiple of eval_every")
  cores = sorted(os.sched_getaffinity(0))
  if not 1 <= args.workers <= len(cores):
    p.error(f"--workers must be between 1 and the {len(cores)} core(s) this process may use")
  cores = cores[:args.workers]
  if args.torch_reference:
    import importlib.util
    if importlib.util.find_spec("torch") is None:
      p.error("--torch-reference needs PyTorch: pip install -e '.[reference]'")
    if shutil.which("taskset") is None:
      p.error("--torch-reference needs `taskset` (util-linux) to pin each PyTorch process")

  import concurrent.futures as cf
  import multiprocessing as mp
  from tqdm.auto import tqdm

  from research.reproduce import markdown, merge_jobs, plan_jobs, summarize
  from research.report import provenance, write_json
  from research.runtime import ONE_THREAD_FLAGS

  os.makedirs(args.workdir, exist_ok=True)
  compilation_cache = os.path.join(args.workdir, "compilation_cache")
  if args.fresh:  # a timed reproduction compiles every program it runs
    shutil.rmtree(compilation_cache, ignore_errors=True)
  key = {"num_steps": config.num_steps, "eval_every": config.eval_every,
         "xla_flags": config.xla_flags}
  members = [(v, s) for v in VARIANTS for s in range(config.seeds)]
  jobs = plan_jobs(config.models, members, len(cores))
  done, todo = {}, []
  for model, job_members in jobs:
    path = _cache_path(args.workdir, model, job_members)
    if not args.fresh and os.path.isfile(path):
      with open(path) as f:
        cached = json.load(f)
      if cached.get("key") == key:
        done[(model, job_members)] = {**cached["result"], "cached": True}
        continue
    todo.append((model, job_members))
  t = time.perf_counter()
  if todo:
    ctx = mp.get_context("spawn")
    free_cores = ctx.Queue()
    for core in cores:
      free_cores.put(core)
    with cf.ProcessPoolExecutor(len(cores), mp_context=ctx, initializer=_start_worker,
                                initargs=(free_cores, config.xla_flags,
                                          compilation_cache)) as pool, \
         tqdm(total=len(todo), desc="jobs", unit="job") as bar:
      futures = {pool.submit(train_job, model, job_members, config.num_steps,
                             config.eval_every): (model, job_members)
                 for model, job_members in todo}  # submitted longest first
      for future in cf.as_completed(futures):
        job = futures[future]
        done[job] = future.result()
        write_json(_cache_path(args.workdir, *job), {"key": key, "result": done[job]})
        bar.update(1)
        bar.set_postfix_str(f"{job[0]} x{len(job[1])} {done[job]['wall_seconds']:.0f} s")
  wall = time.perf_counter() - t

  if args.torch_reference:
    print("timing the PyTorch reference, one run per model ...", flush=True)
    torch_ref = time_torch_reference(config.models, cores, args.workdir)
  else:
    torch_ref = stored_torch_reference()
  results = merge_jobs(done, config.models)
  rows = summarize(results, config.paper.to_dict(), config.models)
  meta = provenance(sys.argv, workers=len(cores), wall_seconds=wall,
                    retrained=[[m, [list(x) for x in ms]] for m, ms in todo],
                    cached=[[m, [list(x) for x in ms]] for m, ms in jobs if (m, ms) not in todo])
  report = {"provenance": meta, "settings": key, "rows": rows, "wall_seconds": wall,
            "worker_xla_flags": f"{config.xla_flags} {ONE_THREAD_FLAGS}".strip(),
            "torch_reference": torch_ref, "per_model": results}
  write_json(args.out + ".json", report)
  with open(args.out + ".md.tmp", "w") as f:
    f.write(markdown(report) + "\n")
  os.replace(args.out + ".md.tmp", args.out + ".md")
  for r in rows:
    print(f"{r['model']:9s} {r['variant']:9s} ours {r['final_mean']:5.1f} ± {r['final_sd']:3.1f}  "
          f"paper {r['paper_mean']:3.0f} ± {r['paper_sd']:.0f}  "
          f"{'within 2 sd' if r['within_2sd'] else 'OUTSIDE 2 sd'}")
  n_runs = sum(len(r["members"]) for r in results.values())
  print(f"{n_runs} runs in {wall:.1f} s ({len(todo)} of {len(jobs)} jobs trained, "
        f"{len(cores)} workers) -> {args.out}.md")
  if torch_ref and not meta["cached"]:
    sequential = sum(torch_ref["per_run_seconds"].get(m, 0.0) * len(r["members"])
                     for m, r in results.items())
    print(f"PyTorch, the same runs one after another ({torch_ref['source']}): {sequential:.0f} s "
          f"of training loops, {sequential / wall:.1f}x our time", end="")
    if torch_ref.get("whole_run_seconds"):
      whole = sum(torch_ref["whole_run_seconds"].get(m, 0.0) * len(r["members"])
                  for m, r in results.items())
      print(f"; {whole:.0f} s as whole runs, {whole / wall:.1f}x", end="")
    print()
  return 0


def _cache_path(workdir: str, model: str, members) -> str:
  return os.path.join(workdir, f"{model}_" + "_".join(f"{v}{s}" for v, s in members) + ".json")


if __name__ == "__main__":
  from research.cli import run_main
  run_main(main)
