"""Serve a trained language model as LLM servers do, measured by the MLPerf LLM rules.

  python scripts/train.py --config experiments/lm_markov_tiny.py --workdir runs/lm_markov_tiny
  python scripts/serve_lm.py --workdir runs/lm_markov_tiny --out runs/lm_markov_tiny/serving

A seeded mix of requests (prompt and output lengths log-uniform, outputs 8x apart by default) is
served by the continuous-batching engine and by static batching on the same engine, through
MLPerf LoadGen with token latencies: SingleStream (unloaded), Offline (tokens/s) and the Server
scenario (Poisson arrivals), whose highest QPS with p99 TTFT and p99 TPOT both within their
bounds is searched for by bisection. The bounds are MLPerf's Llama-2-70B ratios of bound to
unloaded latency, times this model's unloaded batch-1 TTFT and TPOT here (or given). Writes
OUT/serve.json, serve.md, token_latencies.json, figures (token_cdfs, load, roofline; PNG, SVG,
PDF) and loadgen/ (LoadGen's logs), all or nothing; the headline goes to the run's TensorBoard
trial metrics. Pinned to one core, one thread by default (--threads 1). Progress on stderr.
"""

from __future__ import annotations

import argparse
import sys


def _pair(raw: str) -> tuple[int, int]:
  """MIN,MAX token counts (an argparse `type=`)."""
  try:
    lo, hi = (int(x) for x in raw.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"expects MIN,MAX token counts, e.g. 8,64, got {raw!r}"
    ) from None
  return lo, hi


def main() -> int:
  from research.cli import (
    ArgumentParser,
    add_threads_flag,
    checkpoint_arg,
    positive_float,
    positive_int,
  )

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained language-model run")
  p.add_argument("--out", required=True, help="directory to write (replaced whole at the end)")
  p.add_argument("--checkpoint", type=checkpoint_arg, default="latest")
  p.add_argument("--slots", type=positive_int, default=32, help="decode slots (default 32)")
  p.add_argument(
    "--prefill-batch", type=positive_int, default=8,
    help="prompts of one length bucket prefilled in one call (default 8; 1: one at a time)",
  )  # fmt: skip
  p.add_argument(
    "--memory-budget-mb", type=positive_float, default=None,
    help="refuse more slots than params plus KV caches fit in this many MiB",
  )  # fmt: skip
  p.add_argument("--requests", type=positive_int, default=1024, help="requests in the mix")
  p.add_argument("--prompt-tokens", type=_pair, default=None, help="MIN,MAX (n_ctx/32,n_ctx/4)")
  p.add_argument("--output-tokens", type=_pair, default=None, help="MIN,MAX (n_ctx/16,n_ctx/2)")
  p.add_argument("--prompts", default=None, help="JSON file: a list of token-id lists to use")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--tier", choices=("server", "interactive"), default="server",
    help="MLPerf's Llama-2-70B bounds the ratios come from (default server)",
  )  # fmt: skip
  p.add_argument("--ttft-bound-ms", type=positive_float, default=None, help="p99 TTFT bound")
  p.add_argument("--tpot-bound-ms", type=positive_float, default=None, help="p99 TPOT bound")
  p.add_argument("--decode-batches", default="1,8,32,64,128", help="the decode sweep's batches")
  p.add_argument("--quick", action="store_true", help="short runs, few search steps (tests)")
  add_threads_flag(p)
  args = p.parse_args()
  try:
    decode_batches = tuple(int(b) for b in args.decode_batches.split(","))
  except ValueError:
    p.error(f"--decode-batches must be comma-separated integers, got {args.decode_batches!r}")
  if min(decode_batches) < 1:
    p.error("--decode-batches must be >= 1")

  from research.studies.serve_lm import ServeSettings, check_inputs, serve_lm

  settings = ServeSettings(
    slots=args.slots,
    prefill_batch=args.prefill_batch,
    memory_budget_mb=args.memory_budget_mb,
    prompt_tokens=args.prompt_tokens,
    output_tokens=args.output_tokens,
    requests=args.requests,
    seed=args.seed,
    prompts_file=args.prompts,
    tier=args.tier,
    ttft_bound_ms=args.ttft_bound_ms,
    tpot_bound_ms=args.tpot_bound_ms,
    decode_batches=decode_batches,
    checkpoint=args.checkpoint,
    threads=args.threads,
    quick=args.quick,
  )
  check_inputs(args.workdir, args.out, settings)  # before JAX starts: a bad input costs nothing
  from research.runtime import configure_threads

  configure_threads(args.threads)
  r = serve_lm(args.workdir, args.out, settings, sys.argv)
  cont, static = r["modes"]["continuous"]["server"], r["modes"]["static"]["server"]
  print(
    f"Server QPS within p99 TTFT {r['bounds']['ttft_ms']:.3f} ms / TPOT "
    f"{r['bounds']['tpot_ms']:.3f} ms: continuous {cont['qps']:,.1f}, static "
    f"{static['qps']:,.1f}; Offline continuous "
    f"{r['modes']['continuous']['offline']['tokens_per_s']:,.0f} tokens/s -> {args.out}"
  )
  lb, ratio = r["loose_bounds"], r["continuous_over_static"]["server_qps_loose"]
  print(
    f"At the loose bounds ({lb['factor']}x: TTFT {lb['ttft_ms']:.3f} ms / TPOT "
    f"{lb['tpot_ms']:.3f} ms): continuous {r['modes']['continuous']['server_loose']['qps']:,.1f}, "
    f"static {r['modes']['static']['server_loose']['qps']:,.1f}"
    + (f" ({ratio:.2f}x)" if ratio else "")
  )
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
