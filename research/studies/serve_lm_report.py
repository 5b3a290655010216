"""serve.md: the report a reader of scripts/serve_lm.py checks, rendered from serve.json alone."""

from __future__ import annotations

from typing import Any


def ms(x: float | None) -> str:
  """A latency in ms with three decimals, or '-' where none was measured."""
  return "-" if x is None else f"{x:.3f} ms"


def markdown(r: dict[str, Any]) -> str:
  """The report a reader checks: the mix, the bounds and how they were chosen, each mode's
  Server QPS and goodput within them, Offline tokens/s, the memory side and the roofline."""
  from research.outputs import markdown_table

  w, b, kv, u = r["workload"], r["bounds"], r["kv_cache"], r["unloaded"]
  cos = r["continuous_over_static"]
  rows = []
  for mode in ("continuous", "static"):
    s, o = r["modes"][mode]["server"], r["modes"][mode]["offline"]
    rows.append([
      mode,
      f"{s['qps']:,.1f}" if s["valid"] else f"none ≥ {s['min_qps_tried']:,.1f}",
      ms(s["ttft_p99_ms"]),
      ms(s["tpot_p99_ms"]),
      f"{s['goodput'] or 0:,.1f}",
      f"{o['tokens_per_s']:,.0f}",
      f"{o['requests_per_s']:,.1f}",
    ])  # fmt: skip
  if cos["server_qps"]:
    verdict = f"Continuous batching sustains **{cos['server_qps']:.2f}x** static's Server QPS"
  elif cos["server_qps_at_least"]:
    verdict = (
      f"Static batching met the bounds at no load tried (down to "
      f"{r['modes']['static']['server']['min_qps_tried']:,.1f} QPS): continuous batching "
      f"sustains **more than {cos['server_qps_at_least']:.1f}x** its Server QPS (a finite "
      f"ratio at looser bounds: the next section)"
    )
  else:
    verdict = "Neither mode met the bounds at any load tried."
  lines = [
    f"# Serving {r['run']['experiment']} (step {r['run']['step']}) by the MLPerf LLM rules",
    "",
    r["provenance"]["markdown"],
    "",
    *(
      ["**--quick: short runs and few search steps, a smoke test, not results.**", ""]
      if r["settings"]["quick"]
      else []
    ),
    "## Request mix",
    "",
    f"{w['count']} requests (seed {w['seed']}); prompt and output lengths {w['distribution']} "
    f"({w['formula']}): prompts {w['prompt_tokens_range'][0]}-{w['prompt_tokens_range'][1]} "
    f"tokens ({w['prompt_source']}), outputs {w['output_tokens_range'][0]}-"
    f"{w['output_tokens_range'][1]} tokens (drawn: {w['output_tokens']['min']}-"
    f"{w['output_tokens']['max']}, mean {w['output_tokens']['mean']:.1f}; "
    f"{w['output_spread']:.0f}x apart).",
    "",
    "## Bounds",
    "",
    f"p99 TTFT ≤ **{b['ttft_ms']:.3f} ms**, p99 TPOT ≤ **{b['tpot_ms']:.3f} ms**, each checked "
    f"on its own by LoadGen (`use_token_latencies`; TPOT = (latency − TTFT) / (tokens − 1), "
    f"the first token not included). How: {b['how']}. Static batching waits at most "
    f"{b['static_wait_ms']:.3f} ms (half the TTFT bound) for a full batch of "
    f"{r['engine']['slots']}.",
    "",
    f"Unloaded (one request at a time, 1-slot engine): TTFT p50 {u['ttft_ms']['p50']:.3f} ms "
    f"({u['prompt_tokens']}-token prompt), TPOT p50 {u['tpot_ms']['p50']:.3f} ms.",
    "",
    "## Server (Poisson) and Offline",
    "",
    markdown_table(
      [
        "batching",
        "Server QPS within bounds",
        "p99 TTFT",
        "p99 TPOT",
        "goodput (req/s)",
        "Offline tokens/s",
        "Offline req/s",
      ],
      rows,
      align="lrrrrrr",
    ),  # fmt: skip
    "",
    f"{verdict}, on the same engine ({r['engine']['slots']} slots) and bounds. p99s are "
    f"LoadGen's, at the highest VALID QPS (or the lowest tried when none was VALID); goodput "
    f"counts the requests whose TTFT and TPOT both met the bounds, per second (vLLM's "
    f"definition). SingleStream: TTFT p99 {ms(r['single_stream']['ttft_p99_ms'])}, TPOT p99 "
    f"{ms(r['single_stream']['tpot_p99_ms'])}. Compilations after warm-up: "
    f"{r['compilations_after_warmup']}. LoadGen's logs: `loadgen/`.",
    "",
    *_loose_section(r),
    "## Memory",
    "",
    f"KV cache: {kv['bytes_per_token']:,} bytes per token, {kv['bytes_per_slot']:,} per slot "
    f"(n_ctx {kv['n_ctx']}); params {kv['params_bytes']:,} bytes; 1 GiB holds "
    f"{kv['slots_in_1_gib']:,} sequences of n_ctx tokens"
    + (
      f"; the memory budget ({kv['memory_budget_bytes'] / 2**20:.1f} MiB) holds "
      f"{kv['slots_in_budget']:,}."
      if kv["memory_budget_bytes"]
      else "."
    ),
    "",
    *_decode_section(r.get("decode_sweep"), r.get("roofline")),
  ]
  return "\n".join(lines)


def _loose_section(r: dict[str, Any]) -> list[str]:
  """The second comparison: both modes at the loose bounds, and its (finite) ratio."""
  from research.outputs import markdown_table

  lb, ratio = r["loose_bounds"], r["continuous_over_static"]["server_qps_loose"]
  rows = []
  for mode in ("continuous", "static"):
    s = r["modes"][mode]["server_loose"]
    rows.append([
      mode,
      f"{s['qps']:,.1f}" if s["valid"] else f"none ≥ {s['min_qps_tried']:,.1f}",
      ms(s["ttft_p99_ms"]),
      ms(s["tpot_p99_ms"]),
      f"{s['goodput'] or 0:,.1f}",
    ])  # fmt: skip
  if ratio:
    verdict = f"Continuous batching sustains **{ratio:.2f}x** static's Server QPS at these bounds."
  else:
    verdict = "Static batching met even these bounds at no load tried: no finite ratio."
  return [
    "## Server at loose bounds both modes can meet",
    "",
    (
      "Static batching met the MLPerf-scaled bounds above at no load tried, so their ratio is "
      "only a lower bound. "
      if not r["modes"]["static"]["server"]["valid"]
      else "Static batching met the bounds above too. "
    )
    + f"Here both modes again, at looser bounds: p99 TTFT ≤ "
    f"**{lb['ttft_ms']:.3f} ms**, p99 TPOT ≤ **{lb['tpot_ms']:.3f} ms** ({lb['factor']}x "
    f"the bounds above; factors tried: {', '.join(f'{k}x' for k in lb['factors_tried'])}). "
    f"Rule: {lb['rule']}. Static batching waits at most {lb['static_wait_ms']:.3f} ms (half "
    f"the TTFT bound) for a full batch.",
    "",
    markdown_table(
      ["batching", "Server QPS within loose bounds", "p99 TTFT", "p99 TPOT", "goodput (req/s)"],
      rows,
      align="lrrrr",
    ),
    "",
    f"{verdict} Figure: `load_loose.png`; LoadGen's logs: "
    + (
      "the headline's (k = 1: the same runs)."
      if lb["factor"] == 1
      else f"`loadgen/loose_{lb['factor']}x/` (one directory per k tried)."
    ),
    "",
  ]


def _decode_section(sweep: list, roofline: dict) -> list[str]:
  from research.outputs import markdown_table

  rows = [
    [s["batch"], f"{s['tokens_per_s']:,.0f}", f"{100 * s['mfu']:.2f} %",
     f"{100 * s['roofline_fraction']:.1f} %"]
    for s in sweep
  ]  # fmt: skip
  peaks = roofline["peaks"]
  return [
    "## Decode sweep and roofline",
    "",
    markdown_table(["batch", "tokens/s", "MFU", "of roofline bound"], rows, align="rrrr"),
    "",
    f"Every slot busy (research/bench/roofline.py). This core, measured in the same run: matmul "
    f"peak {peaks['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s, STREAM triad "
    f"{peaks['triad_bytes_per_s'] / 1e9:.1f} GB/s, ridge {peaks['ridge_flops_per_byte']:.2f} "
    f"FLOP/byte. Decode turns compute-bound: {roofline['crossover']['text']}. Figure: "
    f"`roofline.png`.",
    "",
  ]
