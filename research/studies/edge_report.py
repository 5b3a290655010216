"""`scripts/edge.py`: the edge figures of one run, checked first, written as edge.json and edge.md
into an output folder that is replaced whole (`research.outputs.replacing`)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from research.outputs import markdown_table

EDGE_FILES = ("edge.json", "edge.md")
DEFAULT_RUNTIME_DIR = os.path.join("runs", "edge-runtime")


def check_edge_inputs(workdir: str, out: str, runtime_wheel: str | None) -> None:
  """Everything that can be wrong before any work: the run's kind, OUT, the emulator."""
  from research.outputs import check_output_dir
  from research.serving.emulation import EMULATORS, emulator_for, find_runtime_wheel
  from research.serving.run_kind import require_classifier

  require_classifier(workdir, "scripts/edge.py")
  check_output_dir(out, "--out", names=EDGE_FILES, inputs=[("--workdir", workdir)], runs=[workdir])
  if runtime_wheel is not None:
    for target in EMULATORS:
      find_runtime_wheel(emulator_for(target), runtime_wheel)


def write_edge(
  workdir: str,
  out: str,
  checkpoint: str | int,
  runtime_wheel: str | None,
  argv: Sequence[str],
  latency_calls: int = 2000,
  log: Callable[[str], None] = print,
  dispatch_batch: int | None = None,
) -> dict[str, Any]:
  """Measures, emulates and projects; writes OUT/edge.json and OUT/edge.md. Returns the record.
  `dispatch_batch`: split the host module's time by dispatch at that batch (None: not)."""
  import jax
  import numpy as np

  from research.data import load_dataset
  from research.models import for_platform
  from research.outputs import json_text, replacing, write_all
  from research.provenance import provenance
  from research.serving.export import chunked, inference_fn
  from research.serving.restore import load_run
  from research.studies.edge import edge_study

  check_edge_inputs(workdir, out, runtime_wheel)
  start = time.perf_counter()
  run = load_run(workdir, checkpoint)
  x = np.asarray(load_dataset(run.config.data).x_test, np.float32)
  jitted = jax.jit(inference_fn(for_platform(run.model, jax.default_backend()), run.params))
  reference = chunked(lambda chunk: np.asarray(jitted(chunk)), x)
  record = edge_study(run, x, reference, runtime_wheel, latency_calls, log, dispatch_batch)
  record["wall_seconds"] = time.perf_counter() - start
  record["provenance"] = provenance(list(argv), workdir=os.path.abspath(workdir), step=run.step)
  with replacing(out) as staging:
    write_all(
      {
        os.path.join(staging, "edge.json"): json_text(record),
        os.path.join(staging, "edge.md"): edge_markdown(record),
      }
    )
  return record


def _kib(n: float | None) -> str:
  return "" if n is None else f"{n / 1024:,.1f}"


def edge_markdown(r: dict[str, Any]) -> str:
  host, em = r["host"], r["emulated"]
  lines = [
    f"# On the edge: {r['experiment']} (step {r['step']})",
    "",
    r["provenance"]["markdown"],
    f"- wall time: {r['wall_seconds']:.0f} s",
    "",
    "Three kinds of figure, never mixed: **measured** on this host, **checked under "
    "emulation** (the answers only: an emulated run is never a latency), and **projected** "
    "from vendor peaks (labelled so).",
    "",
    "## The model",
    "",
    f"- {r['params']:,} parameters; {r['flops_per_prediction']:,.0f} FLOPs per prediction "
    "(analytic count, forward pass)",
    f"- weights: {_kib(r['weights_bytes']['float32'])} KiB in fp32, "
    f"{_kib(r['weights_bytes']['int8'])} KiB in int8 (per-channel scales, biases fp32)",
    "",
    "## Modules (IREE, batch 1)",
    "",
  ]
  rows = []
  for target, by_precision in r["modules"].items():
    m = by_precision["float32"]
    rows.append(
      [
        target,
        m["cpu"],
        m["triple"],
        m["cpu_features"],
        _kib(m["bytes"]),
        _kib(by_precision["int8"]["bytes"]),
        f"{m['compile_seconds']:.2f}",
      ]  # fmt: skip
    )
  lines += [
    markdown_table(
      ["target", "cpu", "triple", "features", "fp32 KiB", "int8 KiB", "compile s"], rows
    ),
    "",
    f"Compiler: {next(iter(r['modules'].values()))['float32']['compiler']}. int8 is weight-only "
    "(int8 weights with per-channel scales, dequantized in the module; IREE's constant "
    "evaluation is turned off so it does not fold them back to fp32). A device runs a module "
    f"with {next(iter(r['modules'].values()))['float32']['runtime_needs']}.",
    "",
    "## Measured on this host (IREE llvm-cpu, local-sync, one thread)",
    "",
  ]
  a32, a8 = host["agreement"]["float32"], host["agreement"]["int8"]
  binding = host["python_binding_compute_us"]
  bench = host["benchmark_module"]
  rss = host["peak_rss_bytes"]
  lines += [
    f"- agreement with jax fp32 on {a32['examples']} test examples: fp32 {a32['agreement']:.4f} "
    f"(max logit difference {a32['max_abs_logit_difference']:.1e}), int8 "
    f"{a8['agreement']:.4f} ({a8['max_abs_logit_difference']:.1e})",
    f"- batch-1 time per call, compute only: {bench['p50_of_repetition_means_us']:.1f} µs from "
    f"`iree-benchmark-module` (median of {bench['repetitions']} repetitions of "
    f"{bench['calls_per_repetition']:,} calls, no Python); {binding['p50_us']:.1f} µs p50 "
    f"(p99 {binding['p99_us']:.1f}) through the Python binding, device-resident input",
    f"- that is {host['fraction_of_peak']:.2%} of this core's measured fp32 matmul peak "
    f"({host['peak_flops'] / 1e9:.1f} GFLOP/s)",
    "- peak resident memory of a minimal process (`iree-run-module` loading the fp32 module and "
    "answering one request): "
    + (f"{rss / 2**20:.1f} MiB" if rss else "not measured (GNU time is not installed)"),
    "",
  ]
  if host.get("dispatches"):
    lines += dispatch_lines(host["dispatches"])
  lines += [
    "",
    "## Checked under emulation",
    "",
  ]
  for target, e in em.items():
    if not e.get("run"):
      lines.append(f"- {target}: not run: {e['why']}")
      continue
    lines.append(
      f"- {target}: **agreement {e['agreement']:.4f}** on {e['examples']} test examples "
      f"(max logit difference {e['max_abs_logit_difference']:.1e}; tolerance: "
      f"{e['tolerance']}: {'within' if e['within_tolerance'] else 'OUTSIDE'}). The module was "
      f"compiled for {target} at batch {e['module_batch']} with the artifact's flags; the "
      f"batch-1 artifact itself, on one example: max logit difference "
      f"{e['artifact_batch1_max_abs_logit_difference']:.1e}. Run by {e['runtime']} under "
      f"{e['emulator']}."
    )
  lines += ["", "## Projected on edge devices (not measured)", ""]
  lines += projection_lines(r["devices"], host["fraction_of_peak"])
  return "\n".join(lines) + "\n"


def projection_lines(devices: list[dict[str, Any]], fraction_of_peak: float) -> list[str]:
  """The projected devices as a table, how they were projected, and each number's source."""
  rows = []
  for d in devices:
    fits = {None: "", True: "yes", False: "no"}[d["fits_memory"]]
    rows.append(
      [
        d["device"],
        d["core"],
        f"{d['peak_gflops']:.2f}",
        f"{d['power_watts']:g}",
        f"{d['latency_at_peak_us']:.2f}",
        f"{d.get('latency_at_host_fraction_us', 0):.1f}",
        f"{d.get('energy_at_host_fraction_uj', 0):.2f}",
        fits,
      ]  # fmt: skip
    )
  lines = [
    markdown_table(
      [
        "device",
        "core",
        "peak GFLOP/s",
        "power W",
        "latency at peak µs (floor)",
        "latency at host's fraction µs",
        "energy at host's fraction µJ",
        "fp32 weights fit",
      ],
      rows,
    ),  # fmt: skip
    "",
    f"Projection: FLOPs per prediction over the device's peak (a floor), and over the same "
    f"fraction of its peak that the module reached on this host ({fraction_of_peak:.2%}); "
    "energy is the assumed power times that latency. No module is compiled for the "
    "microcontroller: IREE's bare-metal path needs its runtime built for the board.",
    "",
    "Sources:",
    "",
  ]
  for d in devices:
    lines.append(f"- {d['device']}: " + "; ".join(f"{k}: {v}" for k, v in d["sources"].items()))
  return lines


def dispatch_lines(profile: dict[str, Any], shown: int = 6) -> list[str]:
  """Where the host module's time goes at one batch, its largest dispatches first."""
  batch = profile["batch"]
  lines = [
    "",
    f"### Where the time goes (this host, batch {batch})",
    "",
    "Each dispatch compiled on its own and timed by `iree-benchmark-module` (research/bench/"
    "iree_native.py: `dispatch_times`); each carries the tool's floor of about 1 µs. A dispatch "
    "inside a loop (a GRU's scan over time) runs once per iteration in the module and once here, "
    "so the sum can fall short of the module's time.",
  ]
  for name, v in profile["variants"].items():
    rows = [r for r in v["dispatches"] if r["us"] is not None]
    total = sum(r["us"] for r in rows)
    table = [[r["dispatch"], f"{r['us']:.1f}", f"{r['us'] / total:.1%}"] for r in rows[:shown]]
    if len(rows) > shown:
      rest = sum(r["us"] for r in rows[shown:])
      table.append([f"{len(rows) - shown} others", f"{rest:.1f}", f"{rest / total:.1%}"])
    failed = [r["dispatch"] for r in v["dispatches"] if r["us"] is None]
    lines += [
      "",
      f"**{name}**: {v['module_us']:,.1f} µs per call ({v['module_us'] / batch:.2f} µs per "
      f"example), {len(v['dispatches'])} dispatches summing to {total:,.1f} µs"
      + (f"; not timed alone: {', '.join(failed)}" if failed else ""),
      "",
      markdown_table(["dispatch", "µs", "share"], table),
    ]
  return lines


def main_job_edge_section(e: dict[str, Any] | None) -> list[str]:
  """The main job's "On the edge" section from `edge.edge_summary`'s figures: module sizes and
  this host's kernel time measured, the devices projected."""
  if not e:
    return []  # reports made before the edge section
  head = ["## On the edge (IREE modules; device times are projections, not measurements)", ""]
  if not e["available"]:
    return [*head, f"Not available for this model: {e['reason']}", ""]
  host_m, phone = e["modules"]["host"]["float32"], e["modules"]["aarch64"]["float32"]
  phone8 = e["modules"]["aarch64"]["int8"]
  bench, w = e["host"]["benchmark_module"], e["weights_bytes"]
  return [
    *head,
    f"- modules (IREE {host_m['compiler']}, batch 1): {host_m['bytes'] / 1024:.1f} KiB for this "
    f"host; for a phone ({phone['cpu']}, {phone['triple']}) {phone['bytes'] / 1024:.1f} KiB "
    f"fp32, {phone8['bytes'] / 1024:.1f} KiB int8 (weights {w['float32'] / 1024:.1f} KiB fp32, "
    f"{w['int8'] / 1024:.1f} KiB int8)",
    f"- measured here: the host module answers one request in "
    f"{bench['p50_of_repetition_means_us']:.1f} µs (`iree-benchmark-module`, one thread, no "
    f"Python), {e['host']['fraction_of_peak']:.2%} of this machine's measured peak",
    "- the phone module's answers are checked on the test set under emulation by "
    "`python scripts/edge.py --workdir RUN --out DIR` (QEMU and IREE's aarch64 runtime)",
    "",
    *projection_lines(e["devices"], e["host"]["fraction_of_peak"]),
    "",
  ]
