"""The main job's report, rendered: markdown for readers, section by section, and its figure
(drawn in `research.studies.cost_figure`).

`research.studies.train_vs_infer` measures; this module only formats what it measured.
"""

from __future__ import annotations

from typing import Any

from research.studies.edge_report import main_job_edge_section


def si(x: float, unit: str = "") -> str:
  """`x` to three significant digits with an SI prefix (k, M, G, T) before `unit`."""
  for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= factor:
      return f"{x / factor:.3g} {prefix}{unit}"
  return f"{x:.3g} {unit}".strip()


def _us(seconds: float) -> str:
  return f"{seconds * 1e6:.2f} µs"


def markdown_report(r: dict[str, Any], provenance_md: str) -> str:
  """The report a reader checks: one table per question, every figure from this run."""
  inf = r["time"]["inference"]
  return "\n".join(
    [
      *_header(r, provenance_md),
      *_flops_section(r),
      *_time_section(r),
      *engines_table(r["time"].get("engines") or {}, inf),
      *_memory_section(r),
      *_utilization_section(r),
      *_break_even_section(r),
      *_profiles_section(r),
      *main_job_edge_section(r.get("edge")),
    ]
  )


def _header(r: dict[str, Any], provenance_md: str) -> list[str]:
  return [
    f"# Training vs inference: {r['experiment']} ({r['model']}, {r['params']:,} params)",
    "",
    provenance_md,
    "",
    f"Trained {r['steps']} steps at batch {r['batch_size']}; final test accuracy "
    f"{r['final_test_accuracy']:.4f}. Inference restores the params of step {r['step']} alone.",
    "",
  ]


def _flops_section(r: dict[str, Any]) -> list[str]:
  """Analytic against XLA's count, per example, then the analytic count layer by layer."""
  from research.outputs import markdown_table

  f = r["flops"]
  return [
    "## FLOPs per example",
    "",
    markdown_table(
      ["", "analytic", "XLA", "XLA / analytic"],
      [
        [
          "inference (forward)",
          si(f["forward_per_example"]),
          si(f["xla"]["forward_per_example"]),
          f"{f['xla_over_analytic']['forward']:.3f}",
        ],
        [
          "training (train step / batch)",
          si(f["train_step_per_example"]),
          si(f["xla"]["train_step"] / r["batch_size"]),
          f"{f['xla_over_analytic']['train_step']:.3f}",
        ],
        [
          "train step / forward",
          f"{f['train_to_forward_ratio']:.2f}",
          f"{f['xla']['train_to_forward_ratio']:.2f}",
          "",
        ],
        ["whole training run", si(f["training_run_total"]), "", ""],
      ],
    ),
    "",
    *[f"- XLA count: {n}" for n in f["xla"]["notes"]],
    "",
    "Analytic forward FLOPs per example, layer by layer (backward as counted for training):",
    "",
    markdown_table(
      ["layer", "matmul", "elementwise", "forward", "backward"],
      [
        [l["name"], si(l["matmul"]), si(l["elementwise"]), si(l["forward"]), si(l["backward"])]
        for l in f["analytic_layers"]
      ],
    ),
    "",
  ]


def _time_section(r: dict[str, Any]) -> list[str]:
  """Training's share per example against each inference mode, on the fastest engine for it."""
  from research.outputs import markdown_table

  t = r["time"]
  inf = t["inference"]
  return [
    "## Time per example",
    "",
    markdown_table(
      ["", "time per example", "vs training"],
      [
        [
          "training (one step's share, compilation excluded)",
          _us(t["train_seconds_per_example"]),
          "1",
        ],
        [
          f"real-time inference (batch 1, p50, serving path; {engine_of(inf['realtime'])})",
          _us(inf["realtime"]["seconds_per_prediction"]),
          f"{1 / t['train_over_realtime_per_example']:.1f}x training's",
        ],
        [
          f"batch inference (batch {inf['train_batch']['batch_size']}, as trained; "
          f"{engine_of(inf['train_batch'])})",
          _us(inf["train_batch"]["seconds_per_prediction"]),
          f"training is {t['train_over_same_batch_inference']:.1f}x",
        ],
        [
          f"batch inference (best batch, {inf['batch']['batch_size']}; {engine_of(inf['batch'])})",
          _us(inf["batch"]["seconds_per_prediction"]),
          f"training is {t['train_over_batch_per_example']:.1f}x",
        ],
      ],
    ),
    "",
    f"The jax engine's throughput saturates (90 % of its best) at batch "
    f"{t['saturation_batch_size']}; "
    f"real-time p99 {_us(inf['realtime']['p99_seconds'])}. Training took "
    f"{t['train_seconds']:.2f} s plus {t['compile_seconds']:.2f} s of compilation.",
    "",
  ]


def _memory_section(r: dict[str, Any]) -> list[str]:
  """What the compiled train step and the compiled apply hold, from XLA's memory analysis."""
  from research.outputs import markdown_table

  m = r["memory"]
  mib = lambda b: "" if b is None else f"{b / 2**20:.3f} MiB"  # noqa: E731
  return [
    "## Memory (compiled executables)",
    "",
    markdown_table(
      ["", "training step", f"inference, batch {r['batch_size']}", "inference, batch 1"],
      [
        ["params", mib(m["params_bytes"]), mib(m["params_bytes"]), mib(m["params_bytes"])],
        ["optimizer state", mib(m["optimizer_state_bytes"]), "none", "none"],
        [
          "arguments (params, state, batch)",
          mib(m["train_step"]["argument_bytes"]),
          mib(m["apply_same_batch"]["argument_bytes"]),
          mib(m["apply_batch_1"]["argument_bytes"]),
        ],
        [
          "activations and temporaries",
          mib(m["train_step"]["temp_bytes"]),
          mib(m["apply_same_batch"]["temp_bytes"]),
          mib(m["apply_batch_1"]["temp_bytes"]),
        ],
        [
          "peak (arguments + outputs - donated + temporaries)",
          mib(m["train_step"]["peak_bytes"]),
          mib(m["apply_same_batch"]["peak_bytes"]),
          mib(m["apply_batch_1"]["peak_bytes"]),
        ],
      ],
    ),
    "",
  ]


def _utilization_section(r: dict[str, Any]) -> list[str]:
  """Analytic FLOPs over measured time, against this machine's measured matmul peak."""
  from research.outputs import markdown_table

  f, t, u = r["flops"], r["time"], r["utilization"]
  inf = t["inference"]
  return [
    "## Utilization against this machine's measured peak",
    "",
    f"Peak: {si(u['peak']['peak_flops'], 'FLOP/s')} ({u['peak']['matmul_n']}³ "
    f"{u['peak']['dtype']} matmul, best of 10, same thread settings).",
    "",
    markdown_table(
      ["", "achieved (analytic FLOPs / time)", "utilization"],
      [
        [
          "training",
          si(f["training_run_total"] / t["train_seconds"], "FLOP/s"),
          f"{100 * u['training']:.1f} %",
        ],
        [
          "real-time inference",
          si(f["forward_per_example"] / inf["realtime"]["seconds_per_prediction"], "FLOP/s"),
          f"{100 * u['realtime']:.2f} %",
        ],
        [
          "batch inference",
          si(f["forward_per_example"] / inf["batch"]["seconds_per_prediction"], "FLOP/s"),
          f"{100 * u['batch']:.1f} %",
        ],
      ],
    ),
    "",
  ]


def _break_even_section(r: dict[str, Any]) -> list[str]:
  """Predictions after which inference has cost what training did, in FLOPs and in seconds."""
  from research.outputs import markdown_table

  inf, be, here = r["time"]["inference"], r["break_even_predictions"], r["this_machine"]
  return [
    "## Break-even: predictions after which inference has cost more than training",
    "",
    markdown_table(
      ["measure", "predictions"],
      [
        ["FLOPs (training run ÷ forward per example)", si(be["flops"])],
        [
          f"seconds on this machine, real-time (batch 1, {engine_of(inf['realtime'])})",
          si(be["seconds_realtime"]),
        ],
        [
          f"seconds on this machine, batch {inf['train_batch']['batch_size']} "
          f"({engine_of(inf['train_batch'])})",
          si(be["seconds_train_batch"]),
        ],
        [
          f"seconds on this machine, best batch ({inf['batch']['batch_size']}, "
          f"{engine_of(inf['batch'])})",
          si(be["seconds_batch"]),
        ],
      ],
    ),
    "",
    "On one machine at constant power, energy and money scale with time, so their break-even "
    "counts equal the seconds row. This machine at the assumed "
    f"{here['power_watts']:g} W and ${here['price_per_hour']:g}/h: "
    f"training {here['train']['joules']:.3g} J, "
    f"${here['train']['dollars']:.3g}; a million predictions "
    f"${here['dollars_per_million_predictions']['realtime']:.3g} real-time, "
    f"${here['dollars_per_million_predictions']['batch']:.3g} batched.",
    "",
  ]


def _profiles_section(r: dict[str, Any]) -> list[str]:
  """The named accelerator profiles: costs from FLOPs at an assumed MFU, not measured."""
  from research.outputs import markdown_table

  return [
    "### Named accelerator profiles (not measured: times from FLOPs at an assumed MFU)",
    "",
    "Vendor dense peaks; power, price and MFU are assumptions (edit `research/cost/hardware.py` "
    "PROFILES or pass other values). Under a profile the break-even count depends only on the "
    "FLOP ratio and the MFU ratio, so it is the same for every profile; the dollars differ.",
    "",
    markdown_table(
      [
        "profile",
        "peak",
        "W",
        "$/h",
        "MFU train / batch / real-time",
        "training run $",
        "$ per 1M predictions (real-time / batch)",
        "break-even (real-time / batch)",
      ],
      [
        [
          n,
          si(p["peak_flops"], "FLOP/s"),
          f"{p['power_watts']:g}",
          f"{p['price_per_hour']:g}",
          f"{p['mfu_train']:g} / {p['mfu_batch']:g} / {p['mfu_realtime']:g}",
          f"{p['train']['dollars']:.3g}",
          f"{p['dollars_per_million_predictions']['realtime']:.3g} / "
          f"{p['dollars_per_million_predictions']['batch']:.3g}",
          f"{si(p['break_even_predictions']['realtime'])} / "
          f"{si(p['break_even_predictions']['batch'])}",
        ]
        for n, p in r["profiles"].items()
      ],
    ),
    "",
  ]


def plot_report(r: dict[str, Any], path: str) -> str:
  """The report's figure: PNG at `path`, SVG and PDF beside it. Returns the PNG path."""
  from research.bench.figures import save_figure
  from research.studies.cost_figure import report_figure

  return save_figure(report_figure(r), path)[0]


def report_figure_files(r: dict[str, Any], path: str) -> dict[str, bytes]:
  """The report's figure rendered, PNG at `path` and SVG and PDF beside it: path -> bytes."""
  from research.bench.figures import figure_files
  from research.studies.cost_figure import report_figure

  return figure_files(report_figure(r), path)


def engine_of(mode: dict[str, Any]) -> str:
  """The engine an inference mode was timed on (reports before engines were compared: jax)."""
  return mode.get("engine", "jax")


def engines_table(
  engines: dict[str, dict[str, Any]], inference: dict[str, Any] | None = None
) -> list[str]:
  """Every engine timed for the report, side by side; the times above are the fastest's."""
  from research.outputs import markdown_table

  if not engines:
    return []
  rows, missing = [], []
  for name, e in engines.items():
    if not e["available"]:
      missing.append(f"- {name}: not available for this model. {e['reason']}")
      continue
    rows.append(
      [
        name,
        e["precision"],
        f"{e['test_accuracy']:.4f}",
        f"{e['realtime_p50_us']:.1f}",
        f"{e['realtime_p99_us']:.1f}",
        f"{e['best_us_per_example']:.3f} (batch {e['best_batch_size']})",
        "" if e.get("model_bytes") is None else f"{e['model_bytes'] / 1024:.1f}",
      ]
    )
  notes = [f"- {n}: {e['notes']}" for n, e in engines.items() if e.get("notes")]
  reference = engines.get("jax", {}).get("test_accuracy")
  for mode, m in (inference or {}).items():
    e = engines.get(m.get("engine", "jax"), {})
    if reference is not None and e.get("test_accuracy", reference) < reference:
      notes.append(
        f"- {mode.replace('_', ' ')}: the fastest engine, {m['engine']}, answers with "
        f"{100 * (reference - e['test_accuracy']):.1f} points less test accuracy than jax fp32"
      )
  return [
    "### Inference engines (same process, same harness; each break-even uses the fastest)",
    "",
    "Batch-1 p50 and p99: the engines' serving calls interleaved in blocks in one pass, so the "
    "machine's drift falls on all alike.",
    "",
    markdown_table(
      ["engine", "precision", "test acc", "b1 p50 µs", "b1 p99 µs", "best µs/example", "model KiB"],
      rows,
    ),
    "",
    *notes,
    *missing,
    "",
  ]
