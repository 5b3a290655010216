"""Decode tokens/s of the continuous-batching engine per slot count, random weights.

  python scripts/bench_decode.py --config experiments/lm_markov_tiny.py

For each engine variant (decode cache layout BTHD or BHTD; every step scoring the whole n_ctx
cache, or only the decode bucket that holds the longest active context), every slot gets a prompt
of --prompt-tokens and --new-tokens - 1 decode steps are timed one by one; tokens/s is slots x
steps / their total time. Beside it, the lockstep Generator's batch-1 time per output token.
Pinned to one core, one XLA thread (--threads 1). --out writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import sys


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
  p.add_argument("--out", default=None, help="write the numbers to this JSON file")
  add_threads_flag(p)
  args = p.parse_args()
  try:
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
  except ValueError:
    p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
  if min(batch_sizes) < 1 or args.new_tokens < 2:
    p.error("batch sizes must be >= 1 and --new-tokens >= 2")
  from research.outputs import check_output_file, write_json
  from research.runtime import configure_threads

  if args.out:  # before minutes of measuring, not after
    check_output_file(args.out, "--out", suffixes=(".json",), inputs=[("--config", args.config)])

  configure_threads(args.threads)

  import jax
  import jax.numpy as jnp

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
  r = decode_variants(model, params, batch_sizes, args.prompt_tokens, args.new_tokens, args.repeats)
  print(f"decode tokens/s (thousands) by slots {', '.join(map(str, batch_sizes))}:")
  for name, records in r["variants"].items():
    cells = "  ".join(f"{x['tokens_per_second_mean'] / 1e3:6.1f}" for x in records)
    first = records[0]
    step_us = first["step"]["p50_ms"] * 1e3
    print(f"  {name:20s} {cells}   {first['batch_size']}-slot step p50 {step_us:.1f} us")
  tpot = r["generator_realtime"]["tpot"]
  print(f"  lockstep Generator, batch 1: time per output token p50 {tpot['p50_ms'] * 1e3:.1f} us")
  if args.out:
    write_json(args.out, {"command": sys.argv, **r})

  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
