"""Inference benchmark of a trained run: real-time vs batch, precisions, MLPerf LoadGen.

  python scripts/bench_inference.py --workdir runs/cnn
  python scripts/bench_inference.py --workdir runs/gru --out results/inference/mnist1d_gru
  python scripts/bench_inference.py --workdir runs/cnn --precisions float32 --no-loadgen   # quick

Writes OUT/bench.json (one record per measurement), OUT/bench.md, OUT/latency.png,
OUT/batch_sweep.png and LoadGen's logs under OUT/loadgen/ (OUT defaults to WORKDIR/bench), and the
headline figures as TensorBoard scalars in the run's directory. Runs on every backend JAX sees
(CPU always, GPU when present). About 2 minutes on a 2-core CPU by default; --full-length gives
LoadGen's full MLPerf durations (10 minutes per run).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
  from research.runtime import configure_threads
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained run's directory")
  p.add_argument("--out", default=None, help="output directory (default WORKDIR/bench)")
  p.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step")
  p.add_argument("--precisions", default="float32,bfloat16,int8")
  p.add_argument("--backends", default=None, help="comma list, default: all available")
  p.add_argument("--max-batch", type=int, default=4096, help="sweep powers of two up to this")
  p.add_argument("--latency-calls", type=int, default=2000)
  p.add_argument("--latency-bound-ms", type=float, default=10.0, help="Server p99 bound")
  p.add_argument("--loadgen-ms", type=int, default=1500, help="minimum duration per LoadGen run")
  p.add_argument("--server-runs", type=int, default=7, help="LoadGen runs per Server QPS search")
  p.add_argument("--no-loadgen", action="store_true")
  p.add_argument("--full-length", action="store_true", help="LoadGen's full MLPerf durations")
  p.add_argument("--threads", type=int, default=1, choices=(0, 1),
                 help="1 (default) pins XLA:CPU to one thread (batch-1 latency halves on 2 "
                      "cores); 0 keeps XLA's thread pool")
  args = p.parse_args()
  configure_threads(args.threads)

  from research.bench import figures
  from research.bench.inference import (BenchSettings, benchmark_run, headline,
                                        markdown_report)
  from research.data import load_dataset
  from research.infer import load_run
  from research.report import provenance, write_json
  from research.tensorboard_writer import SummaryWriter

  if args.max_batch < 1:
    p.error("--max-batch must be at least 1")
  run = load_run(args.workdir, args.checkpoint)
  data = load_dataset(run.config.data)
  out = os.path.abspath(args.out or os.path.join(args.workdir, "bench"))
  os.makedirs(out, exist_ok=True)
  settings = BenchSettings(
      precisions=tuple(args.precisions.split(",")),
      backends=tuple(args.backends.split(",")) if args.backends else None,
      sweep_sizes=tuple(2 ** i for i in range(args.max_batch.bit_length())),
      latency_calls=args.latency_calls, loadgen=not args.no_loadgen,
      loadgen_duration_ms=args.loadgen_ms, latency_bound_ms=args.latency_bound_ms,
      server_max_runs=args.server_runs,
      full_length=args.full_length)
  t = time.perf_counter()
  result = benchmark_run(run, data, out, settings, log=lambda s: print(s, flush=True))
  meta = provenance(sys.argv, workdir=os.path.abspath(args.workdir), step=run.step,
                    experiment=run.config.experiment, wall_seconds=time.perf_counter() - t)

  title = f"Inference benchmark: {run.config.experiment} (step {run.step})"
  samples = result.pop("latency_samples_us")
  write_json(os.path.join(out, "bench.json"), {"provenance": meta, **result})
  with open(os.path.join(out, "bench.md.tmp"), "w") as f:
    f.write(markdown_report(result, title, meta["markdown"]) + "\n")
  os.replace(os.path.join(out, "bench.md.tmp"), os.path.join(out, "bench.md"))
  latency = {f"{tag} {side}": v for tag, sides in samples.items() for side, v in sides.items()
             if side == "serving" or tag.endswith("float32")}
  figures.latency_distribution(latency, os.path.join(out, "latency.png"),
                               f"{run.config.experiment}: batch-1 latency")
  sweeps: dict[str, list] = {}
  for r in result["records"]:
    if r["kind"] == "batch":
      sweeps.setdefault(f"{r['backend']} {r['precision']}", []).append(r)
  figures.batch_sweep(sweeps, os.path.join(out, "batch_sweep.png"),
                      f"{run.config.experiment}: batch inference")
  with SummaryWriter(args.workdir) as writer:
    writer.scalars(headline(result["records"]), run.step)
  print(f"{meta['wall_seconds']:.0f} s; wrote {out}/bench.{{json,md}}, latency.png, "
        f"batch_sweep.png; TensorBoard scalars inference/* in {args.workdir}")
  return 0


if __name__ == "__main__":
  from research.cli import run_main
  run_main(main)
