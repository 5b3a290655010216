"""`config.profile_steps = "START:END"`: a `jax.profiler` trace of training steps START+1..END.

The loop runs `log_every` steps per compiled chunk; inside the window it runs one step per chunk,
each under a step marker, so the trace holds exactly those steps and the Profile tab's overview
times each one; both chunk lengths are compiled before the trace starts (compilation would bury
the steps in the timeline). Cutting chunks changes no number: every step runs the same scan
body (`tests/test_dashboard.py` checks a profiled run ends bitwise where an unprofiled one
does). The trace lands in `WORKDIR/plugins/profile/<time>/`, where TensorBoard's Profile tab
(the `tensorboard-plugin-profile` package) finds it.
"""

from __future__ import annotations

import contextlib

from research.config_checks import parse_window


class ProfileWindow:
  """Starts and stops the trace at the window's chunk boundaries."""

  def __init__(self, spec: str, num_steps: int, trace_dir: str):
    self.window = parse_window(spec, num_steps)
    self.trace_dir = trace_dir
    self.active = False

  def chunk_length(self, step: int, k: int) -> int:
    """`k`, shortened so that no chunk crosses START or END; one step per chunk inside the
    window, so each traced call is one training step under its own step marker."""
    if self.window is None:
      return k
    start, end = self.window
    if start <= step < end:
      return 1
    return start - step if step < start < step + k else k

  def step_marker(self, step: int):
    """A `StepTraceAnnotation` while tracing (the Profile tab's per-step times), else nothing."""
    if not self.active:
      return contextlib.nullcontext()
    import jax

    return jax.profiler.StepTraceAnnotation("train", step_num=step + 1)

  def before_chunk(self, step: int) -> None:
    if self.window is not None and step == self.window[0] and not self.active:
      import jax

      jax.profiler.start_trace(self.trace_dir)
      self.active = True

  def after_chunk(self, step: int) -> None:
    """`step` is the step the chunk ended at; its results must be ready (blocked on)."""
    if self.active and step >= self.window[1]:
      self.stop()

  def stop(self) -> None:
    if self.active:
      import jax

      self.active = False
      jax.profiler.stop_trace()
