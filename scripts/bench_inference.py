"""Inference benchmark of a trained run: engines, real-time vs batch, precisions, MLPerf LoadGen.

  python scripts/bench_inference.py --workdir runs/cnn
  python scripts/bench_inference.py --workdir runs/cnn --engines jax,onnxruntime
  python scripts/bench_inference.py --workdir runs/cnn --peer-onnx runs/torch_onnx/cnn.onnx
  python scripts/bench_inference.py --workdir runs/gru --out results/inference/mnist1d_gru
  python scripts/bench_inference.py --workdir runs/cnn --precisions float32 --no-loadgen   # quick

Writes OUT/bench.json (one record per measurement), OUT/bench.md, OUT/latency_samples.json,
OUT/latency.{png,svg,pdf}, OUT/batch_sweep.{png,svg,pdf} and LoadGen's logs under OUT/loadgen/
(replaced by a re-run; OUT defaults to WORKDIR/bench), and bench.md and the figures into the
run's TensorBoard summary (Text and Images tabs); --profile adds a trace for the Profile tab.
Engines: jax (every backend JAX sees: CPU always, GPU when present; --precisions), onnxruntime
(the jax2onnx export, fp32) and onnxruntime-int8 (ONNX Runtime's own int8); an engine that
cannot export this model is reported as unavailable, with the exporter's reason. About 4
minutes on a 2-core CPU by default; --full-length gives LoadGen's full MLPerf durations (10
minutes per run).
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
  from research.cli import (
    ArgumentParser,
    add_threads_flag,
    checkpoint_arg,
    comma_list,
    positive_float,
    positive_int,
  )
  from research.runtime import configure_threads

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained run's directory")
  p.add_argument("--out", default=None, help="output directory (default WORKDIR/bench)")
  p.add_argument(
    "--checkpoint", default="latest", type=checkpoint_arg, help="latest (default), best, or a step"
  )
  p.add_argument(
    "--engines", default=None, type=comma_list, help="comma list, default: all installed"
  )
  p.add_argument(
    "--peer-onnx",
    action="append",
    default=[],
    metavar="FILE",
    help="an independent deployment's ONNX file, timed beside ours (repeatable)",
  )
  p.add_argument(
    "--precisions", default="float32,bfloat16,int8", type=comma_list, help="of the jax engine"
  )
  p.add_argument(
    "--backends", default=None, type=comma_list, help="of the jax engine; default: all available"
  )
  p.add_argument(
    "--max-batch", type=positive_int, default=4096, help="sweep powers of two up to this"
  )
  p.add_argument("--latency-calls", type=positive_int, default=2000)
  p.add_argument("--latency-bound-ms", type=positive_float, default=10.0, help="Server p99 bound")
  p.add_argument(
    "--loadgen-ms", type=positive_int, default=1500, help="minimum duration per LoadGen run"
  )
  p.add_argument(
    "--server-runs", type=positive_int, default=7, help="LoadGen runs per Server QPS search"
  )
  p.add_argument("--no-loadgen", action="store_true")
  p.add_argument("--full-length", action="store_true", help="LoadGen's full MLPerf durations")
  p.add_argument(
    "--profile",
    action="store_true",
    help="also trace jax inference (batch 1 and 256) for TensorBoard's Profile tab",
  )
  add_threads_flag(p)
  args = p.parse_args()
  configure_threads(args.threads)

  from research.bench.inference import BenchSettings, write_benchmark

  settings = BenchSettings(
    precisions=args.precisions,
    backends=args.backends,
    engines=args.engines,
    peers=tuple(args.peer_onnx),
    sweep_sizes=tuple(2**i for i in range(args.max_batch.bit_length())),
    latency_calls=args.latency_calls,
    loadgen=not args.no_loadgen,
    loadgen_duration_ms=args.loadgen_ms,
    latency_bound_ms=args.latency_bound_ms,
    server_max_runs=args.server_runs,
    full_length=args.full_length,
    profile=args.profile,
  )
  meta, out = write_benchmark(
    args.workdir,
    args.checkpoint,
    settings,
    sys.argv,
    out=args.out,
    log=lambda s: print(s, flush=True),
  )
  summary = meta["tensorboard_summary"]
  print(
    f"{meta['wall_seconds']:.0f} s; wrote {out}/bench.{{json,md}}, latency.*, batch_sweep.*"
    + (f"; TensorBoard text and images in {summary}" if summary else "")
  )
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
