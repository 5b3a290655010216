"""A trained language model served as LLM servers are, measured by the MLPerf LLM rules.

One command (scripts/serve_lm.py) on a trained LM run writes OUT/:
  serve.json, serve.md     the numbers and the report
  token_latencies.json     per-sample TTFT and TPOT (ms) of the runs the CDFs draw
  token_cdfs.*             TTFT and TPOT CDFs: unloaded, and each mode at its highest VALID load
  load.*                   tokens/s, p99 TTFT and p99 TPOT against offered load, static against
                           continuous, bounds drawn
  load_loose.*             the same at the loose bounds (below)
  roofline.*               each phase against this machine's measured peaks (bench/roofline.py),
                           decode at each batch of the decode sweep
  loadgen/                 LoadGen's own logs, one directory per run
and the headline as the run's TensorBoard trial metrics (`trial/tokens_*`).

The order of work: checks that need no measuring (the run's kind, where OUT goes, the request
mix against the context, the prompts file), the run restored and the engine built (the memory
budget refuses too many slots there), the unloaded batch-1 latency, the bounds from it (refused
when below it), then LoadGen: SingleStream, Offline in both modes, the Server QPS search in both
modes, then again at the loose bounds; the decode sweep and roofline; figures; everything into a
copy of OUT that replaces it whole at the end (research.outputs.replacing), so a failure leaves
OUT as it was.

Two comparisons of static against continuous batching. The headline is at the MLPerf-scaled
bounds (about 15 ms TTFT, 3.2 ms TPOT on lm_markov_tiny): there a static batch runs to its longest
output (~64 steps), longer than the TTFT bound, so static meets them at no load down to the search
floor and only a lower bound on the ratio exists. The second is at loose bounds both modes can
meet, chosen by one rule: both headline bounds times k, the smallest power of two with k x each
bound >= 2x static's own p99 at the lightest load it ran at (`lm_loadgen.loose_factor`), k doubled
while static still meets them at no load. Its ratio (`continuous_over_static.server_qps_loose`)
is a finite number. Rough cost: two more Server searches, about 1 min of the default run (rough
estimate from the searches' run lengths; about 1.5 min more for each doubling of k).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

from research.outputs import OutputError
from research.studies import serve_lm_report
from research.studies.serve_lm_report import ms

SERVE_FILES = ("serve.json", "serve.md", "token_latencies.json", "loadgen")
TRIAL_METRICS = {  # serve.json path -> TensorBoard trial metric (after trial/test_*, by tag)
  ("modes", "continuous", "server", "qps"): "trial/tokens_server_qps_continuous",
  ("modes", "static", "server", "qps"): "trial/tokens_server_qps_static",
  ("continuous_over_static", "server_qps"): "trial/tokens_server_qps_ratio",
  # when static met the bounds at no load tried: continuous's QPS / the lowest static load tried
  ("continuous_over_static", "server_qps_at_least"): "trial/tokens_server_qps_ratio_at_least",
  # the second comparison, at bounds both modes meet (loose_bounds: k x the headline's)
  ("modes", "continuous", "server_loose", "qps"): "trial/tokens_server_qps_continuous_loose",
  ("modes", "static", "server_loose", "qps"): "trial/tokens_server_qps_static_loose",
  ("continuous_over_static", "server_qps_loose"): "trial/tokens_server_qps_ratio_loose",
  ("loose_bounds", "factor"): "trial/tokens_loose_bound_factor",
  ("modes", "continuous", "server", "goodput"): "trial/tokens_goodput_continuous",
  ("modes", "continuous", "offline", "tokens_per_s"): "trial/tokens_offline_per_s",
  ("bounds", "ttft_ms"): "trial/tokens_ttft_bound_ms",
  ("bounds", "tpot_ms"): "trial/tokens_tpot_bound_ms",
}


@dataclasses.dataclass(frozen=True)
class ServeSettings:
  """What serve_lm measures. Lengths None: `lm_workload.default_spec` for the model's context.
  `quick`: short runs and few search steps, Server runs of at most 2 s (tests, smoke runs), not
  results."""

  slots: int = 32  # at a Server load that meets the bounds, about 10-25 requests run at once
  prefill_batch: int = 8  # prompts of one bucket per prefill call (DecodeEngine.prefill_batch)
  memory_budget_mb: float | None = None
  prompt_tokens: tuple[int, int] | None = None
  output_tokens: tuple[int, int] | None = None
  requests: int = 1024
  seed: int = 0
  prompts_file: str | None = None
  tier: str = "server"
  ttft_bound_ms: float | None = None
  tpot_bound_ms: float | None = None
  static_wait_fraction: float = 0.5  # of the TTFT bound: the longest a partial static batch waits
  decode_batches: tuple[int, ...] = (1, 8, 32, 64, 128)
  checkpoint: str | int = "latest"
  threads: int = 1
  quick: bool = False


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def check_inputs(workdir: str, out: str, settings: ServeSettings):
  """Everything that needs no measuring, before any work: the run is a language model, OUT may
  be written, the mix fits the context. Returns (config, workload spec)."""
  from research.bench import lm_workload
  from research.bench.lm_loadgen import bound_ratios
  from research.outputs import check_output_dir
  from research.serving.run_kind import require_language_model

  config = require_language_model(workdir, "scripts/serve_lm.py")
  run, target = os.path.realpath(workdir), os.path.realpath(out)
  if run == target or run.startswith(target.rstrip(os.sep) + os.sep):
    raise OutputError(
      f"--out {out} is the run {workdir} itself (or holds it); serve_lm.py replaces its --out "
      f"directory whole: give a directory of its own, e.g. {os.path.join(workdir, 'serving')}"
    )
  inputs = [("--workdir", workdir)]
  if settings.prompts_file:
    inputs.append(("--prompts", settings.prompts_file))
  check_output_dir(out, "--out", names=SERVE_FILES, inputs=inputs, runs=[workdir])
  bound_ratios(settings.tier)
  n_ctx = int(config.model.n_ctx)
  default = lm_workload.default_spec(n_ctx, settings.requests, settings.seed)
  spec = dataclasses.replace(
    default,
    prompt_tokens=tuple(settings.prompt_tokens or default.prompt_tokens),
    output_tokens=tuple(settings.output_tokens or default.output_tokens),
  )
  lm_workload.check_spec(spec, n_ctx)
  vocab = config_vocab(config)
  if settings.prompts_file and vocab is not None:  # else checked once the run is restored
    lm_workload.read_prompts(settings.prompts_file, vocab, n_ctx, spec.output_tokens[1])
  return config, spec


def config_vocab(config) -> int | None:
  """The vocabulary size when the config alone says it (a Markov source), else None (a text
  corpus: its characters, known once the run is restored)."""
  data = config.get("data") or {}
  return int(data.get("vocab_size", 32)) if data.get("name") == "markov" else None


def check_memory(config, settings: ServeSettings) -> None:
  """GenerationError naming the flags when the params and `settings.slots` KV caches do not fit
  `settings.memory_budget_mb`; from the config's shapes alone (nothing restored, nothing run)."""
  import jax
  import jax.numpy as jnp

  from research.models import build_model, tree_bytes
  from research.serving.decode_engine import kv_cache_bytes
  from research.serving.generate import GenerationError

  vocab = config_vocab(config)
  if settings.memory_budget_mb is None or vocab is None:
    return  # (without a known vocabulary the engine checks the budget itself)
  model = build_model(config.model, vocab)
  n_ctx = int(config.model.n_ctx)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, n_ctx), jnp.int32))
  params, per_slot = tree_bytes(shapes), kv_cache_bytes(model)["per_slot"]
  budget = settings.memory_budget_mb * 2**20
  fit = max(0, int((budget - params) // per_slot))
  if settings.slots > fit:
    need = (params + settings.slots * per_slot) / 2**20
    raise GenerationError(
      f"--slots {settings.slots} need {need:.2f} MiB (params {params / 2**20:.2f} MiB and a "
      f"{per_slot / 2**10:.1f} KiB KV cache per slot) but --memory-budget-mb "
      f"{settings.memory_budget_mb:g} holds {fit}; "
      + (f"use --slots {fit} or fewer, or " if fit else "")
      + f"raise --memory-budget-mb to {need:.2f}"
    )


def serve_lm(
  workdir: str,
  out: str,
  settings: ServeSettings,
  argv: Sequence[str],
  log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
  """Measures and writes OUT (see the module doc); returns serve.json's content."""
  from research import dashboard, workdir_lock
  from research.outputs import writable

  config, spec = check_inputs(workdir, out, settings)
  check_memory(config, settings)
  read_only = not all(
    writable(d) for d in (workdir, dashboard.summary_dir(workdir)) if os.path.isdir(d)
  )
  with contextlib.nullcontext() if read_only else workdir_lock.hold([workdir]):
    return _serve_and_write(workdir, out, config, spec, settings, argv, read_only, log)


def _serve_and_write(workdir, out, config, spec, settings, argv, read_only, log) -> dict[str, Any]:
  from research import dashboard
  from research.bench import lm_workload
  from research.bench.lm_serving_figures import plot_load, plot_token_cdfs
  from research.models import count_params, tree_bytes
  from research.outputs import json_text, replacing, write_text
  from research.provenance import provenance
  from research.serving.decode_engine import DecodeEngine, for_serving, kv_cache_bytes, max_slots
  from research.serving.restore import load_run

  t0 = time.perf_counter()
  run = load_run(workdir, settings.checkpoint)
  vocab, n_ctx = int(run.num_classes), int(run.model.n_ctx)
  prompts = None
  if settings.prompts_file:
    prompts = lm_workload.read_prompts(settings.prompts_file, vocab, n_ctx, spec.output_tokens[1])
  items = lm_workload.make_requests(spec, vocab, prompts)
  workload = lm_workload.describe(spec, items, settings.prompts_file)
  model = for_serving(run.model)
  budget = None if settings.memory_budget_mb is None else int(settings.memory_budget_mb * 2**20)
  longest_prompt = max(len(w.prompt) for w in items)
  prefill_buckets = prefill_buckets_for(n_ctx, longest_prompt)
  engine = DecodeEngine(
    model,
    run.params,
    settings.slots,
    prefill_buckets=prefill_buckets,
    memory_budget_bytes=budget,
    prefill_batch=settings.prefill_batch,
  )
  # Silent until the bounds pass (bad input is one line alone). The batch-1 engine compiles
  # first: compilations_after_warmup counts the whole process's since the serving engine's.
  measured = _measure(engine, model, run.params, workload, settings)
  compile_s = engine.warmup()
  log(
    f"[serve_lm] {config.experiment} step {run.step}: {len(items)} requests, prompts "
    f"{workload['prompt_tokens']['min']}-{workload['prompt_tokens']['max']} tokens, outputs "
    f"{workload['output_tokens']['min']}-{workload['output_tokens']['max']} "
    f"({workload['distribution']}); {settings.slots} slots"
  )
  log(measured["line"])
  kv = kv_cache_bytes(model)
  params_bytes = tree_bytes(run.params)
  with replacing(out, remake=("loadgen",)) as staging:
    result = _run_loadgen(engine, items, measured, settings, staging, log)
    result["compilations_after_warmup"] = engine.compilations_after_warmup  # (roofline compiles)
    result["decode_sweep"], result["roofline"] = _roofline(
      model, run.params, settings, spec, staging, log
    )
    meta = provenance(
      argv,
      workdir=os.path.abspath(workdir),
      step=run.step,
      experiment=config.experiment,
      wall_seconds=time.perf_counter() - t0,
      tensorboard_summary=None if read_only else dashboard.summary_dir(workdir),
    )
    report = {
      "provenance": meta,
      "run": {
        "workdir": os.path.abspath(workdir),
        "experiment": config.experiment,
        "step": run.step,
        "params": count_params(run.params),
        "model": {k: getattr(run.model, k) for k in ("n_layer", "d_model", "n_head", "n_ctx")},
      },
      "settings": dataclasses.asdict(settings),
      "workload": workload,
      "engine": {
        "slots": engine.slots,
        "prefill_buckets": list(engine.prefill_buckets),
        "prefill_batch_sizes": list(engine.prefill_batch_sizes),
        "decode_buckets": list(engine.decode_buckets),
        "compile_seconds": float(sum(sum(v.values()) for v in compile_s.values())),
        "cache_layout": getattr(model, "cache_layout", None),
      },
      "kv_cache": {
        "bytes_per_token": kv["per_token"],
        "bytes_per_slot": kv["per_slot"],
        "n_ctx": kv["n_ctx"],
        "params_bytes": params_bytes,
        "memory_budget_bytes": budget,
        "slots_in_budget": None if budget is None else max_slots(model, budget, run.params),
        "slots_in_1_gib": max_slots(model, 2**30, run.params),
      },
      "unloaded": measured["unloaded"],
      "bounds": measured["bounds"],
      **result,
      "loadgen_logs": os.path.join(out, "loadgen"),
    }
    report = _renamed(report, staging, os.path.abspath(out))
    samples = report.pop("per_sample_ms")
    figures = _figures(report, samples, staging, plot_token_cdfs, plot_load)
    report["figures"] = [os.path.join(os.path.abspath(out), f) for f in figures]
    text = serve_lm_report.markdown(report)
    write_text(os.path.join(staging, "serve.json"), json_text(report))
    write_text(os.path.join(staging, "serve.md"), text + "\n")
    write_text(os.path.join(staging, "token_latencies.json"), json_text(samples))
  if read_only:
    log(f"[serve_lm] workdir {workdir} is read-only: no TensorBoard summary written")
  else:
    pngs = [os.path.join(out, f) for f in figures if f.endswith(".png")]
    dashboard.publish_report(workdir, run.step, "serve", text, pngs, trial_metrics(report))
  log(f"[serve_lm] wrote {out} in {time.perf_counter() - t0:.0f} s")
  return report


def prefill_buckets_for(n_ctx: int, longest: int) -> tuple[int, ...]:
  """Powers of two from 8 up to the mix's longest prompt (prefill pads up to one)."""
  out, b = [], 8
  while b < longest:
    out.append(b)
    b *= 2
  return tuple(sorted({*out, min(b, n_ctx)}))


def _measure(engine, model, params, workload, settings) -> dict[str, Any]:
  """The unloaded batch-1 latency and the bounds it gives; refused bounds raise here, before
  anything is written."""
  from research.bench import lm_loadgen

  unloaded = lm_loadgen.measure_unloaded(
    model,
    params,
    workload["prompt_tokens"]["max"],
    workload["output_tokens"]["max"],
    engine.vocab,
    repeats=4 if settings.quick else 32,
    prefill_buckets=engine.prefill_buckets,
    seed=settings.seed,
  )
  bounds = lm_loadgen.derive_bounds(
    unloaded, settings.tier, settings.ttft_bound_ms, settings.tpot_bound_ms
  )
  lm_loadgen.check_reachable(bounds, unloaded)
  line = (
    f"[serve_lm] unloaded batch 1: TTFT p50 {unloaded['ttft_ms']['p50']:.3f} ms, TPOT p50 "
    f"{unloaded['tpot_ms']['p50']:.3f} ms -> p99 bounds TTFT {bounds.ttft_ms:.3f} ms, TPOT "
    f"{bounds.tpot_ms:.3f} ms ({bounds.tier})"
  )
  return {
    "line": line,
    "unloaded": unloaded,
    "bounds_obj": bounds,
    "bounds": {
      **dataclasses.asdict(bounds),
      "ratios": lm_loadgen.bound_ratios(bounds.tier),
      "mlperf_llama2_70b_ms": lm_loadgen.MLPERF_LLAMA2_70B_BOUNDS_MS[bounds.tier],
      "llama2_70b_unloaded_ms": lm_loadgen.MLPERF_LLAMA2_70B_UNLOADED_MS,
      "static_wait_ms": settings.static_wait_fraction * bounds.ttft_ms,
    },
  }


def _slim(record: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in record.items() if k != "per_sample_ms"}


def _run_loadgen(engine, items, measured, settings, staging, log) -> dict[str, Any]:
  """SingleStream, Offline per mode, and the Server search per mode; logs under
  staging/loadgen/<mode>/<scenario>."""
  from research.bench import lm_loadgen

  bounds = measured["bounds_obj"]
  quick = settings.quick
  run_settings = lm_loadgen.TokenRunSettings(
    duration_ms=0 if quick else 2000,
    single_stream_duration_ms=0 if quick else 1000,
    offline_samples=min(len(items), 256) if quick else None,
    static_wait_s=settings.static_wait_fraction * bounds.ttft_ms / 1e3,
    seed=settings.seed,
  )
  root = os.path.join(staging, "loadgen")
  unloaded = measured["unloaded"]
  mean_out = sum(w.max_new_tokens for w in items) / len(items)
  e2e_ms = unloaded["ttft_ms"]["p50"] + (mean_out - 1) * unloaded["tpot_ms"]["p50"]
  single = lm_loadgen.run_tokens(
    engine, items, "SingleStream", "continuous", os.path.join(root, "SingleStream"), bounds,
    run_settings, expected_latency_ms=0.5 * e2e_ms,
  )  # fmt: skip
  log(
    f"[serve_lm] SingleStream: TTFT p99 {single['ttft_p99_ms']:.3f} ms, TPOT p99 "
    f"{single['tpot_p99_ms']:.3f} ms ({single['result']})"
  )
  per_sample = {"single stream (unloaded)": single["per_sample_ms"]}
  modes: dict[str, Any] = {}
  starts: dict[str, float] = {}
  # the longest Server run the search makes (its floor: 662 queries / this); --quick: 2 s, so a
  # mode that meets the bounds at no load costs a few seconds, not 3 runs down to 132 QPS
  max_run_s = 2.0 if quick else 30.0
  min_qps = lm_loadgen.EARLY_STOPPING_MIN_QUERIES["Server"] / max_run_s
  for mode in ("continuous", "static"):
    offline = lm_loadgen.run_tokens(
      engine, items, "Offline", mode, os.path.join(root, mode, "Offline"), bounds, run_settings
    )
    log(
      f"[serve_lm] Offline {mode}: {offline['loadgen']['tokens_per_s']:,.0f} tokens/s, "
      f"{offline['loadgen']['samples_per_s']:,.0f} requests/s"
    )
    search = _server_search(
      engine, items, mode, bounds, run_settings, os.path.join(root, mode, "Server"),
      0.5 * offline["loadgen"]["samples_per_s"], min_qps, quick, log,
    )  # fmt: skip
    shown = search.pop("shown")
    per_sample[f"{mode} at {shown['target_qps']:,.0f} QPS"] = shown["per_sample_ms"]
    starts[mode] = 0.5 * offline["loadgen"]["samples_per_s"]
    modes[mode] = {
      "server": search,
      "offline": {
        "tokens_per_s": offline["loadgen"]["tokens_per_s"],
        "requests_per_s": offline["loadgen"]["samples_per_s"],
        "valid": offline["valid"],
        "log_dir": offline["log_dir"],
      },
    }
  cont, static = modes["continuous"]["server"], modes["static"]["server"]
  ratio, at_least = None, None
  if static["qps"] > 0:
    ratio = cont["qps"] / static["qps"]
  elif static["bracket"]["invalid_qps"]:
    at_least = cont["qps"] / static["bracket"]["invalid_qps"]
  log(
    f"[serve_lm] Server QPS within the bounds: continuous {cont['qps']:,.1f}, static "
    f"{static['qps']:,.1f}"
    + (f" ({ratio:.2f}x)" if ratio else f" (continuous > {at_least:.1f}x)" if at_least else "")
  )
  loose = _loose_comparison(
    engine, items, bounds, run_settings, root, starts, min_qps, settings, modes, log
  )
  return {
    "single_stream": _slim(single),
    "modes": modes,
    "loose_bounds": loose,
    "continuous_over_static": {
      "server_qps": ratio,
      "server_qps_at_least": at_least,
      "server_qps_loose": loose["ratio"],
    },
    "per_sample_ms": per_sample,
  }


def _server_search(
  engine, items, mode, bounds, run_settings, trial_dir, start_qps, min_qps, quick, log
) -> dict[str, Any]:
  """The Server QPS search of one mode under `bounds`, trials logged under `trial_dir`: the
  modes.<mode>.server record, and 'shown' (the run its p99s come from)."""
  from research.bench import lm_loadgen

  def run_at(qps: float) -> dict[str, Any]:
    n = len(os.listdir(trial_dir)) if os.path.isdir(trial_dir) else 0
    r = lm_loadgen.run_tokens(
      engine, items, "Server", mode, os.path.join(trial_dir, f"trial_{n:02d}_{qps:.0f}qps"),
      bounds, run_settings, target_qps=qps,
    )  # fmt: skip
    log(
      f"[serve_lm] Server {mode} at {qps:,.1f} QPS: {r['result']}, TTFT p99 "
      f"{ms(r['ttft_p99_ms'])}, TPOT p99 {ms(r['tpot_p99_ms'])}, goodput "
      f"{r['goodput'] or 0:,.1f} req/s"
    )
    return r

  search = lm_loadgen.search_server_qps(
    run_at,
    start_qps=start_qps,
    min_qps=min_qps,
    growth=2.0,
    rel_tolerance=0.5 if quick else 0.1,
    max_runs=3 if quick else 10,
  )
  best = search["best"]
  shown = best or min(search["trials"], key=lambda t: t["target_qps"])
  return {
    "qps": search["qps"],
    "valid": best is not None,
    "ttft_p99_ms": shown["ttft_p99_ms"],
    "tpot_p99_ms": shown["tpot_p99_ms"],
    "goodput": shown["goodput"],
    "at_target_qps": shown["target_qps"],
    "bracket": search["bracket"],
    "min_qps_tried": search["min_qps"],
    "trials": [_trial_row(t) for t in search["trials"]],
    "shown": shown,
  }


LOOSE_MAX_TRIES = 3  # k, 2k, 4k: at most two more static searches when static still fails


def _loose_comparison(
  engine, items, bounds, run_settings, root, starts, min_qps, settings, modes, log
) -> dict[str, Any]:
  """Both modes' Server search again at bounds static batching can meet, so the ratio is a
  finite number: both MLPerf-scaled bounds times k (`lm_loadgen.loose_factor`: the smallest
  power of two giving 2x static's p99 at the lightest load it ran at), k doubled while static
  still meets them at no load (at most LOOSE_MAX_TRIES). Static first, so continuous runs once,
  at the final k. Fills modes.<mode>.server_loose; returns serve.json's `loose_bounds`."""
  from research.bench import lm_loadgen

  static = modes["static"]["server"]
  lightest = min(static["trials"], key=lambda t: t["target_qps"])
  p99 = {"ttft": lightest["ttft_p99_ms"], "tpot": lightest["tpot_p99_ms"]}
  k = lm_loadgen.loose_factor(bounds, p99)
  rule = (
    f"the MLPerf-scaled bounds times k, the smallest power of two with k x each bound >= "
    f"{lm_loadgen.LOOSE_HEADROOM:g}x static's p99 at its lightest load under them "
    f"({lightest['target_qps']:,.1f} QPS: TTFT {ms(p99['ttft'])}, TPOT {ms(p99['tpot'])}), "
    f"doubled (at most {LOOSE_MAX_TRIES - 1} times) while static is VALID at no load tried"
  )
  tried = []
  for attempt in range(LOOSE_MAX_TRIES):
    last = attempt == LOOSE_MAX_TRIES - 1
    tried.append(k)
    loose = lm_loadgen.scaled_bounds(bounds, k, rule)
    if k == 1:  # the headline's own searches are the loose ones
      found = {m: {**modes[m]["server"], "same_as_headline": True} for m in modes}
      break
    wait_s = settings.static_wait_fraction * loose.ttft_ms / 1e3
    run_settings_k = dataclasses.replace(run_settings, static_wait_s=wait_s)
    log(
      f"[serve_lm] loose bounds ({k}x): p99 TTFT {loose.ttft_ms:.3f} ms, TPOT "
      f"{loose.tpot_ms:.3f} ms"
    )
    found = {}
    for mode in ("static", "continuous"):
      found[mode] = _server_search(
        engine, items, mode, loose, run_settings_k,
        os.path.join(root, f"loose_{k}x", mode, "Server"), starts[mode], min_qps,
        settings.quick, log,
      )  # fmt: skip
      found[mode].pop("shown")
      if not found[mode]["valid"] and not last:
        break  # static met none: double k (continuous not run at this k)
    if found["static"]["valid"] or last:
      break
    k *= 2
  bounds_ms = {
    "ttft_ms": loose.ttft_ms,
    "tpot_ms": loose.tpot_ms,
    "static_wait_ms": settings.static_wait_fraction * loose.ttft_ms,
  }
  for mode, search in found.items():
    modes[mode]["server_loose"] = {**search, "bounds": bounds_ms, "factor": k}
  ratio = None
  if "continuous" in found and found["static"]["qps"] > 0:
    ratio = found["continuous"]["qps"] / found["static"]["qps"]
  log(
    f"[serve_lm] Server QPS within the loose bounds ({k}x): "
    + ", ".join(f"{m} {found[m]['qps']:,.1f}" for m in found)
    + (f" ({ratio:.2f}x)" if ratio else "")
  )
  return {**bounds_ms, "factor": k, "factors_tried": tried, "rule": rule, "ratio": ratio}


def _trial_row(r: dict[str, Any]) -> dict[str, Any]:
  return {
    "target_qps": r["target_qps"],
    "valid": r["valid"],
    "ttft_p99_ms": r["ttft_p99_ms"],
    "tpot_p99_ms": r["tpot_p99_ms"],
    "tokens_per_s": r["loadgen"]["tokens_per_s"],
    "completed_requests_per_s": r["loadgen"]["samples_per_s"],
    "goodput": r["goodput"],
    "invalid_reason": r["loadgen"]["invalid_reason"],
    "log_dir": r["log_dir"],
    "wall_s": r["wall_s"],
  }


def _roofline(model, params, settings, spec, staging, log) -> tuple[list, dict]:
  """The decode sweep and the per-phase roofline (train step, prefill, decode per batch) from
  research/bench/roofline.py, peaks measured in the same run; the sweep is its decode points
  (every slot busy: a serving engine's best case, beside the loaded runs above)."""
  from research.bench import roofline

  n_ctx = int(model.n_ctx)
  batches = (1, 4) if settings.quick else tuple(settings.decode_batches)
  prompt, new = min(16, n_ctx // 4), min(64, n_ctx // 2)
  if settings.quick:  # fewer decode buckets to compile per engine (smoke runs, tests)
    new = max(2, min(new, prompt))
  log(f"[serve_lm] roofline: measuring peaks, decode sweep at batches {batches}")
  quick = {"matmul_n": 256, "triad_elements": 2**20, "cache_triad_elements": 2**16, "repeats": 3}
  peaks = roofline.measure_peaks(settings.threads, **(quick if settings.quick else {}))
  points = roofline.lm_phase_points(
    model, params, peaks, decode_batches=batches, prefill_tokens=spec.prompt_tokens[1],
    threads=settings.threads, prompt_tokens=prompt, new_tokens=new,
    repeats=1 if settings.quick else 3,
    **({"xla_check": False} if settings.quick else {}),  # --quick: no XLA cross-check compiles
  )  # fmt: skip
  roofline.plot_roofline(points, peaks, os.path.join(staging, "roofline.png"))
  sweep = [p for p in points if p["phase"] == "decode"]
  return sweep, {"peaks": peaks, "points": points, "crossover": roofline.crossover(points, peaks)}


def _figures(report, samples, staging, plot_token_cdfs, plot_load) -> list[str]:
  """The figures, written into `staging`; their file names."""
  from research.bench.figures import figure_paths

  b = report["bounds"]
  title = f"{report['run']['experiment']} (step {report['run']['step']})"
  plot_token_cdfs(
    samples, b["ttft_ms"], b["tpot_ms"], os.path.join(staging, "token_cdfs.png"),
    title=f"{title}: token latencies, unloaded and at each mode's highest VALID load",
  )  # fmt: skip
  searches = {m: report["modes"][m]["server"] for m in ("continuous", "static")}
  plot_load(
    searches, b["ttft_ms"], b["tpot_ms"], os.path.join(staging, "load.png"),
    title=f"{title}: Server scenario, static against continuous batching",
  )  # fmt: skip
  loose = {m: report["modes"][m]["server_loose"] for m in ("continuous", "static")}
  lb = report["loose_bounds"]
  plot_load(
    loose, lb["ttft_ms"], lb["tpot_ms"], os.path.join(staging, "load_loose.png"),
    title=f"{title}: Server scenario at the loose bounds ({lb['factor']}x), both modes",
  )  # fmt: skip
  stems = ("token_cdfs.png", "load.png", "load_loose.png", "roofline.png")
  return [os.path.basename(p) for stem in stems for p in figure_paths(stem)]


def _renamed(obj: Any, staging: str, out: str) -> Any:
  """`obj` with every path under the temporary `staging` named under `out`, where it will be."""
  if isinstance(obj, str) and (obj == staging or obj.startswith(staging + os.sep)):
    return out + obj[len(staging) :]
  if isinstance(obj, dict):
    return {k: _renamed(v, staging, out) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_renamed(v, staging, out) for v in obj]
  return obj


def metrics_at(report: dict[str, Any], paths: dict[tuple, str]) -> dict[str, float]:
  """`paths` (a key path into `report` -> a metric tag) as trial metrics; a path that is missing,
  not a number or not finite is left out (TensorBoard takes floats only)."""
  out = {}
  for path, tag in paths.items():
    value: Any = report
    for key in path:
      value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
      out[tag] = float(value)
  return out


def trial_metrics(report: dict[str, Any]) -> dict[str, float]:
  """The headline as the run's HParams trial metrics."""
  return metrics_at(report, TRIAL_METRICS)
