"""The main job's language-model path: a trained LM's training against its inference, in tokens.

After training (research/studies/train_vs_infer.py trains or reuses the run under its lock), one
process measures:
  - the LM's costs from research/studies/lm_costs.py: loss against the source's entropy rate,
    FLOPs per token (Kaplan's, exact, XLA's), training tokens/s and MFU, TTFT and TPOT at batch 1,
    decode tokens/s per batch on the serving engine (research/serving/decode_engine.py);
  - serving within the bounds, by the MLPerf LLM rules (research/bench/lm_loadgen.py, in
    scripts/serve_lm.py's --quick configuration, continuous batching only): the unloaded batch-1
    latency, the p99 TTFT and TPOT bounds MLPerf's Llama-2-70B ratios give from it, and the
    highest Server QPS (Poisson arrivals) whose p99s both meet them.
The Server QPS times the mix's mean output tokens is the tokens/s served within the bounds; its
inverse is the serving seconds per token. Break-even, in tokens served: training FLOPs / decode
FLOPs per token; training seconds / TPOT at batch 1; training seconds x best-batch tokens/s; and
training seconds x tokens/s within the bounds (after that many tokens, serving has cost as much
machine time as training did).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Callable

from research.errors import UserError

# After lm_costs' three break-evens (flops, seconds_realtime, seconds_batched).
WITHIN_BOUNDS = "seconds_within_bounds"

# report path -> TensorBoard trial metric (None values left out). HParams ticks the first five by
# tag: the four break-evens, then the tokens/s served within the bounds.
TRIAL_METRICS = {
  ("break_even_tokens", "flops"): "trial/break_even_tokens_flops",
  ("break_even_tokens", "seconds_realtime"): "trial/break_even_tokens_realtime",
  ("break_even_tokens", "seconds_batched"): "trial/break_even_tokens_batched",
  ("break_even_tokens", WITHIN_BOUNDS): "trial/break_even_tokens_within_bounds",
  ("serving", "tokens_per_s"): "trial/tokens_per_s_within_bounds",
  ("serving", "server_qps"): "trial/tokens_server_qps",
  ("generation", "realtime", "ttft", "p50_ms"): "trial/ttft_batch1_ms",
  ("generation", "realtime", "tpot", "p50_ms"): "trial/tpot_batch1_ms",
  ("generation", "best_batched", "tokens_per_second"): "trial/tokens_per_s_best_batch",
  ("training", "tokens_per_second"): "trial/train_tokens_per_s",
  ("loss", "gap_to_entropy_rate"): "trial/loss_gap_to_entropy_rate",
}


class LMJobError(UserError, ValueError):
  """A setting of the LM path that cannot be used."""


@dataclasses.dataclass(frozen=True)
class LMJobSettings:
  """What the LM path measures. Serving defaults are scripts/serve_lm.py's (ServeSettings)."""

  slots: int = 32  # decode slots of the serving engine
  requests: int = 1024  # requests in the seeded mix
  decode_batches: tuple[int, ...] = (1, 8, 32, 128)  # lm_costs' batched generation, on the engine
  sequences: int = 20  # batch-1 generations timed (TTFT, TPOT)
  seed: int = 0


def check_lm_settings(settings: LMJobSettings) -> None:
  """LMJobError naming the flag of the first setting that cannot be used."""
  for name, flag in (("slots", "--slots"), ("requests", "--requests"), ("sequences", "")):
    value = getattr(settings, name)
    if not value >= 1:
      raise LMJobError(f"{flag or name} must be >= 1, got {value}")
  if not settings.decode_batches or min(settings.decode_batches) < 1:
    raise LMJobError(f"--decode-batches must be >= 1, got {list(settings.decode_batches)}")


def check_fits_context(config: Any, settings: LMJobSettings) -> None:
  """Before any training: the default request mix must fit the model's context."""
  from research.bench import lm_workload

  n_ctx = int(config.model.n_ctx)
  lm_workload.check_spec(lm_workload.default_spec(n_ctx, settings.requests, settings.seed), n_ctx)


def run_lm_job(
  workdir: str,
  settings: LMJobSettings,
  peak_matmul_n: int,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """The trained LM in `workdir` measured: lm_costs' report (decode on the serving engine), the
  serving section within the bounds, and the break-even in tokens served within them."""
  from research.cost import hardware
  from research.serving.restore import load_run
  from research.studies.lm_costs import LMCostSettings, lm_costs

  run = load_run(workdir, "latest")
  n_ctx = int(run.model.n_ctx)
  cost_settings = LMCostSettings(
    prompt_tokens=min(16, n_ctx // 4),
    new_tokens=min(64, n_ctx // 2),
    sequences=settings.sequences,
    batch_sizes=tuple(settings.decode_batches),
    decode="engine",
  )
  log(f"measuring this machine's peak FLOP/s ({peak_matmul_n}^3 matmul)")
  peak = hardware.measure_peak_flops(peak_matmul_n)
  log("timing generation: batch 1, then decode per batch on the serving engine")
  report = lm_costs(workdir, cost_settings, peak)
  log("serving by the MLPerf LLM rules: unloaded latency, bounds, the Server QPS search")
  serving = serve_within_bounds(run, settings, log)
  train_seconds = report["training"]["train_seconds"]
  report["break_even_tokens"][WITHIN_BOUNDS] = (
    None if serving["tokens_per_s"] is None else train_seconds * serving["tokens_per_s"]
  )
  return {"kind": "language_model", "step": run.step, **report, "serving": serving}


def serve_within_bounds(
  run: Any, settings: LMJobSettings, log: Callable[[str], None] = print
) -> dict[str, Any]:
  """Continuous batching on the serving engine, scripts/serve_lm.py's --quick configuration at
  the default (server-tier) bounds: the highest VALID Server QPS and the tokens/s it serves.
  LoadGen's logs go to a temporary directory, removed after (serve_lm.py keeps them)."""
  from research.bench import lm_loadgen, lm_workload
  from research.serving.decode_engine import DecodeEngine, for_serving
  from research.studies.serve_lm import ServeSettings, prefill_buckets_for

  quick = ServeSettings(slots=settings.slots, requests=settings.requests, seed=settings.seed)
  vocab, n_ctx = int(run.num_classes), int(run.model.n_ctx)
  spec = lm_workload.default_spec(n_ctx, quick.requests, quick.seed)
  items = lm_workload.make_requests(spec, vocab)
  workload = lm_workload.describe(spec, items, None)
  model = for_serving(run.model)
  longest_prompt = workload["prompt_tokens"]["max"]
  engine = DecodeEngine(
    model,
    run.params,
    quick.slots,
    prefill_buckets=prefill_buckets_for(n_ctx, longest_prompt),
    prefill_batch=quick.prefill_batch,
  )
  unloaded = lm_loadgen.measure_unloaded(
    model, run.params, longest_prompt, workload["output_tokens"]["max"], vocab, repeats=4,
    prefill_buckets=engine.prefill_buckets, seed=quick.seed,
  )  # fmt: skip
  bounds = lm_loadgen.derive_bounds(unloaded, quick.tier)
  lm_loadgen.check_reachable(bounds, unloaded)
  engine.warmup()
  log(
    f"  bounds: p99 TTFT {bounds.ttft_ms:.3f} ms, p99 TPOT {bounds.tpot_ms:.3f} ms "
    f"(unloaded batch 1: TTFT p50 {unloaded['ttft_ms']['p50']:.3f} ms, TPOT p50 "
    f"{unloaded['tpot_ms']['p50']:.3f} ms); {quick.slots} slots"
  )
  run_settings = lm_loadgen.TokenRunSettings(
    duration_ms=0, single_stream_duration_ms=0, offline_samples=min(len(items), 256),
    seed=quick.seed,
  )  # fmt: skip
  with tempfile.TemporaryDirectory(prefix="train_vs_infer_loadgen_") as root:
    offline = lm_loadgen.run_tokens(
      engine, items, "Offline", "continuous", os.path.join(root, "Offline"), bounds, run_settings
    )

    trials: list[float] = []

    def run_at(qps: float) -> dict[str, Any]:
      trials.append(qps)
      trial = os.path.join(root, "Server", f"trial_{len(trials):02d}_{qps:.0f}qps")
      r = lm_loadgen.run_tokens(
        engine, items, "Server", "continuous", trial, bounds, run_settings, target_qps=qps
      )
      log(
        f"  Server at {qps:,.1f} QPS: {r['result']}, TTFT p99 {r['ttft_p99_ms'] or 0:.3f} ms, "
        f"TPOT p99 {r['tpot_p99_ms'] or 0:.3f} ms"
      )
      return r

    # Short runs as serve_lm.py --quick makes them, here of at most 5 s (LoadGen's 662-query floor
    # at the least QPS, 662 / 5), 3 runs, a bracket within 50 %.
    search = lm_loadgen.search_server_qps(
      run_at,
      start_qps=0.5 * offline["loadgen"]["samples_per_s"],
      min_qps=lm_loadgen.EARLY_STOPPING_MIN_QUERIES["Server"] / 5.0,
      growth=2.0,
      rel_tolerance=0.5,
      max_runs=3,
    )
  best = search["best"]
  mean_out = workload["output_tokens"]["mean"]
  qps = search["qps"] if best is not None else None
  tokens_per_s = None if qps is None else qps * mean_out
  return {
    "how": "scripts/serve_lm.py --quick, continuous batching, server-tier bounds",
    "tokens_per_s_is": "Server QPS within the bounds x the mix's mean output tokens",
    "engine": {"slots": engine.slots, "prefill_buckets": list(engine.prefill_buckets)},
    "workload": workload,
    "unloaded": unloaded,
    "bounds": {
      "ttft_ms": bounds.ttft_ms,
      "tpot_ms": bounds.tpot_ms,
      "tier": bounds.tier,
      "how": bounds.how,
    },  # fmt: skip
    "offline_tokens_per_s": offline["loadgen"]["tokens_per_s"],
    "server_qps": qps,
    "valid": best is not None,
    "min_qps_tried": search["min_qps"],
    "bracket": search["bracket"],
    "ttft_p99_ms": None if best is None else best["ttft_p99_ms"],
    "tpot_p99_ms": None if best is None else best["tpot_p99_ms"],
    "goodput": None if best is None else best["goodput"],
    "loadgen_completed_tokens_per_s": None if best is None else best["loadgen"]["tokens_per_s"],
    "tokens_per_s": tokens_per_s,
    "seconds_per_token": None if not tokens_per_s else 1 / tokens_per_s,
    "trials": [
      {
        "target_qps": t["target_qps"],
        "valid": t["valid"],
        "ttft_p99_ms": t["ttft_p99_ms"],
        "tpot_p99_ms": t["tpot_p99_ms"],
        "goodput": t["goodput"],
      }
      for t in search["trials"]
    ],  # fmt: skip
    "compilations_after_warmup": engine.compilations_after_warmup,
  }


def trial_metrics(report: dict[str, Any]) -> dict[str, float]:
  """The LM report's headline as the run's HParams trial metrics."""
  from research.studies.serve_lm import metrics_at

  return metrics_at(report, TRIAL_METRICS)


# ----------------------------------------------------------------------------------------------
# report.md and its figure


def markdown(r: dict[str, Any], provenance_md: str) -> str:
  """lm_costs' report (loss, FLOPs per token, time, break-even) and the serving section with the
  break-evens in tokens side by side."""
  from research.studies import lm_costs

  return "\n".join([lm_costs.markdown(r, provenance_md), *_serving_section(r)])


def _tokens(x: float | None) -> str:
  return "-" if x is None else f"{x:,.0f}"


def _serving_section(r: dict[str, Any]) -> list[str]:
  from research.outputs import markdown_table

  s, be, t = r["serving"], r["break_even_tokens"], r["training"]
  g, u, w = r["generation"], s["unloaded"], s["workload"]
  best = g["best_batched"]
  if s["valid"]:
    served = (
      f"Continuous batching ({s['engine']['slots']} slots) holds **{s['server_qps']:,.1f} "
      f"requests/s** (Server, Poisson arrivals) with p99 TTFT {s['ttft_p99_ms']:.3f} ms and p99 "
      f"TPOT {s['tpot_p99_ms']:.3f} ms; at {w['output_tokens']['mean']:.1f} output tokens per "
      f"request (the mix's mean) that is **{s['tokens_per_s']:,.0f} tokens/s within the "
      f"bounds**, {1e6 * s['seconds_per_token']:.2f} µs of serving per token (LoadGen counted "
      f"{s['loadgen_completed_tokens_per_s'] or 0:,.0f} completed tokens/s in that run; goodput "
      f"{s['goodput'] or 0:,.1f} requests/s within both bounds)."
    )
  else:
    served = (
      f"No load tried (down to {s['min_qps_tried']:,.1f} QPS) met the bounds: no tokens/s "
      f"within them, and no break-even within them."
    )
  rows = [
    ["FLOPs: training FLOPs / decode FLOPs per token", _tokens(be["flops"])],
    [f"time at batch 1: training s / TPOT p50 ({g['realtime']['tpot']['p50_ms']:.3f} ms)",
     _tokens(be["seconds_realtime"])],
    [f"time at the best batch ({best['batch_size']}): training s x "
     f"{best['tokens_per_second']:,.0f} tokens/s", _tokens(be["seconds_batched"])],
    [f"served within the bounds: training s x {_tokens(s['tokens_per_s'])} tokens/s",
     _tokens(be[WITHIN_BOUNDS])],
  ]  # fmt: skip
  return [
    "## Served within the bounds",
    "",
    f"{w['count']} requests (seed {w['seed']}), prompts {w['prompt_tokens']['min']}-"
    f"{w['prompt_tokens']['max']} tokens, outputs {w['output_tokens']['min']}-"
    f"{w['output_tokens']['max']} ({w['distribution']}). Bounds: p99 TTFT ≤ "
    f"{s['bounds']['ttft_ms']:.3f} ms, p99 TPOT ≤ {s['bounds']['tpot_ms']:.3f} ms. How: "
    f"{s['bounds']['how']}. Measured as `scripts/serve_lm.py --quick` measures (short runs, "
    f"three search steps; the full search is serve_lm.py's), continuous batching only. Engine "
    f"unloaded, batch 1: TTFT p50 {u['ttft_ms']['p50']:.3f} ms, TPOT p50 "
    f"{u['tpot_ms']['p50']:.3f} ms. Offline: {s['offline_tokens_per_s']:,.0f} tokens/s.",
    "",
    served,
    "",
    "## Break-even in tokens served",
    "",
    f"Training took {t['train_seconds']:.1f} s and {t['total_flops']:.3g} FLOPs. Serving has "
    f"cost as much after:",
    "",
    markdown_table(["measure", "tokens"], rows, align="lr"),
    "",
  ]


def figure_files(r: dict[str, Any], path: str) -> dict[str, bytes]:
  """The LM report's figure (time per token; break-even in tokens), PNG at `path`, SVG and PDF
  beside it: path -> bytes."""
  from research.bench import figures
  from research.studies.cost_report import si

  t, g, s, be = r["training"], r["generation"], r["serving"], r["break_even_tokens"]
  best = g["best_batched"]
  fig, (a, b) = figures.plt.subplots(1, 2, figsize=(14, 5))
  labels = ["training\n(per token trained)", "generation, batch 1\n(TPOT p50)",
            f"generation, batch {best['batch_size']}\n(best batch)"]  # fmt: skip
  us = [1e6 / t["tokens_per_second"], g["realtime"]["tpot"]["p50_ms"] * 1e3,
        1e6 / best["tokens_per_second"]]  # fmt: skip
  colors = ["C3", "C0", "C2"]
  if s["seconds_per_token"]:
    labels.append("served within\nthe p99 bounds")
    us.append(1e6 * s["seconds_per_token"])
    colors.append("C1")
  figures.bar_panel(
    a, labels, us, lambda v: f"{v:.3g} µs", colors=colors,
    xlabel="µs per token (linear)", title="time per token on this machine",
  )  # fmt: skip
  counts = {
    "FLOPs (decode vs the training run)": (be["flops"], "C4", "break_even_flops"),
    "seconds, batch 1": (be["seconds_realtime"], "C0", "break_even_seconds_realtime"),
    f"seconds, batch {best['batch_size']}": (be["seconds_batched"], "C2", "break_even_batched"),
  }
  if be[WITHIN_BOUNDS]:
    counts["seconds, within the bounds"] = (be[WITHIN_BOUNDS], "C1", "break_even_within_bounds")
  figures.break_even_panel(
    b, counts, headline="seconds, within the bounds" if be[WITHIN_BOUNDS] else None,
    title="break-even: tokens served that cost what training did", unit="tokens",
  )  # fmt: skip
  fig.suptitle(f"{r['experiment']} ({si(r['params'])} params): training vs serving, in tokens")
  fig.tight_layout()
  return figures.figure_files(fig, path)
