"""Serving: everything after training, from a run's checkpoint to answers.

restore.py       params-only restore: a run's config, model and one checkpoint's params
run_kind.py      classifier or language model, read from config.json before any work
engine.py        what every inference engine offers the serving path (`Engine`), input checks
engines.py       the engines by name (jax, onnxruntime, onnxruntime-int8) and their factory
predictor.py     the jax engine: the jitted `apply`, compiled ahead of time per batch size
quantize.py      cheaper precisions of the params: bf16, int8 weight-only
export.py        StableHLO and ONNX files that serve without this code
onnx_passes.py   graph passes giving jax2onnx's output the form of a hand-written ONNX model
onnx_runtime.py  the ONNX Runtime engines: the export in fp32 and ONNX Runtime's own int8
offline.py       predictions for a file of examples (scripts/infer.py)
generate.py      language-model generation with a KV cache
decode_engine.py continuous batching: prefill, insert into a slot, one decode step over all slots
onnx_decode_engine.py  the same engine interface with its prefill and decode step in ONNX Runtime
"""

from research.errors import UserError


class InferenceError(UserError, ValueError):
  """Input a model cannot take (shape, dtype, empty, non-finite); the message says what to fix."""
