"""Serving: everything after training. Params-only restore (restore.py), precisions (quantize.py),
the jitted predictor (predictor.py) and language-model generation (generate.py)."""

from research.errors import UserError


class InferenceError(UserError, ValueError):
  """Input a model cannot take (shape, dtype, empty, non-finite); the message says what to fix."""
