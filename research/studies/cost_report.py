"""The main job's report, rendered: markdown for readers, a figure, headline TensorBoard scalars.

`research.studies.train_vs_infer` measures; this module only formats what it measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _si(x: float, unit: str = "") -> str:
  for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= factor:
      return f"{x / factor:.3g} {prefix}{unit}"
  return f"{x:.3g} {unit}".strip()


def _us(seconds: float) -> str:
  return f"{seconds * 1e6:.2f} µs"


def markdown_report(r: dict[str, Any], provenance_md: str) -> str:
  """The report a reader checks: one table per question, every figure from this run."""
  from research.provenance import markdown_table

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
  """Time per example (train vs real-time vs batch) and cumulative cost against predictions."""
  from research.bench.figures import plt, png_bytes
  from research.provenance import write_bytes

  t, inf = r["time"], r["time"]["inference"]
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  labels = [
    "train step",
    "real-time (b=1)",
    f"batch {inf['train_batch']['batch_size']}",
    f"best batch ({inf['batch']['batch_size']})",
  ]
  values = [
    t["train_seconds_per_example"],
    inf["realtime"]["seconds_per_prediction"],
    inf["train_batch"]["seconds_per_prediction"],
    inf["batch"]["seconds_per_prediction"],
  ]
  left.bar(labels, [v * 1e6 for v in values], color=["C3", "C0", "C1", "C2"])
  left.set_yscale("log")
  left.set_ylabel("µs per example (log)")
  left.set_title("time per example")
  left.tick_params(axis="x", labelsize=8)
  n = np.logspace(
    0,
    np.log10(
      max(
        r["break_even_predictions"]["seconds_realtime"],
        r["break_even_predictions"]["seconds_batch"],
      )
      * 10
    ),
    200,
  )
  right.plot(n, np.full_like(n, t["train_seconds"]), "C3", label="training run")
  for mode, color in (("realtime", "C0"), ("batch", "C2")):
    right.plot(
      n,
      n * inf[mode]["seconds_per_prediction"],
      color,
      label=f"inference, {mode} ({_engine(inf[mode])})",
    )
    right.axvline(r["break_even_predictions"][f"seconds_{mode}"], color=color, linestyle=":")
  right.set_xscale("log")
  right.set_yscale("log")
  right.set_xlabel("predictions served")
  right.set_ylabel("cumulative seconds on this machine")
  right.set_title("break-even (dotted)")
  right.legend(fontsize=8)
  right.grid(alpha=0.3, which="both")
  fig.suptitle(f"{r['experiment']}: training vs inference")
  return write_bytes(path, png_bytes(fig))


def headline_scalars(r: dict[str, Any]) -> dict[str, float]:
  return {
    "cost/forward_flops_per_example": r["flops"]["forward_per_example"],
    "cost/train_step_flops_per_example": r["flops"]["train_step_per_example"],
    "cost/train_to_forward_flops": r["flops"]["train_to_forward_ratio"],
    "cost/train_us_per_example": r["time"]["train_seconds_per_example"] * 1e6,
    "cost/realtime_us_per_prediction": r["time"]["inference"]["realtime"]["seconds_per_prediction"]
    * 1e6,
    "cost/batch_us_per_prediction": r["time"]["inference"]["batch"]["seconds_per_prediction"] * 1e6,
    "cost/break_even_predictions_flops": r["break_even_predictions"]["flops"],
    "cost/break_even_predictions_realtime": r["break_even_predictions"]["seconds_realtime"],
    "cost/break_even_predictions_batch": r["break_even_predictions"]["seconds_batch"],
    "cost/utilization_training": r["utilization"]["training"],
    "cost/utilization_batch": r["utilization"]["batch"],
  }


def comparison_fields(r: dict[str, Any]) -> dict[str, float]:
  """The report's headline as flat columns for a table of runs (`scripts/compare_runs.py`)."""
  inf = r["time"]["inference"]
  return {
    "forward_flops_per_example": r["flops"]["forward_per_example"],
    "train_to_forward_flops": r["flops"]["train_to_forward_ratio"],
    "train_us_per_example": 1e6 * r["time"]["train_seconds_per_example"],
    "realtime_us_per_prediction": 1e6 * inf["realtime"]["seconds_per_prediction"],
    "batch_us_per_prediction": 1e6 * inf["batch"]["seconds_per_prediction"],
    "break_even_flops": r["break_even_predictions"]["flops"],
    "break_even_realtime": r["break_even_predictions"]["seconds_realtime"],
    "break_even_batch": r["break_even_predictions"]["seconds_batch"],
    "training_utilization": r["utilization"]["training"],
  }


def _engine(mode: dict[str, Any]) -> str:
  return mode.get("engine", "jax")


def engines_table(
  engines: dict[str, dict[str, Any]], inference: dict[str, Any] | None = None
) -> list[str]:
  """Every engine timed for the report, side by side; the times above are the fastest's."""
  from research.provenance import markdown_table

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
