"""A `jax.profiler` trace of inference, for TensorBoard's Profile tab beside the training trace.

`scripts/bench_inference.py --profile` calls this after the timings (a trace costs time and
would distort them): the jax engine in float32 serves `calls` real-time (batch 1) requests
through its serving path, then `calls` batches of the largest served size, each blocked on,
warmed up and compiled before the trace starts. The trace lands in WORKDIR/plugins/profile/.
"""

from __future__ import annotations

import jax
import numpy as np

from research.serving.engines import EngineFactory
from research.serving.restore import TrainedRun


def trace_inference(
  run: TrainedRun, x: np.ndarray, trace_dir: str, calls: int = 50, batch_size: int = 256
) -> dict[str, int]:
  """Traces batch-1 and batch-`batch_size` calls of the jax engine; returns what was traced."""
  engine = EngineFactory(run).make("jax", (1, batch_size), "float32")
  one = np.asarray(x[:1], np.float32)
  batch = np.resize(np.asarray(x, np.float32), (batch_size, *one.shape[1:]))
  for inputs in (one, batch):  # compile and warm up outside the trace
    engine.logits(inputs)
  jax.profiler.start_trace(trace_dir)
  try:
    for inputs in (one, batch):
      for i in range(calls):  # each call a step: the Profile tab's overview times every one
        with jax.profiler.StepTraceAnnotation(f"inference_batch_{len(inputs)}", step_num=i):
          engine.logits(inputs)  # returns host logits: blocked on
  finally:
    jax.profiler.stop_trace()
  return {"batch_1_calls": calls, f"batch_{batch_size}_calls": calls}
