"""LM decode against its peers on one core, one thread: HF GPT2LMHeadModel.generate, plain PyTorch.

  python scripts/bench_lm_peers.py --out runs/reports/lm_peers

Builds the Transformer of --config (default experiments/lm_markov_tiny.py) with random weights,
copies them into Hugging Face's GPT2LMHeadModel (same architecture) and into a plain PyTorch
decoder with a preallocated KV cache, and times greedy generation in each beside our DecodeEngine
(jax) and OnnxDecodeEngine (ONNX Runtime): TTFT and TPOT at batch 1, tokens/s at each batch size,
interleaved rounds, medians and p90 (research/studies/lm_peers.py). Writes OUT.json and OUT.md
with the ratios, ours over each peer. The process is pinned to one core; XLA, PyTorch and ONNX
Runtime each run one thread. Needs torch and transformers: pip install torch==2.13.0
'transformers>=4.45,<6'.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
  from research.cli import ArgumentParser, comma_list, positive_int

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="experiments/lm_markov_tiny.py", help="an LM experiment")
  p.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
  p.add_argument("--frameworks", type=comma_list, default=("hf", "torch", "jax", "onnxruntime"))
  p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128")
  p.add_argument("--prompt-tokens", type=positive_int, default=16)
  p.add_argument("--new-tokens", type=positive_int, default=64)
  p.add_argument("--repeats", type=positive_int, default=5, help="rounds per batch size")
  p.add_argument("--latency-runs", type=positive_int, default=20, help="extra batch-1 rounds")
  p.add_argument("--seed", type=int, default=0, help="weights and prompts")
  p.add_argument(
    "--cold",
    action="store_true",
    help="time each generation right after another framework's (default: right after an untimed "
    "one of its own, so its code and data are in the CPU caches as in a server running it alone)",
  )
  args = p.parse_args()
  try:
    batch_sizes = tuple(sorted({int(b) for b in args.batch_sizes.split(",")}))
  except ValueError:
    p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
  if min(batch_sizes) < 1:
    p.error(f"batch sizes must be >= 1, got {args.batch_sizes!r}")
  if 1 not in batch_sizes:
    batch_sizes = (1, *batch_sizes)  # TTFT and TPOT are batch 1's
  if args.new_tokens < 2:
    p.error("--new-tokens must be >= 2 (TPOT needs a second token)")
  from research.studies.lm_peers import FRAMEWORKS, need_torch

  unknown = [f for f in args.frameworks if f not in FRAMEWORKS]
  if unknown:
    p.error(f"unknown framework(s) {', '.join(unknown)}; choose from {','.join(FRAMEWORKS)}")
  if "jax" not in args.frameworks:
    p.error("--frameworks must include jax: the ratios are ours over each peer")

  from research.outputs import check_output_prefix, json_text, write_all
  from research.runtime import configure_threads

  check_output_prefix(args.out, "--out", (".json", ".md"), inputs=[("--config", args.config)])
  from research.bench.generation import check_fits
  from research.config import load_config
  from research.data.dataset import LANGUAGE_MODEL, task_of
  from research.serving import InferenceError

  config = load_config(args.config)
  if task_of(config.get("data") or {}) != LANGUAGE_MODEL:
    raise InferenceError(
      f"{args.config} is a classifier experiment; bench_lm_peers.py times language models: "
      "give one such as experiments/lm_markov_tiny.py"
    )
  check_fits(config.model.n_ctx, args.prompt_tokens, args.new_tokens)
  need_torch(args.frameworks)

  os.environ.setdefault("OMP_NUM_THREADS", "1")
  configure_threads(1)  # before JAX starts: one core, one XLA thread

  import jax
  import jax.numpy as jnp

  from research.models import build_model
  from research.studies.lm_peers import markdown, run

  model = build_model(config.model.to_dict(), config.data.vocab_size)
  params = jax.jit(model.init)(jax.random.key(args.seed), jnp.zeros((1, model.n_ctx), jnp.int32))
  record = run(
    model, params, args.frameworks, batch_sizes, args.prompt_tokens, args.new_tokens,
    args.repeats, args.latency_runs, sys.argv, args.seed, warm_each=not args.cold,
  )  # fmt: skip
  write_all({args.out + ".json": json_text(record), args.out + ".md": markdown(record)}, "--out")
  for name, r in record["ratios"].items():
    print(
      f"{name}: TPOT {r['tpot_x']:.1f}x, TTFT {r['ttft_x']:.1f}x, "
      f"best-batch tokens/s {r['best_tokens_per_s_x']:.1f}x"
    )
  print(f"wrote {args.out}.json and {args.out}.md")
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
