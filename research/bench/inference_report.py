"""The inference benchmark rendered for readers: bench.md's tables (`research.bench.inference`
measures; this module only formats)."""

from __future__ import annotations

from typing import Any


def markdown_report(result: dict[str, Any], title: str, provenance_md: str) -> str:
  """Tables a reader checks the claims against: accuracy and latency per precision, the sweep,
  LoadGen."""
  recs = result["records"]
  return "\n".join(
    [
      f"# {title}",
      "",
      provenance_md,
      "",
      *engines_section(recs),
      *_per_engine_section(recs, result["settings"]["saturation_fraction"]),
      *_sweep_section(recs),
      *_loadgen_section(recs),
    ]
  )


def _of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
  return [r for r in records if r["kind"] == kind]


def _per_engine_section(recs: list[dict[str, Any]], saturation_fraction: float) -> list[str]:
  """Each engine, backend and precision timed on its own: batch-1 latency beside the bare call
  and compute alone, saturation, compilation."""
  from research.outputs import markdown_table

  acc = {_key(r): r["test_accuracy"] for r in _of_kind(recs, "accuracy")}
  sat = {_key(r): r for r in _of_kind(recs, "saturation")}
  comp = {_key(r): r["seconds_total"] for r in _of_kind(recs, "compile")}
  rows = []
  for r in _of_kind(recs, "realtime"):
    key = _key(r)
    s, f = r["serving"], r["floor"]
    rows.append(
      [
        r["engine"],
        r["backend"],
        r["precision"],
        f"{acc[key]:.4f}",
        f"{s['p50_us']:.1f}",
        f"{s['p90_us']:.1f}",
        f"{s['p99_us']:.1f}",
        f"{f['p50_us']:.1f}",
        f"{r['serving_over_floor_p50']:.2f}",
        f"{r['compute']['p50_us']:.1f}",
        sat[key]["batch_size"],
        f"{sat[key]['best_examples_per_s']:,.0f}",
        f"{sat[key]['best_us_per_example']:.2f}",
        f"{comp[key]:.1f}",
      ]
    )
  return [
    "## Real-time (batch 1) and batch, per engine and precision",
    "",
    "Batch-1 latency is the serving path (`Engine.logits`: input checks, padding "
    "logic, numpy in and out). Beside it, in alternating blocks: the bare call "
    "(jax: the compiled `apply` called directly on the same numpy input, result fetched to "
    "numpy; ONNX Runtime: `session.run` on it), and compute alone (jax: the compiled call on "
    "a device-resident input, blocking, nothing fetched; ONNX Runtime: `run_with_iobinding` "
    "on bound input and output buffers). Saturation: the smallest batch reaching "
    f"{int(100 * saturation_fraction)} % of the highest throughput "
    "in the sweep. Compilation (all sweep and serving sizes) is reported apart and "
    "excluded from every timing.",
    "",
    markdown_table(
      [
        "engine",
        "backend",
        "precision",
        "test acc",
        "b1 p50 µs",
        "b1 p90 µs",
        "b1 p99 µs",
        "bare call p50 µs",
        "p50 / bare call",
        "compute p50 µs",
        "saturation batch",
        "best examples/s",
        "best µs/example",
        "compile s",
      ],
      rows,
    ),
    "",
  ]


def _sweep_section(recs: list[dict[str, Any]]) -> list[str]:
  """Every batch size of the sweep, per engine, backend and precision."""
  from research.outputs import markdown_table

  sweep_rows = [
    [
      r["engine"],
      r["backend"],
      r["precision"],
      r["batch_size"],
      f"{r['call_p50_us']:.1f}",
      f"{r['call_p99_us']:.1f}",
      f"{r['examples_per_s']:,.0f}",
      f"{r['us_per_example']:.3f}",
    ]
    for r in _of_kind(recs, "batch")
  ]
  return [
    "## Batch-size sweep",
    "",
    markdown_table(
      [
        "engine",
        "backend",
        "precision",
        "batch",
        "call p50 µs",
        "call p99 µs",
        "examples/s",
        "µs/example",
      ],
      sweep_rows,
    ),
    "",
  ]


def _loadgen_row(r: dict[str, Any]) -> list[Any]:
  """One LoadGen scenario: a Server search by its best VALID run, the others by their one run."""
  if r["scenario"].startswith("Server"):
    best = r.get("best") or {}
    lat = best.get("latency_ms") or {}
    return [
      r["engine"],
      r["backend"],
      r["scenario"],
      "VALID" if r["valid"] else "none VALID",
      f"highest QPS with p99 ≤ {r['latency_bound_ms']} ms: {r['qps']:,.0f}",
      _ms(lat.get("p50")),
      _ms(lat.get("p99")),
      f"{(best.get('sut') or {}).get('mean_batch_size', float('nan')):.1f}",
      len(r["trials"]),
    ]
  lat = r.get("latency_ms") or {}
  return [
    r["engine"],
    r["backend"],
    r["scenario"],
    r["result"],
    f"{r['headline']['name']}: {r['headline']['value']:,.4g}",
    _ms(lat.get("p50")),
    _ms(lat.get("p99")),
    f"{(r.get('sut') or {}).get('mean_batch_size', float('nan')):.1f}",
    1,
  ]


def _loadgen_section(recs: list[dict[str, Any]]) -> list[str]:
  """MLPerf LoadGen's scenarios and what batching buys in Server; nothing when LoadGen was off."""
  from research.outputs import markdown_table

  lg_rows = [_loadgen_row(r) for r in _of_kind(recs, "loadgen")]
  if not lg_rows:
    return []
  ratios = [
    f"{r['engine']} {r['backend']}: batched Server sustains "
    f"{r['batched_over_batch1_qps']:.1f}x the batch-1 Server QPS at the same p99 bound "
    f"({r['latency_bound_ms']} ms)"
    for r in _of_kind(recs, "loadgen_server_ratio")
    if r["batched_over_batch1_qps"]
  ]
  return [
    "## MLPerf LoadGen (each engine in its own precision)",
    "",
    "Short runs (see settings in bench.json); LoadGen's own summary and detail logs are "
    "in `loadgen/<engine>/<backend>/<scenario>/`. Server is searched (one LoadGen run per trial) "
    "for the highest Poisson QPS whose run is VALID; *batched* answers whatever is "
    "waiting in one call padded to a compiled size, *batch1* one request per call.",
    "",
    markdown_table(
      [
        "engine",
        "backend",
        "scenario",
        "result",
        "metric",
        "p50 ms",
        "p99 ms",
        "mean batch",
        "runs",
      ],
      lg_rows,
    ),
    "",
    *[f"- {x}" for x in ratios],
    "",
  ]


def _ms(v: float | None) -> str:
  return "" if v is None else f"{v:.3f}"


def _key(r: dict[str, Any]) -> tuple[str, str, str]:
  return (r["engine"], r["backend"], r["precision"])


def fastest(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """The fastest configuration per scenario: real-time (lowest batch-1 p50 through the serving
  path), batch (highest examples/s in the sweep), Server (highest VALID batch-1 and batched QPS).
  Each entry: engine, backend, precision and the figure."""
  out: dict[str, dict[str, Any]] = {}

  def pick(name, rows, value, best=min):
    rows = [r for r in rows if value(r) is not None]
    if rows:
      r = best(rows, key=value)
      out[name] = {
        "engine": r["engine"],
        "backend": r["backend"],
        "precision": r["precision"],
        "value": value(r),
      }

  pick(
    "realtime_p50_us",
    [r for r in records if r["kind"] == _realtime_kind(records)],
    lambda r: r["serving"]["p50_us"],
  )
  pick(
    "batch_examples_per_s",
    [r for r in records if r["kind"] == "saturation"],
    lambda r: r["best_examples_per_s"],
    max,
  )
  for scenario in ("Server_batch1", "Server_batched"):
    pick(
      f"{scenario}_qps",
      [r for r in records if r["kind"] == "loadgen" and r["scenario"] == scenario],
      lambda r: r["qps"] or None,
      max,
    )
  return out


def _realtime_kind(records: list[dict[str, Any]]) -> str:
  """Batch-1 latencies to compare engines by: interleaved when the run measured them so."""
  interleaved = any(r["kind"] == "realtime_interleaved" for r in records)
  return "realtime_interleaved" if interleaved else "realtime"


def engines_section(records: list[dict[str, Any]]) -> list[str]:
  """The engines side by side (each in its own precision; jax also in its others), which is
  fastest per scenario, and the engines that could not serve this model, with the reason."""
  from research.outputs import markdown_table

  by_key = _records_by_configuration(records)
  rows = [_engine_row(key, parts) for key, parts in by_key.items()]
  lines = [
    "## Engines side by side",
    "",
    "Same test set, same harness, same process; the batch-1 columns come from one pass that "
    "interleaves the engines' serving calls in blocks, so the machine's drift falls on all "
    "alike (the per-engine table below times each engine on its own). *agrees with jax "
    "fp32*: test predictions identical to the jitted fp32 apply's, and the largest logit "
    "difference. Server QPS: the highest VALID LoadGen Server load at the p99 bound, "
    "answering one request per call (batch 1) or all waiting requests at once (batched).",
    "",
    markdown_table(
      [
        "engine",
        "backend",
        "precision",
        "test acc",
        "agrees with jax fp32",
        "b1 p50 µs",
        "b1 p99 µs",
        "best examples/s",
        "Server b1 QPS",
        "Server batched QPS",
        "model KiB",
      ],
      [row for row in rows if row],
    ),
    "",
    *_fastest_lines(records),
    *_int8_lines(by_key),
  ]
  notes = {(r["engine"], r["notes"]) for r in records if r["kind"] == "accuracy" and r.get("notes")}
  lines += [f"- {engine}: {note}" for engine, note in sorted(notes)]
  lines += [
    f"- {r['engine']}: not available for this model. {r['reason']}"
    for r in records
    if r["kind"] == "unavailable"
  ]
  return [*lines, ""]


def _records_by_configuration(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
  """(engine, backend, precision) -> its accuracy, saturation, batch-1 (interleaved when the run
  measured so) and Server records, by kind or scenario."""
  by_key: dict[tuple, dict[str, Any]] = {}
  for r in records:
    if r["kind"] in ("accuracy", "saturation"):
      by_key.setdefault(_key(r), {})[r["kind"]] = r
    elif r["kind"] == _realtime_kind(records):
      by_key.setdefault(_key(r), {})["realtime"] = r
    elif r["kind"] == "loadgen" and r["scenario"].startswith("Server"):
      by_key.setdefault(_key(r), {})[r["scenario"]] = r
  return by_key


def _engine_row(key: tuple, parts: dict[str, Any]) -> list[Any]:
  """One configuration's row of the side-by-side table; empty when a measurement is missing."""
  acc, rt, sat = parts.get("accuracy"), parts.get("realtime"), parts.get("saturation")
  if not (acc and rt and sat):
    return []
  agree = acc.get("agreement_with_jax_fp32")
  return [
    *key,
    f"{acc['test_accuracy']:.4f}",
    ""
    if not agree
    else (
      f"{agree['examples'] - agree['predictions_differing']} / {agree['examples']}; "
      f"max |Δlogit| {agree['max_abs_logit_difference']:.1e}"
    ),
    f"{rt['serving']['p50_us']:.1f}",
    f"{rt['serving']['p99_us']:.1f}",
    f"{sat['best_examples_per_s']:,.0f}",
    *[f"{parts[s]['qps']:,.0f}" if s in parts else "" for s in ("Server_batch1", "Server_batched")],
    "" if acc.get("model_bytes") is None else f"{acc['model_bytes'] / 1024:.1f}",
  ]


_SCENARIO_NAMES = {
  "realtime_p50_us": ("real-time (batch-1 p50)", "µs"),
  "batch_examples_per_s": ("batch (best throughput)", "examples/s"),
  "Server_batch1_qps": ("Server, batch 1", "QPS"),
  "Server_batched_qps": ("Server, batched", "QPS"),
}


def _fastest_lines(records: list[dict[str, Any]]) -> list[str]:
  """One line per scenario naming its fastest configuration and the figure."""
  lines = []
  for scenario, f in fastest(records).items():
    label, unit = _SCENARIO_NAMES[scenario]
    lines.append(
      f"- fastest for {label}: **{f['engine']}** ({f['backend']}, {f['precision']}), "
      f"{f['value']:,.1f} {unit}"
    )
  return lines


def _int8_lines(by_key: dict[tuple, dict[str, Any]]) -> list[str]:
  """What each int8 configuration costs in accuracy and buys in speed against its fp32 twin."""
  out = []
  for (engine, backend, precision), parts in by_key.items():
    if precision != "int8":
      continue
    twin = by_key.get((engine.removesuffix("-int8"), backend, "float32"))
    if not twin or not all(k in p for p in (parts, twin) for k in ("accuracy", "realtime")):
      continue
    acc = parts["accuracy"]["test_accuracy"] - twin["accuracy"]["test_accuracy"]
    rt = twin["realtime"]["serving"]["p50_us"] / parts["realtime"]["serving"]["p50_us"]
    line = (
      f"- int8 ({engine}, {backend}) against {twin['accuracy']['engine']} fp32: test accuracy "
      f"{100 * acc:+.1f} points; batch-1 p50 {rt:.2f}x as fast"
    )
    if "saturation" in parts and "saturation" in twin:
      tp = parts["saturation"]["best_examples_per_s"] / twin["saturation"]["best_examples_per_s"]
      line += f", best throughput {tp:.2f}x"
    out.append(line)
  return out
