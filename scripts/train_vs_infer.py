"""The main job: train (or resume) a run, then put training and inference side by side.

  python scripts/train_vs_infer.py                                   # the MNIST-1D CNN
  python scripts/train_vs_infer.py --config experiments/mnist1d_gru.py --workdir runs/gru

Trains (re-running resumes, and a finished run is reused), restores the params alone, times
real-time (batch 1) and batch inference on every engine (--engines; default jax, onnxruntime,
onnxruntime-int8, iree; each break-even uses the fastest engine for its scenario and names it),
counts FLOPs analytically and with XLA, reads memory from the compiled executables, measures
this machine's peak FLOP/s, compiles the model with IREE for a phone's Arm core and projects its
cost on edge devices (--no-edge leaves that out), and writes WORKDIR/report.md, report.json,
report.png (and a copy into --out), and in TensorBoard the report (Text tab), its figure (Images)
and its headline as the run's HParams metrics (trial/*). Break-even: the number of predictions
after which inference has cost more than training did. A few minutes on a 2-core CPU. SIGTERM,
Ctrl-C or SIGHUP while it trains checkpoints the run (exit 143, 130, 129; re-run to resume); while
it measures, it exits at once with one line, and the report is written whole or not at all.

  python scripts/train_vs_infer.py --config experiments/lm_markov_tiny.py   # a language model

A language model is reported in tokens: loss against the source's entropy rate, FLOPs per token,
training tokens/s, TTFT and TPOT at batch 1, decode tokens/s per batch (--decode-batches) on the
serving engine, and serving by the MLPerf LLM rules as scripts/serve_lm.py --quick measures it
(continuous batching, --slots, a mix of --requests, p99 TTFT and TPOT bounds scaled from the
unloaded latency): the Server QPS within the bounds and the tokens/s it serves. Break-even in
tokens: in FLOPs, in time at batch 1, at the best batch, and served within the bounds.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
  from research.cli import (
    ArgumentParser,
    add_experiment_flags,
    add_threads_flag,
    comma_list,
    non_negative_float,
    parse_with_overrides,
    positive_float,
    positive_int,
    workdir_for,
  )
  from research.config import load_config
  from research.runtime import configure_threads

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_experiment_flags(p)
  p.add_argument(
    "--profiles",
    default=None,
    type=comma_list,
    help="comma list of hardware profiles for the cost table (default: all)",
  )
  p.add_argument(
    "--power-watts",
    type=positive_float,
    default=15.0,
    help="this machine's power draw while busy (an assumption; default 15 W)",
  )
  p.add_argument(
    "--price-per-hour",
    type=non_negative_float,
    default=0.05,
    help="this machine's price in $/h (an assumption; default 0.05)",
  )
  p.add_argument(
    "--max-batch", type=positive_int, default=4096, help="inference sweep up to this batch"
  )
  p.add_argument("--latency-calls", type=positive_int, default=2000)
  p.add_argument(
    "--engines", default=None, type=comma_list, help="inference engines to time (default: all)"
  )
  p.add_argument(
    "--slots", type=positive_int, default=None, help="a language model: decode slots (32)"
  )
  p.add_argument(
    "--requests", type=positive_int, default=None, help="a language model: requests (1024)"
  )
  p.add_argument(
    "--decode-batches",
    type=positive_int_list,
    default=None,
    help="a language model: decode batches timed on the serving engine (1,8,32,128)",
  )
  p.add_argument(
    "--no-edge",
    action="store_true",
    help="leave out the 'on the edge' section (IREE modules for a phone, device projections)",
  )
  add_threads_flag(p)
  p.add_argument(
    "--out", default=None, help="directory for report.md/json/png (default: the workdir)"
  )
  p.add_argument("--no-progress", action="store_true")
  args, overrides = parse_with_overrides(p)
  config = load_config(args.config, overrides)
  configure_threads(args.threads)

  from research.serving.run_kind import run_kind
  from research.studies.train_vs_infer import CostSettings, train_vs_infer
  from research.studies.train_vs_infer_lm import LMJobSettings

  settings = CostSettings(
    max_batch=args.max_batch,
    latency_calls=args.latency_calls,
    power_watts=args.power_watts,
    price_per_hour=args.price_per_hour,
    engines=args.engines,
    edge=not args.no_edge,
  )
  if args.profiles:
    settings.profiles = args.profiles
  lm_flags = {"slots": args.slots, "requests": args.requests, "decode_batches": args.decode_batches}
  lm = None
  if any(v is not None for v in lm_flags.values()) or run_kind(config) == "language_model":
    lm = LMJobSettings(**{k: v for k, v in lm_flags.items() if v is not None})
  workdir = workdir_for(args, config)
  report, md_path = train_vs_infer(
    config,
    workdir,
    settings,
    sys.argv,
    out=args.out,
    progress=not args.no_progress,
    log=lambda s: print(s, flush=True),
    lm=lm,
  )
  if report.get("kind") == "language_model":
    print(lm_summary(report, md_path))
    return 0
  f, tm, be = report["flops"], report["time"], report["break_even_predictions"]
  inf = tm["inference"]
  print(
    f"\n{report['experiment']}: {report['params']:,} params, test accuracy "
    f"{report['final_test_accuracy']:.4f}\n"
    f"  FLOPs/example   forward {f['forward_per_example']:,.0f}, train step "
    f"{f['train_step_per_example']:,.0f} ({f['train_to_forward_ratio']:.2f}x); XLA/analytic "
    f"{f['xla_over_analytic']['forward']:.3f} fwd, "
    f"{f['xla_over_analytic']['train_step']:.3f} train\n"
    f"  µs/example      train {tm['train_seconds_per_example'] * 1e6:.2f}, real-time "
    f"{inf['realtime']['seconds_per_prediction'] * 1e6:.2f} ({inf['realtime']['engine']}), batch "
    f"{inf['batch']['seconds_per_prediction'] * 1e6:.2f} (batch {inf['batch']['batch_size']}, "
    f"{inf['batch']['engine']})\n"
    f"  utilization     train {100 * report['utilization']['training']:.1f} %, batch "
    f"{100 * report['utilization']['batch']:.1f} % of "
    f"{report['utilization']['peak']['peak_flops'] / 1e9:.0f} GFLOP/s\n"
    f"  break-even      {be['flops']:,.0f} predictions in FLOPs; in time "
    f"{be['seconds_realtime']:,.0f} real-time, {be['seconds_batch']:,.0f} batched\n"
    f"  report          {os.path.abspath(md_path)} "
    f"({report['provenance']['wall_seconds']:.0f} s)"
  )
  return 0


def positive_int_list(raw: str) -> tuple[int, ...]:
  """Comma-separated integers >= 1 (an argparse `type=`)."""
  try:
    values = tuple(int(x) for x in raw.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expects comma-separated integers, got {raw!r}") from None
  if min(values) < 1:
    raise argparse.ArgumentTypeError(f"expects integers >= 1, got {raw!r}")
  return values


def lm_summary(r: dict, md_path: str) -> str:
  """The LM report's summary lines, the break-evens in tokens last."""
  loss, t, g, s = r["loss"], r["training"], r["generation"], r["serving"]
  be, rt, best = r["break_even_tokens"], g["realtime"], g["best_batched"]
  gap = loss["gap_to_entropy_rate"]

  def n(x):
    return "-" if x is None else f"{x:,.0f}"

  within = (
    f"Server {s['server_qps']:,.1f} QPS within p99 TTFT {s['bounds']['ttft_ms']:.3f} ms / TPOT "
    f"{s['bounds']['tpot_ms']:.3f} ms = {s['tokens_per_s']:,.0f} tokens/s"
    if s["valid"]
    else f"no load down to {s['min_qps_tried']:,.1f} QPS met the bounds"
  )
  return (
    f"\n{r['experiment']}: {r['params']:,} params, test loss "
    f"{loss['test_nats_per_token']:.4f} nats/token"
    + ("" if gap is None else f" ({gap:+.4f} from the entropy rate)")
    + f"\n  FLOPs/token     forward {r['flops']['forward_per_token']['exact']:,.0f}, decode "
    f"{r['flops']['decode_per_token']:,.0f}, train step "
    f"{r['flops']['train_step_per_token']['exact']:,.0f}\n"
    f"  tokens/s        train {t['tokens_per_second']:,.0f} (MFU {100 * t['mfu']:.1f} %); batch 1 "
    f"TTFT p50 {rt['ttft']['p50_ms']:.3f} ms, TPOT p50 {rt['tpot']['p50_ms']:.3f} ms; batch "
    f"{best['batch_size']} {best['tokens_per_second']:,.0f}\n"
    f"  served          {within}\n"
    f"  break-even      {n(be['flops'])} tokens in FLOPs; in time {n(be['seconds_realtime'])} at "
    f"batch 1, {n(be['seconds_batched'])} at batch {best['batch_size']}, "
    f"{n(be['seconds_within_bounds'])} served within the bounds\n"
    f"  report          {os.path.abspath(md_path)} ({r['provenance']['wall_seconds']:.0f} s)"
  )


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main, preemptible=True)
