"""Where the jitted apply's batch-1 time goes: variants of one model timed alternately in one
process, each beside the XLA ops it executes per call.

The variants: the kernel implementations a model can use (`conv_impl`, `matmul_impl`), each with
params passed as arguments or compiled in as constants; a trivial jitted op (`x + 1`), the floor
any jitted call pays to dispatch; and ONNX Runtime on the exported model (and on any peer ONNX
file), the engines the jitted path is measured against. Every variant is a compute-only call on
an engine-resident input, blocking, nothing fetched; the variants run in alternating blocks so
the machine's drift falls on all alike.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, Callable, Sequence

import jax
import numpy as np

from research import kernels
from research.bench.timing import stats_us, time_calls
from research.models import KERNEL_FIELDS
from research.serving.restore import TrainedRun


def executed_ops(compiled: Any) -> dict[str, int]:
  """Instructions of the optimized entry computation, by kind: on XLA:CPU each fusion, dot,
  convolution or copy runs as its own thunk (parameters, constants and bitcasts cost nothing)."""
  text = compiled.as_text()
  entry = text[text.index("ENTRY") :]
  body = entry[: entry.index("\n}")]
  counts: dict[str, int] = {}
  for line in body.splitlines()[1:]:
    m = re.search(r"=\s*\S+\s+([\w-]+)\(", line)
    if m:
      counts[m.group(1)] = counts.get(m.group(1), 0) + 1
  free = {"parameter", "constant", "bitcast", "get-tuple-element", "tuple"}
  counts["executed"] = sum(v for k, v in counts.items() if k not in free)
  return counts


def variants(
  run: TrainedRun, x: np.ndarray, peers: Sequence[str] = ()
) -> dict[str, tuple[Callable[[], Any], dict[str, Any]]]:
  """name -> (a zero-argument compute call, what it is)."""
  x_dev = jax.device_put(x)
  out: dict[str, tuple[Callable[[], Any], dict[str, Any]]] = {}
  trivial = jax.jit(lambda x: x + 1).lower(x_dev).compile()
  out["trivial jitted op (x + 1)"] = (
    lambda: trivial(x_dev).block_until_ready(),
    {"ops": executed_ops(trivial)},
  )
  fields = [f for f in KERNEL_FIELDS if hasattr(run.model, f)]
  choices = [kernels.IMPLS[KERNEL_FIELDS[f]] for f in fields]
  for impls in itertools.product(*choices):
    model = run.model.clone(**dict(zip(fields, impls)))
    label = ", ".join(f"{f}={i}" for f, i in zip(fields, impls)) or "model"
    as_args = jax.jit(model.apply).lower(run.params, x_dev).compile()
    as_constants = jax.jit(lambda x, model=model: model.apply(run.params, x)).lower(x_dev).compile()
    out[f"jax: {label}, params as arguments"] = (
      lambda c=as_args: c(run.params, x_dev).block_until_ready(),
      {"ops": executed_ops(as_args)},
    )
    out[f"jax: {label}, params as constants"] = (
      lambda c=as_constants: c(x_dev).block_until_ready(),
      {"ops": executed_ops(as_constants)},
    )
  from research.serving.engines import EngineFactory
  from research.serving.onnx_runtime import OnnxRuntimeEngine

  engines = [EngineFactory(run).make("onnxruntime", (len(x),))]
  engines += [
    OnnxRuntimeEngine.from_file(
      p, run.input_shape, batch_sizes=(len(x),), engine=f"peer-{os.path.basename(p)}"
    )
    for p in peers
  ]
  for engine in engines:
    out[f"{engine.engine} (compute, io-bound buffers)"] = (
      engine.timing_calls(x)["compute"],
      {"onnx_nodes": engine.onnx_nodes},
    )
  return out


def profile_batch1(
  run: TrainedRun,
  x: np.ndarray,
  peers: Sequence[str] = (),
  blocks: int = 20,
  calls_per_block: int = 200,
) -> list[dict[str, Any]]:
  """One record per variant: p50/p90/p99 µs over `blocks` alternating blocks, and its ops."""
  found = variants(run, x[:1], peers)
  samples: dict[str, list[np.ndarray]] = {k: [] for k in found}
  for _ in range(blocks):
    for name, (call, _) in found.items():
      samples[name].append(time_calls(call, calls_per_block, warmup=20))
  return [
    {"variant": name, **stats_us(np.concatenate(samples[name])), **info}
    for name, (_, info) in found.items()
  ]


def write_profile(
  workdir: str, out: str, argv: Sequence[str], peers: Sequence[str] = (), blocks: int = 20
) -> tuple[str, list[dict[str, Any]]]:
  """Profiles a run's batch-1 path; writes OUT.json and OUT.md. Returns the markdown path."""
  from research.data import load_dataset
  from research.outputs import check_output_prefix, json_text, markdown_table, write_all
  from research.provenance import provenance
  from research.serving.restore import load_run
  from research.serving.run_kind import require_classifier

  inputs = [("--workdir", workdir), *(("--peer-onnx", p) for p in peers)]
  check_output_prefix(out, "--out", (".md", ".json"), inputs=inputs)
  require_classifier(workdir, "scripts/profile_batch1.py")

  for p in peers:
    if not os.path.isfile(p):
      from research.serving import InferenceError

      raise InferenceError(f"no peer ONNX file at {p}; check --peer-onnx")
  run = load_run(workdir)
  x = load_dataset(run.config.data).x_test[:1].astype(np.float32)
  records = profile_batch1(run, x, peers, blocks=blocks)
  meta = provenance(list(argv), workdir=os.path.abspath(workdir), step=run.step)
  floor = next(r for r in records if r["variant"].startswith("trivial"))["p50_us"]
  rows = [
    [
      r["variant"],
      "" if "ops" not in r else r["ops"]["executed"],
      "" if r.get("onnx_nodes") is None else r["onnx_nodes"],
      f"{r['p50_us']:.1f}",
      f"{r['p90_us']:.1f}",
      f"{r['p99_us']:.1f}",
      f"{r['p50_us'] / floor:.1f}",
    ]
    for r in records
  ]
  jax_rows = [r for r in records if r["variant"].startswith("jax:")]
  auto = {
    f: kernels.resolve(k, getattr(run.model, f), "cpu")
    for f, k in KERNEL_FIELDS.items()
    if hasattr(run.model, f)
  }
  label = ", ".join(f"{f}={i}" for f, i in auto.items()) or "model"
  before = next(r for r in jax_rows if r["variant"] == f"jax: {label}, params as arguments")
  after = next(r for r in jax_rows if r["variant"] == f"jax: {label}, params as constants")
  best = min(jax_rows, key=lambda r: r["p50_us"])
  lines = [
    f"# Batch-1 path of the jitted apply: {run.config.experiment} (step {run.step})",
    "",
    meta["markdown"],
    "",
    "Compute-only calls (engine-resident input, blocking, nothing fetched), "
    f"{blocks} alternating blocks of 200 calls per variant in one process. *XLA ops*: "
    "instructions of the optimized entry computation that run (each fusion, dot or "
    "convolution is one thunk on XLA:CPU); *ONNX nodes*: the exported graph's.",
    "",
    markdown_table(
      ["variant", "XLA ops", "ONNX nodes", "p50 µs", "p90 µs", "p99 µs", "p50 / trivial op"],
      rows,
    ),
    "",
    f"- The serving default before this change ({label}, params as arguments): "
    f"{before['p50_us']:.1f} µs; with params compiled in as constants (what `Predictor` "
    f"does now for params up to 16 MiB): {after['p50_us']:.1f} µs "
    f"({100 * (1 - after['p50_us'] / before['p50_us']):.0f} % less), "
    f"{before['ops']['executed']} -> {after['ops']['executed']} XLA ops per call.",
    f"- Fastest jax variant: {best['variant'][5:]}, {best['p50_us']:.1f} µs.",
    f"- What bounds it: a trivial jitted op costs {floor:.1f} µs here, so "
    f"{after['ops']['executed']} ops at {after['p50_us']:.1f} µs are about "
    f"{(after['p50_us'] - floor) / max(after['ops']['executed'], 1):.1f} µs each beyond the "
    "dispatch floor: the per-thunk cost of XLA:CPU, not arithmetic (the CNN's forward pass is "
    "about 26 k multiply-adds).",
  ]
  md = out + ".md"
  write_all(
    {
      out + ".json": json_text({"provenance": meta, "records": records}),
      md: "\n".join(lines) + "\n",
    }
  )
  return md, records
