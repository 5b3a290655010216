"""Exporting a trained model as a file that another process or runtime serves without our code.

Two formats with the batch dimension left symbolic and the weights inside the file (the third,
`iree`, is compiled ahead of time for one CPU at a fixed batch: `serving/iree.py`):

- `stablehlo`: `jax.export` serialized. A fresh process needs only JAX: `load_stablehlo(path)`
  returns a callable (`jax.export.deserialize(...).call`). Lowered for CPU and CUDA.
- `onnx`: through jax2onnx, for ONNX Runtime and the other ONNX engines.

Both export the model with its kernels resolved for the *engine*, not for training: the XLA:CPU
fast paths (the im2col convolution, the patch matmul) would export as many small ops, while XLA's
own `conv_general_dilated` and `dot` map to one native Conv / Gemm each. The ONNX graph then goes
through `onnx_passes.simplify`, which gives it the form a hand-written ONNX model has.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.models import for_platform
from research.serving import InferenceError, onnx_passes

FORMATS = ("onnx", "stablehlo", "iree")
SUFFIXES = {"onnx": ".onnx", "stablehlo": ".stablehlo", "iree": ".vmfb"}
# Kernels resolved for an exported artifact: a platform `research.kernels.AUTO` does not list,
# so every "auto" kernel becomes XLA's own op (portable, and native Conv / Gemm in ONNX).
EXPORT_PLATFORM = "export"
STABLEHLO_PLATFORMS = ("cpu", "cuda")
ONNX_INPUT, ONNX_OUTPUT = "x", "logits"


class ExportError(InferenceError):
  """A model an exporter cannot handle, or an artifact that cannot be read; the message says why."""


def inference_fn(model: Any, params: Any) -> Callable[[jax.Array], jax.Array]:
  """`x -> float32 logits` with the params closed over (they become the artifact's constants)."""
  model = for_platform(model, EXPORT_PLATFORM)

  def fn(x):
    return model.apply(params, x).astype(jnp.float32)

  return fn


def export_stablehlo(
  model: Any,
  params: Any,
  input_shape: Sequence[int],
  input_dtype: Any = jnp.float32,
  platforms: Sequence[str] = STABLEHLO_PLATFORMS,
) -> bytes:
  """The serialized `jax.export.Exported` of the model at a symbolic batch size."""
  (batch,) = jax.export.symbolic_shape("b")
  spec = jax.ShapeDtypeStruct((batch, *input_shape), input_dtype)
  try:
    exported = jax.export.export(jax.jit(inference_fn(model, params)), platforms=platforms)(spec)
  except Exception as e:  # the exporter's own reason, on one line
    raise ExportError(f"jax.export cannot export {type(model).__name__}: {one_line(e)}") from None
  return bytes(exported.serialize())


def load_stablehlo(path: str) -> Callable[[np.ndarray], np.ndarray]:
  """A callable from a `.stablehlo` file: only JAX is needed, not this repo's model code."""
  data = read_model_file(path, "stablehlo")
  try:
    exported = jax.export.deserialize(bytearray(data))
  except Exception as e:
    raise ExportError(
      f"{path} is not a serialized StableHLO export ({one_line(e)}); "
      f"re-export it with scripts/export.py --format stablehlo"
    ) from None
  return lambda x: np.asarray(exported.call(x))


def export_onnx(
  model: Any,
  params: Any,
  input_shape: Sequence[int],
  input_dtype: Any = jnp.float32,
  opset: int = 23,
) -> bytes:
  """The ONNX model (serialized ModelProto) through jax2onnx, batch dimension named "B"."""
  from jax2onnx import to_onnx

  # jax2onnx's IR serializer warns about every shape constant it leaves untyped: noise to a reader.
  logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
  (batch,) = jax.export.symbolic_shape("B")
  try:
    proto = to_onnx(
      inference_fn(model, params),
      [jax.ShapeDtypeStruct((batch, *input_shape), input_dtype)],
      model_name=type(model).__name__,
      opset=opset,
      input_names=[ONNX_INPUT],
      output_names=[ONNX_OUTPUT],
    )
  except Exception as e:
    raise ExportError(f"jax2onnx cannot export {type(model).__name__}: {one_line(e)}") from None
  onnx_passes.simplify(proto)
  return proto.SerializeToString()


def export(
  model: Any, params: Any, input_shape: Sequence[int], fmt: str, input_dtype: Any = jnp.float32
) -> bytes:
  if fmt not in FORMATS:
    raise ExportError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
  if fmt == "onnx":
    return export_onnx(model, params, input_shape, input_dtype)
  if fmt == "iree":
    raise ExportError("iree modules are compiled per target: use serving.iree.export_module")
  return export_stablehlo(model, params, input_shape, input_dtype)


def export_decode_step_onnx(model: Any, params: Any, batch: int = 1) -> tuple[bytes, list[str]]:
  """One KV-cache decode step of a decoder model as ONNX, and its cache input names in order.

  Inputs: `token` int32 [batch, 1], `pos` int32 scalar, then the cache buffers (`cache_0`, ...,
  in `jax.tree.leaves` order of `init_decode_cache`); outputs: `logits` [batch, 1, V] and the
  updated buffers (`cache_out_0`, ...). A runtime loops it: feed each step's cache outputs back.
  """
  from jax2onnx import to_onnx

  from research.models import init_decode_cache

  logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
  model = for_platform(model, EXPORT_PLATFORM)
  leaves, treedef = jax.tree.flatten(init_decode_cache(model, batch))

  def step(token, pos, *cache):
    logits, cache = model.apply(
      params, token, jax.tree.unflatten(treedef, cache), pos, method="decode"
    )
    return (logits.astype(jnp.float32), *jax.tree.leaves(cache))

  names = [f"cache_{i}" for i in range(len(leaves))]
  specs = [jax.ShapeDtypeStruct((batch, 1), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32)]
  try:
    proto = to_onnx(
      step,
      specs + [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves],
      model_name=f"{type(model).__name__}_decode_step",
      input_names=["token", "pos", *names],
      output_names=["logits", *[f"cache_out_{i}" for i in range(len(leaves))]],
    )
  except Exception as e:
    raise ExportError(
      f"jax2onnx cannot export the decode step of {type(model).__name__}: {one_line(e)}"
    ) from None
  return proto.SerializeToString(), names


def _decoder_onnx(fn: Callable, specs: list, name: str, inputs: list, outputs: list) -> bytes:
  """`fn` through jax2onnx, or ExportError naming the function that failed."""
  from jax2onnx import to_onnx

  logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
  try:
    proto = to_onnx(fn, specs, model_name=name, input_names=inputs, output_names=outputs)
  except Exception as e:
    raise ExportError(f"jax2onnx cannot export the {name}: {one_line(e)}") from None
  return proto.SerializeToString()


def export_slot_decode_onnx(
  model: Any, params: Any, slots: int, key_len: int | None = None
) -> tuple[bytes, list[str]]:
  """The decode step of `slots` sequences, each at its own position, as ONNX (what a
  continuous-batching engine steps), and its cache input names in order.

  Inputs: `token` int32 [slots, 1], `pos` int32 [slots] (where each slot's token goes), the
  cache buffers (`cache_0`, ..., `jax.tree.leaves` order of `init_decode_cache`); outputs:
  `logits` [slots, V] and the updated buffers (`cache_out_0`, ...). With `key_len`, attention
  scores only the cache's first `key_len` positions (every slot's position must be below it).
  """
  from research.models import init_decode_cache

  model = for_platform(model, EXPORT_PLATFORM)
  leaves, treedef = jax.tree.flatten(init_decode_cache(model, slots))

  def step(token, pos, *cache):
    logits, cache = model.apply(
      params, token, jax.tree.unflatten(treedef, cache), pos, key_len=key_len, method="decode"
    )
    return (logits[:, 0].astype(jnp.float32), *jax.tree.leaves(cache))

  names = [f"cache_{i}" for i in range(len(leaves))]
  specs = [jax.ShapeDtypeStruct((slots, 1), jnp.int32), jax.ShapeDtypeStruct((slots,), jnp.int32)]
  proto = _decoder_onnx(
    step,
    specs + [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves],
    f"{type(model).__name__}_slot_decode_step",
    ["token", "pos", *names],
    ["logits", *[f"cache_out_{i}" for i in range(len(leaves))]],
  )
  return proto, names


def export_prefill_onnx(model: Any, params: Any, bucket: int) -> tuple[bytes, list[str]]:
  """A prompt's prefill as ONNX: `prompt` int32 [1, bucket] (the prompt, then padding) and
  `length` int32 [] (its true length) in; `logits` [1, V] of the token after the prompt and
  `kv_0`, ... out: each cache buffer's first `bucket` positions (batch 1), which a decode engine
  inserts into a slot. Padding sits after the prompt, so causal attention keeps it out."""
  from jax import lax

  from research.models import init_decode_cache

  model = for_platform(model, EXPORT_PLATFORM)
  empty = init_decode_cache(model, 1)
  longer = init_decode_cache(model.clone(n_ctx=model.n_ctx + 1), 1)
  axes = [
    next(i for i, (a, b) in enumerate(zip(x.shape, y.shape)) if a != b)
    for x, y in zip(jax.tree.leaves(empty), jax.tree.leaves(longer))
  ]

  def prefill(prompt, length):
    logits, cache = model.apply(params, prompt, empty, 0, key_len=bucket, method="decode")
    last = lax.dynamic_index_in_dim(logits[0], length - 1, keepdims=True)
    kv = [lax.slice_in_dim(x, 0, bucket, axis=a) for x, a in zip(jax.tree.leaves(cache), axes)]
    return (last.astype(jnp.float32), *kv)

  names = [f"kv_{i}" for i in range(len(axes))]
  proto = _decoder_onnx(
    prefill,
    [jax.ShapeDtypeStruct((1, bucket), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32)],
    f"{type(model).__name__}_prefill_{bucket}",
    ["prompt", "length"],
    ["logits", *names],
  )
  return proto, names


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
  """How far an engine's logits are from the reference: max |difference|, predictions agreeing."""
  reference, candidate = np.asarray(reference), np.asarray(candidate)
  same = reference.argmax(-1) == candidate.argmax(-1)
  return {
    "examples": int(len(reference)),
    "max_abs_logit_difference": float(np.max(np.abs(reference - candidate))),
    "predictions_identical": bool(same.all()),
    "predictions_differing": int((~same).sum()),
  }


def chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, size: int = 256) -> np.ndarray:
  return np.concatenate([fn(x[i : i + size]) for i in range(0, len(x), size)])


def read_model_file(path: str, what: str) -> bytes:
  """The bytes of an exported model, or an ExportError saying how to make one."""
  if not os.path.isfile(path):
    raise ExportError(
      f"no {what} model file at {path}; export one with scripts/export.py --format {what}"
    )
  with open(path, "rb") as f:
    data = f.read()
  if not data:
    raise ExportError(f"{path} is empty; re-export it with scripts/export.py --format {what}")
  return data


def one_line(e: BaseException) -> str:
  """An exception's message on one line, at most 300 characters (for `error:` lines)."""
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= 300 else text[:297] + "..."


def export_run(
  workdir: str,
  fmt: str,
  out: str,
  checkpoint: str | int = "latest",
  argv: Sequence[str] = (),
  target: str = "host",
  batch: int = 1,
  precision: str = "float32",
) -> dict[str, Any]:
  """Exports a run's checkpoint to `out`, checked against the jitted apply on the test set.

  Writes `out` and `out.json` (what was exported, the check, provenance), each atomically; a
  failed export or check leaves neither. Returns the `out.json` record. `target`, `batch` and
  `precision` are the iree format's (a module compiled for another CPU is not run here: its
  record says so, and scripts/edge.py runs it under emulation).
  """
  from research.data import load_dataset
  from research.outputs import check_output_file
  from research.run_files import check_targets
  from research.serving.restore import load_run

  if fmt not in FORMATS:
    raise ExportError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
  if fmt == "iree":
    from research.serving.iree import check_precision, check_target
    from research.serving.run_kind import require_classifier

    check_target(target)
    check_precision(precision)
    require_classifier(workdir, "scripts/export.py --format iree")
    if batch < 1:
      raise ExportError(f"--batch must be a positive integer, got {batch}")
  # Before anything else: OUT and OUT.json must not land on a run's own files (--out RUN/config
  # would replace RUN/config.json) nor on the run it reads.
  check_targets("--out", out, [out, out + ".json"], inputs=[("--workdir", workdir)])
  if os.path.isdir(out) or out.endswith(("/", os.sep)):
    raise ExportError(f"--out {out} is a directory; give a file name such as model{SUFFIXES[fmt]}")
  check_output_file(out, "--out")
  check_output_file(out + ".json", "--out (its record OUT.json)")
  run = load_run(workdir, checkpoint)
  data = load_dataset(run.config.data)
  x = data.x_test  # float features, or int32 token windows for a language model
  jitted = jax.jit(inference_fn(for_platform(run.model, jax.default_backend()), run.params))
  reference = chunked(lambda chunk: np.asarray(jitted(chunk)), x)
  if fmt == "iree":
    artifact, record = _iree_artifact(run, x, reference, target, batch, precision)
    return _write_export(run, workdir, out, artifact, record, argv)
  artifact = export(run.model, run.params, run.input_shape, fmt, x.dtype)
  if fmt == "onnx":
    import onnxruntime as ort

    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    call = lambda chunk: session.run(None, {ONNX_INPUT: chunk})[0]  # noqa: E731
  else:
    call = jax.export.deserialize(bytearray(artifact)).call
  exported = chunked(lambda chunk: np.asarray(call(chunk)), x)
  check = compare_logits(reference, exported)
  if not check["predictions_identical"]:
    raise ExportError(
      f"the {fmt} export disagrees with the jitted apply on {check['predictions_differing']} "
      f"test predictions (max logit difference {check['max_abs_logit_difference']:.2e}); "
      f"nothing written"
    )
  record = {"format": fmt, "check_against_jitted_apply": check}
  return _write_export(run, workdir, out, artifact, record, argv)


def _write_export(
  run: Any, workdir: str, out: str, artifact: bytes, record: dict, argv: Sequence[str]
) -> dict[str, Any]:
  """Writes the artifact and its record OUT.json, both or neither; returns the record."""
  from research.outputs import json_text, write_all
  from research.provenance import provenance

  record = {
    "format": record.pop("format"),
    "file": os.path.abspath(out),
    "bytes": len(artifact),
    "input_shape": list(run.input_shape),
    "num_classes": run.num_classes,
    "experiment": run.config.experiment,
    "step": run.step,
    **record,
    "provenance": provenance(list(argv), workdir=os.path.abspath(workdir), step=run.step),
  }
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  write_all({out: artifact, out + ".json": json_text(record)})  # both or neither
  return record


def _iree_artifact(
  run: Any, x: np.ndarray, reference: np.ndarray, target: str, batch: int, precision: str
) -> tuple[bytes, dict[str, Any]]:
  """The IREE module and its record. A host module is served on the test set and must give the
  jitted apply's predictions (int8: within the jax int8 engine's disagreement); another
  target's is recorded as not run here."""
  from research.serving.iree import IreeEngine, export_module

  if x.dtype.kind != "f":
    raise ExportError(
      "the iree format serves classifiers (float features); this run is a language model: "
      "export it with --format onnx or stablehlo"
    )
  vmfb, manifest = export_module(
    run.model, run.params, run.input_shape, run.num_classes, target, batch, precision
  )
  record: dict[str, Any] = {"format": "iree", "manifest": manifest}
  if target != "host":
    record["check_against_jitted_apply"] = {
      "run_here": False,
      "why": f"compiled for {target}; scripts/edge.py runs it under emulation on the test set",
    }
    return vmfb, record
  engine = IreeEngine({batch: vmfb}, run.input_shape, precision=precision)
  check = compare_logits(reference, engine.logits(x))
  if precision == "float32" and not check["predictions_identical"]:
    raise ExportError(
      f"the iree module disagrees with the jitted apply on {check['predictions_differing']} "
      f"test predictions (max logit difference {check['max_abs_logit_difference']:.2e}); "
      f"nothing written"
    )
  record["check_against_jitted_apply"] = check
  return vmfb, record
