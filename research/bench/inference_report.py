"""The inference benchmark rendered for readers: bench.md's tables (`research.bench.inference`
measures; this module only formats)."""

from __future__ import annotations

from typing import Any


def markdown_report(result: dict[str, Any], title: str, provenance_md: str) -> str:
  """Tables a reader checks the claims against: accuracy and latency per precision, the sweep,
  LoadGen."""
  from research.provenance import markdown_table

  recs = result["records"]
  by = lambda kind: [r for r in recs if r["kind"] == kind]  # noqa: E731
  acc = {(r["backend"], r["precision"]): r["test_accuracy"] for r in by("accuracy")}
  sat = {(r["backend"], r["precision"]): r for r in by("saturation")}
  comp = {(r["backend"], r["precision"]): r["seconds_total"] for r in by("compile")}
  rows = []
  for r in by("realtime"):
    key = (r["backend"], r["precision"])
    s, f = r["serving"], r["floor"]
    rows.append(
      [
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
  parts = [
    f"# {title}",
    "",
    provenance_md,
    "",
    "## Real-time (batch 1) and batch, per precision",
    "",
    "Batch-1 latency is the serving path (`Predictor.logits`: input checks, padding "
    "logic, numpy in and out). Beside it, in alternating blocks: the bare jitted call "
    "(the compiled `apply` called directly on the same numpy input, result fetched to "
    "numpy), and compute alone (the compiled call on a device-resident input, blocking, "
    "nothing fetched). Saturation: the smallest batch reaching "
    f"{int(100 * result['settings']['saturation_fraction'])} % of the highest throughput "
    "in the sweep. Compilation (all sweep and serving sizes) is reported apart and "
    "excluded from every timing.",
    "",
    markdown_table(
      [
        "backend",
        "precision",
        "test acc",
        "b1 p50 µs",
        "b1 p90 µs",
        "b1 p99 µs",
        "bare jit p50 µs",
        "p50 / bare jit",
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
  sweep_rows = []
  for r in by("batch"):
    sweep_rows.append(
      [
        r["backend"],
        r["precision"],
        r["batch_size"],
        f"{r['call_p50_us']:.1f}",
        f"{r['call_p99_us']:.1f}",
        f"{r['examples_per_s']:,.0f}",
        f"{r['us_per_example']:.3f}",
      ]
    )
  parts += [
    "## Batch-size sweep",
    "",
    markdown_table(
      ["backend", "precision", "batch", "call p50 µs", "call p99 µs", "examples/s", "µs/example"],
      sweep_rows,
    ),
    "",
  ]
  lg_rows = []
  for r in by("loadgen"):
    if r["scenario"].startswith("Server"):
      best = r.get("best") or {}
      lat = best.get("latency_ms") or {}
      lg_rows.append(
        [
          r["backend"],
          r["scenario"],
          "VALID" if r["valid"] else "none VALID",
          f"highest QPS with p99 ≤ {r['latency_bound_ms']} ms: {r['qps']:,.0f}",
          _ms(lat.get("p50")),
          _ms(lat.get("p99")),
          f"{(best.get('sut') or {}).get('mean_batch_size', float('nan')):.1f}",
          len(r["trials"]),
        ]
      )
    else:
      lat = r.get("latency_ms") or {}
      lg_rows.append(
        [
          r["backend"],
          r["scenario"],
          r["result"],
          f"{r['headline']['name']}: {r['headline']['value']:,.4g}",
          _ms(lat.get("p50")),
          _ms(lat.get("p99")),
          f"{(r.get('sut') or {}).get('mean_batch_size', float('nan')):.1f}",
          1,
        ]
      )
  if lg_rows:
    ratios = [
      f"{r['backend']}: batched Server sustains {r['batched_over_batch1_qps']:.1f}x the "
      f"batch-1 Server QPS at the same p99 bound ({r['latency_bound_ms']} ms)"
      for r in by("loadgen_server_ratio")
      if r["batched_over_batch1_qps"]
    ]
    parts += [
      "## MLPerf LoadGen (fp32)",
      "",
      "Short runs (see settings in bench.json); LoadGen's own summary and detail logs are "
      "in `loadgen/<backend>/<scenario>/`. Server is searched (one LoadGen run per trial) "
      "for the highest Poisson QPS whose run is VALID; *batched* answers whatever is "
      "waiting in one call padded to a compiled size, *batch1* one request per call.",
      "",
      markdown_table(
        ["backend", "scenario", "result", "metric", "p50 ms", "p99 ms", "mean batch", "runs"],
        lg_rows,
      ),
      "",
      *[f"- {x}" for x in ratios],
      "",
    ]
  return "\n".join(parts)


def _ms(v: float | None) -> str:
  return "" if v is None else f"{v:.3f}"
