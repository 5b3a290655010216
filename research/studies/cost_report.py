"""The main job's report, rendered: markdown for readers, a figure, headline TensorBoard scalars.

`research.studies.train_vs_infer` measures; this module only formats what it measured.
"""

from __future__ import annotations

from typing import Any


def _si(x: float, unit: str = "") -> str:
  for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= factor:
      return f"{x / factor:.3g} {prefix}{unit}"
  return f"{x:.3g} {unit}".strip()


def _us(seconds: float) -> str:
  return f"{seconds * 1e6:.2f} µs"


def markdown_report(r: dict[str, Any], provenance_md: str) -> str:
  """The report a reader checks: one table per question, every figure from this run."""
  from research.outputs import markdown_table

  f, t, m, u, be = r["flops"], r["time"], r["memory"], r["utilization"], r["break_even_predictions"]
  inf = t["inference"]
  mib = lambda b: "" if b is None else f"{b / 2**20:.3f} MiB"  # noqa: E731
  lines = [
    f"# Training vs inference: {r['experiment']} ({r['model']}, {r['params']:,} params)",
    "",
    provenance_md,
    "",
    f"Trained {r['steps']} steps at batch {r['batch_size']}; final test accuracy "
    f"{r['final_test_accuracy']:.4f}. Inference restores the params of step {r['step']} alone.",
    "",
    "## FLOPs per example",
    "",
    markdown_table(
      ["", "analytic", "XLA", "XLA / analytic"],
      [
        [
          "inference (forward)",
          _si(f["forward_per_example"]),
          _si(f["xla"]["forward_per_example"]),
          f"{f['xla_over_analytic']['forward']:.3f}",
        ],
        [
          "training (train step / batch)",
          _si(f["train_step_per_example"]),
          _si(f["xla"]["train_step"] / r["batch_size"]),
          f"{f['xla_over_analytic']['train_step']:.3f}",
        ],
        [
          "train step / forward",
          f"{f['train_to_forward_ratio']:.2f}",
          f"{f['xla']['train_to_forward_ratio']:.2f}",
          "",
        ],
        ["whole training run", _si(f["training_run_total"]), "", ""],
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
        [l["name"], _si(l["matmul"]), _si(l["elementwise"]), _si(l["forward"]), _si(l["backward"])]
        for l in f["analytic_layers"]
      ],
    ),
    "",
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
          f"real-time inference (batch 1, p50, serving path; {_engine(inf['realtime'])})",
          _us(inf["realtime"]["seconds_per_prediction"]),
          f"{1 / t['train_over_realtime_per_example']:.1f}x training's",
        ],
        [
          f"batch inference (batch {inf['train_batch']['batch_size']}, as trained; "
          f"{_engine(inf['train_batch'])})",
          _us(inf["train_batch"]["seconds_per_prediction"]),
          f"training is {t['train_over_same_batch_inference']:.1f}x",
        ],
        [
          f"batch inference (best batch, {inf['batch']['batch_size']}; {_engine(inf['batch'])})",
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
    *engines_table(t.get("engines") or {}, inf),
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
    "## Utilization against this machine's measured peak",
    "",
    f"Peak: {_si(u['peak']['peak_flops'], 'FLOP/s')} ({u['peak']['matmul_n']}³ "
    f"{u['peak']['dtype']} matmul, best of 10, same thread settings).",
    "",
    markdown_table(
      ["", "achieved (analytic FLOPs / time)", "utilization"],
      [
        [
          "training",
          _si(f["training_run_total"] / t["train_seconds"], "FLOP/s"),
          f"{100 * u['training']:.1f} %",
        ],
        [
          "real-time inference",
          _si(f["forward_per_example"] / inf["realtime"]["seconds_per_prediction"], "FLOP/s"),
          f"{100 * u['realtime']:.2f} %",
        ],
        [
          "batch inference",
          _si(f["forward_per_example"] / inf["batch"]["seconds_per_prediction"], "FLOP/s"),
          f"{100 * u['batch']:.1f} %",
        ],
      ],
    ),
    "",
    "## Break-even: predictions after which inference has cost more than training",
    "",
    markdown_table(
      ["measure", "predictions"],
      [
        ["FLOPs (training run ÷ forward per example)", _si(be["flops"])],
        [
          f"seconds on this machine, real-time (batch 1, {_engine(inf['realtime'])})",
          _si(be["seconds_realtime"]),
        ],
        [
          f"seconds on this machine, batch {inf['train_batch']['batch_size']} "
          f"({_engine(inf['train_batch'])})",
          _si(be["seconds_train_batch"]),
        ],
        [
          f"seconds on this machine, best batch ({inf['batch']['batch_size']}, "
          f"{_engine(inf['batch'])})",
          _si(be["seconds_batch"]),
        ],
      ],
    ),
    "",
    "On one machine at constant power, energy and money scale with time, so their break-even "
    "counts equal the seconds row. This machine at the assumed "
    f"{r['this_machine']['power_watts']:g} W and ${r['this_machine']['price_per_hour']:g}/h: "
    f"training {r['this_machine']['train']['joules']:.3g} J, "
    f"${r['this_machine']['train']['dollars']:.3g}; a million predictions "
    f"${r['this_machine']['dollars_per_million_predictions']['realtime']:.3g} real-time, "
    f"${r['this_machine']['dollars_per_million_predictions']['batch']:.3g} batched.",
    "",
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
          _si(p["peak_flops"], "FLOP/s"),
          f"{p['power_watts']:g}",
          f"{p['price_per_hour']:g}",
          f"{p['mfu_train']:g} / {p['mfu_batch']:g} / {p['mfu_realtime']:g}",
          f"{p['train']['dollars']:.3g}",
          f"{p['dollars_per_million_predictions']['realtime']:.3g} / "
          f"{p['dollars_per_million_predictions']['batch']:.3g}",
          f"{_si(p['break_even_predictions']['realtime'])} / "
          f"{_si(p['break_even_predictions']['batch'])}",
        ]
        for n, p in r["profiles"].items()
      ],
    ),
    "",
  ]
  return "\n".join(lines)


def plot_report(r: dict[str, Any], path: str) -> str:
  """The report's figure: PNG at `path`, SVG and PDF beside it. Returns the PNG path."""
  from research.bench.figures import save_figure

  return save_figure(report_figure(r), path)[0]


def report_figure(r: dict[str, Any]):
  """Four panels, one question each: time per example (linear, values and p99 whiskers), FLOPs
  per example, break-even in FLOPs and in seconds, utilization of the measured peak."""
  from research.bench import figures

  f, t, u, be = r["flops"], r["time"], r["utilization"], r["break_even_predictions"]
  inf, train = t["inference"], t["train_seconds_per_example"] * 1e6
  modes = _distinct_modes(inf)
  colors = {"realtime": "C0", "train_batch": "C1", "batch": "C2"}
  fig, ((a, b), (c, d)) = figures.plt.subplots(2, 2, figsize=(13, 7.5))
  us = [train] + [inf[m]["seconds_per_prediction"] * 1e6 for m in modes]
  figures.bar_panel(
    a,
    ["training step\n(its share per example)"] + [_mode_label(inf, m) for m in modes],
    us,
    lambda v: f"{v:.3g} µs",
    whiskers=[None] + [_p99_us(t, inf[m]) for m in modes],
    notes=[""] + [_vs_training(v, train) for v in us[1:]],
    colors=["C3"] + [colors[m] for m in modes],
    xlabel="µs per example (linear; whisker to p99 where measured)",
    title="time per example on this machine",
  )
  figures.bar_panel(
    b,
    ["train step\n(forward, backward, update)", "inference\n(forward)"],
    [f["train_step_per_example"], f["forward_per_example"]],
    lambda v: _si(v, "FLOP"),
    colors=["C3", "C2"],
    tick_fmt=_si,
    xlabel="FLOPs per example (analytic, linear)",
    title=f"FLOPs per example: a train step is {f['train_to_forward_ratio']:.2f}x a forward pass",
  )
  flops = "FLOPs (forward vs the training run)"
  counts = {flops: (be["flops"], "C4", "break_even_flops")}
  for m in modes:
    key = "seconds_realtime" if m == "realtime" else f"seconds_{m}"
    counts[f"seconds, {_mode_label(inf, m, ' ')}"] = (be[key], colors[m], f"break_even_{key}")
  figures.break_even_panel(
    c, counts, headline=flops, title="break-even: predictions that cost what training did"
  )
  figures.bar_panel(
    d,
    ["training"] + [_mode_label(inf, m) for m in ("realtime", "batch")],
    [100 * u["training"], 100 * u["realtime"], 100 * u["batch"]],
    lambda v: f"{v:.2g} %",
    colors=["C3", "C0", "C2"],
    xlabel=f"% of this machine's measured peak, {_si(u['peak']['peak_flops'], 'FLOP/s')} (linear)",
    title="utilization (analytic FLOPs / time)",
  )
  fig.suptitle(f"{r['experiment']} ({r['model']}, {r['params']:,} params): training vs inference")
  fig.tight_layout()
  return fig


def _vs_training(v: float, train: float) -> str:
  return f", training is {train / v:.3g}x" if v < train else f" = {v / train:.3g}x training"


def _distinct_modes(inf: dict[str, Any]) -> list[str]:
  """realtime, train_batch, batch; train_batch left out when it is the best batch too."""
  same = all(inf["train_batch"].get(k) == inf["batch"].get(k) for k in ("batch_size", "engine"))
  return ["realtime", "batch"] if same else ["realtime", "train_batch", "batch"]


def _mode_label(inf: dict[str, Any], mode: str, sep: str = "\n") -> str:
  size = inf[mode]["batch_size"]
  what = {
    "realtime": "real-time, batch 1",
    "train_batch": f"batch {size} (as trained)",
    "batch": f"best batch ({size})",
  }[mode]
  return f"{what}{sep}({_engine(inf[mode])})"


def _p99_us(t: dict[str, Any], m: dict[str, Any]) -> float | None:
  """A mode's p99 per example: real-time's own, a jax batch's from the sweep; else unknown."""
  if m.get("p99_seconds") is not None:
    return m["p99_seconds"] * 1e6
  rows = [s for s in t.get("sweep", []) if s["batch_size"] == m["batch_size"]]
  if _engine(m) == "jax" and rows and "call_p99_us" in rows[0]:
    return rows[0]["call_p99_us"] / m["batch_size"]
  return None


def _engine(mode: dict[str, Any]) -> str:
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
