"""Independent PyTorch reference of the MNIST-1D paper's four models and training protocol.

Why this exists: it is a speed yardstick for the JAX code in this repo. It re-implements
the reference models (logistic, MLP, CNN, GRU) and the reference protocol (Adam lr 1e-2,
batch 100 as sequential slices, no shuffling, 6000 steps) in plain torch.nn, times the pure
training step loop on one pinned CPU thread, and writes JSON + markdown results. The models and
the loop are research.studies.mnist1d_table1.torch_reference.

Run it pinned to one core, e.g.:
    taskset -c 0 python scripts/bench_torch_reference.py --models logistic,mlp,cnn,gru \
        --steps 6000 --seed 0                  # -> runs/reports/torch_reference.{json,md}
The committed results/torch_reference.{json,md} are re-made with --out results/torch_reference.json.
With --export-onnx DIR each trained model is also written as DIR/<model>.onnx, the independent
deployment that `scripts/bench_inference.py --peer-onnx` times in ONNX Runtime beside ours.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

MODEL_NAMES = ("logistic", "mlp", "cnn", "gru")  # research.studies.mnist1d_table1.torch_reference


def build_parser() -> argparse.ArgumentParser:
  """The flags, built before torch is imported, so --help and bad flags answer without it."""
  from research.cli import ArgumentParser

  p = ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "--models", default=",".join(MODEL_NAMES), help="comma-separated subset of the default"
  )
  p.add_argument("--steps", type=int, default=6000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--shuffle-seq", action="store_true", help="the spatially shuffled MNIST-1D variant"
  )
  p.add_argument(
    "--eval-every", type=int, default=0, help="untimed test eval every N steps (0 = only at end)"
  )
  p.add_argument(
    "--out",
    default="runs/reports/torch_reference.json",
    help="JSON results (default runs/reports/torch_reference.json; the committed ones are "
    "results/torch_reference.json)",
  )
  p.add_argument("--md", default=None, help="markdown path (default: --out with .md)")
  p.add_argument(
    "--export-onnx",
    default=None,
    metavar="DIR",
    help="also export each trained model to DIR/<model>.onnx (the peer deployment that "
    "scripts/bench_inference.py --peer-onnx times beside our engines)",
  )
  return p


def parse_args(argv: Sequence[str], names: Sequence[str]) -> argparse.Namespace:
  """CLI; bad model names or step counts exit with a one-line error."""
  args = build_parser().parse_args(argv)
  args.models = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = [m for m in args.models if m not in names]
  if unknown or not args.models:
    sys.exit(
      f"error: unknown model name(s) {unknown or '(none given)'}; choose from {','.join(names)}"
    )
  if args.steps <= 0:
    sys.exit(f"error: --steps must be positive, got {args.steps}")
  if args.eval_every < 0:
    sys.exit(f"error: --eval-every must be >= 0, got {args.eval_every}")
  if args.md is None:
    args.md = os.path.splitext(args.out)[0] + ".md"
  for flag, path in (("--out", args.out), ("--md", args.md)):
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
      sys.exit(f"error: {flag} {path} is a directory; give a file name such as results.json")
  from research.outputs import OutputError, check_output_dir, check_output_file

  try:  # before any training: not a run's own file, nor a place that cannot be written
    check_output_file(args.out, "--out")
    check_output_file(args.md, "--md")
    if args.export_onnx:
      check_output_dir(args.export_onnx, "--export-onnx", names=[f"{m}.onnx" for m in args.models])
  except OutputError as e:
    sys.exit(f"error: {e}")
  if os.path.realpath(args.md) == os.path.realpath(args.out):
    sys.exit(f"error: --md {args.md} is the --out file; give the markdown its own name")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Pin threads, build data, benchmark each requested model, write JSON and markdown."""
  argv = sys.argv[1:] if argv is None else argv
  build_parser().parse_args(argv)  # --help and unknown flags need no torch
  try:
    from research.studies.mnist1d_table1 import torch_reference as ref
  except ImportError as e:
    if e.name != "torch":
      raise
    sys.exit("error: torch is not installed; pip install -e '.[reference]'")
  from research.outputs import json_text, write_all

  args = parse_args(argv, list(ref.MODELS))
  ref.pin_threads()
  meta = ref.provenance(sys.argv)
  affinity = meta["threads"]["cpu_affinity"]
  if affinity is not None and len(affinity) != 1:
    print(
      f"warning: process may run on cores {affinity}; run under `taskset -c 0`", file=sys.stderr
    )
  data = ref.load_data(args.shuffle_seq)
  if args.export_onnx:
    os.makedirs(args.export_onnx, exist_ok=True)
  records = []
  for name in args.models:
    onnx_path = os.path.join(args.export_onnx, f"{name}.onnx") if args.export_onnx else None
    r = ref.bench_model(name, data, args.steps, args.seed, args.eval_every, onnx_path)
    records.append(r)
    print(
      f"{name:8s} params={r['params']:6d} train_seconds={r['train_seconds']:8.2f} "
      f"steps/s={r['steps_per_second']:8.1f} test_acc={r['final_test_accuracy']:.4f}",
      flush=True,
    )
  write_all(
    {args.out: json_text({"meta": meta, "results": records}), args.md: ref.markdown(meta, records)}
  )
  print(f"wrote {args.out} and {args.md}")
  return 0


if __name__ == "__main__":
  # Not research.cli.run_main, unlike the other scripts: it imports JAX, Flax and Orbax (about 5 s
  # here) before `main`, and the reproduction reports this process's whole wall time as PyTorch's.
  sys.exit(main())
