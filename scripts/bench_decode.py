"""Decode tokens/s of the continuous-batching engine per slot count, random weights; its roofline.

  python scripts/bench_decode.py --config experiments/lm_markov_tiny.py --figures DIR

For each engine variant (decode cache layout BTHD or BHTD; every step scoring the whole n_ctx
cache, or only the decode bucket that holds the longest active context), every slot gets a prompt
of --prompt-tokens and --new-tokens - 1 decode steps are timed one by one; tokens/s is slots x
steps / their total time. Beside it, the lockstep Generator's batch-1 time per output token.
Each batch is placed on the roofline (research/bench/roofline.py): this machine's float32 matmul
peak and STREAM-triad bandwidth are measured first, in the same process; MFU counts the FLOPs
at the real context against the matmul peak, the roofline fraction is the achieved FLOP/s over
min(peak, intensity x bandwidth). With --figures, the train step and a prefill are measured too,
and DIR gets roofline.png and decode_sweep.png (with SVG and PDF). Pinned to one core, one XLA
thread (--threads 1). --out writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import os
import sys

SERVING_VARIANT = "BHTD, buckets"  # what DecodeEngine serves with: for_serving's layout, buckets


def main() -> int:
  from research.cli import ArgumentParser, add_threads_flag, positive_int

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument(
    "--config", required=True, help="an LM experiment, e.g. experiments/lm_markov_tiny.py"
  )
  p.add_argument("--batch-sizes", default="1,8,32,64,128")
  p.add_argument("--prompt-tokens", type=positive_int, default=16)
  p.add_argument("--new-tokens", type=positive_int, default=64)
  p.add_argument("--repeats", type=positive_int, default=3)
  p.add_argument(
    "--variant",
    action="append",
    default=None,
    help=f"an engine variant to time (repeat the flag for several; default all), e.g. "
    f"--variant '{SERVING_VARIANT}' (the one the engine serves with)",
  )
  p.add_argument("--out", default=None, help="write the numbers to this JSON file")
  p.add_argument(
    "--figures", default=None, help="write roofline.png and decode_sweep.png to this directory"
  )
  add_threads_flag(p)
  args = p.parse_args()
  try:
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
  except ValueError:
    p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
  if min(batch_sizes) < 1 or args.new_tokens < 2:
    p.error("batch sizes must be >= 1 and --new-tokens >= 2")
  from research.bench.generation import DECODE_VARIANTS

  variants = tuple(args.variant or DECODE_VARIANTS)
  unknown = [v for v in variants if v not in DECODE_VARIANTS]
  if unknown:
    p.error(f"unknown --variant {unknown}; choose from {list(DECODE_VARIANTS)}")
  from research.outputs import check_output_dir, check_output_file, json_text, write_all
  from research.runtime import configure_threads

  if args.out:  # before minutes of measuring, not after
    check_output_file(args.out, "--out", suffixes=(".json",), inputs=[("--config", args.config)])
  if args.figures:
    check_output_dir(args.figures, "--figures")

  configure_threads(args.threads)

  import jax
  import jax.numpy as jnp

  from research.bench import roofline
  from research.bench.generation import check_fits, decode_variants
  from research.config import load_config
  from research.data.dataset import LANGUAGE_MODEL, task_of
  from research.models import build_model
  from research.serving import InferenceError

  config = load_config(args.config)
  if task_of(config.get("data") or {}) != LANGUAGE_MODEL:
    raise InferenceError(
      f"{args.config} is a classifier experiment; bench_decode.py times language models: "
      "give one such as experiments/lm_markov_tiny.py"
    )
  model = build_model(config.model.to_dict(), config.data.vocab_size)
  check_fits(model.n_ctx, args.prompt_tokens, args.new_tokens)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, model.n_ctx), jnp.int32))
  peaks = roofline.measure_peaks(args.threads)
  print(
    f"this core: float32 matmul {peaks['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s, STREAM triad "
    f"{peaks['triad_bytes_per_s'] / 1e9:.1f} GB/s (in L3: "
    f"{peaks['cache_triad_bytes_per_s'] / 1e9:.1f}), ridge {peaks['ridge_flops_per_byte']:.2f} "
    "FLOPs/byte"
  )
  r = decode_variants(
    model, params, batch_sizes, args.prompt_tokens, args.new_tokens, args.repeats, variants
  )
  print(f"decode tokens/s (thousands) by slots {', '.join(map(str, batch_sizes))}:")
  points = {}
  for name, records in r["variants"].items():
    points[name] = roofline.decode_points(
      model, params, peaks, records, args.prompt_tokens, args.new_tokens, xla_check=False
    )
    cells = "  ".join(f"{x['tokens_per_s'] / 1e3:6.1f}" for x in points[name])
    step_us = records[0]["step"]["p50_ms"] * 1e3
    print(f"  {name:20s} {cells}   {records[0]['batch_size']}-slot step p50 {step_us:.1f} us")
    for label, key in (("MFU %", "mfu"), ("of roofline %", "roofline_fraction")):
      cells = "  ".join(f"{100 * x[key]:6.1f}" for x in points[name])
      print(f"    {label:18s} {cells}")
  tpot = r["generator_realtime"]["tpot"]
  print(f"  lockstep Generator, batch 1: time per output token p50 {tpot['p50_ms'] * 1e3:.1f} us")
  r["peaks"] = peaks
  r["kv_cache"] = roofline.kv_memory(model, params, {"L3 32 MiB": 32 * 2**20, "1 GiB": 2**30})
  kv = r["kv_cache"]
  print(
    f"KV cache: {kv['per_token']:,} B per token, {kv['per_slot'] / 2**10:.0f} KiB per slot "
    f"(n_ctx {kv['n_ctx']}); slots that fit beside the params: "
    + ", ".join(f"{n} in {name}" for name, n in kv["slots_that_fit"].items())
  )
  r["roofline"] = points
  serving = SERVING_VARIANT if SERVING_VARIANT in points else next(iter(points))
  r["decode_sweep"] = [
    {k: x[k] for k in ("batch", "tokens_per_s", "mfu", "roofline_fraction", "intensity", "bound")}
    for x in points[serving]
  ]
  r["decode_sweep_variant"] = serving
  r["crossover"] = roofline.crossover(points[serving], peaks)
  best = roofline.best_decode(points[serving])
  print(
    f"{serving}: best batch {best['batch']}, {best['tokens_per_s'] / 1e3:.1f} k tokens/s, "
    f"{100 * best['roofline_fraction']:.0f} % of its roofline bound ({best['bound']}-bound, "
    f"{best['intensity']:.2f} FLOPs/byte), MFU {100 * best['mfu']:.1f} %; "
    f"crossover: {r['crossover']['text']}"
  )
  files = {}
  if args.figures:
    from research.bench.figures import figure_files

    phases = roofline.lm_phase_points(
      model,
      params,
      peaks,
      decode_batches=batch_sizes,
      prefill_tokens=args.prompt_tokens,
      threads=args.threads,
      prompt_tokens=args.prompt_tokens,
      new_tokens=args.new_tokens,
      repeats=args.repeats,
      decode_records=r["variants"][serving],
    )
    r["phases"] = phases
    for x in phases[:2]:
      print(
        f"  {x['phase']:10s} batch {x['batch']:3d}: {x['intensity']:7.2f} FLOPs/byte, "
        f"{x['bound']}-bound, {100 * x['fraction']:.0f} % of its bound"
      )
    files.update(
      figure_files(
        roofline.roofline_figure(phases, peaks), os.path.join(args.figures, "roofline.png")
      )
    )
    files.update(
      figure_files(
        roofline.decode_sweep_figure(points[serving]),
        os.path.join(args.figures, "decode_sweep.png"),
      )
    )
  if args.out:
    from research.provenance import provenance

    meta = provenance(sys.argv, xla_threads=args.threads)
    files[args.out] = json_text({"command": sys.argv, "provenance": meta, **r})
  write_all(files)  # every output or none
  if args.figures:
    print(f"figures in {args.figures}")

  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
