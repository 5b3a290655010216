"""Inference-aware scaling (Hoffmann et al. 2022; Sardana et al. 2024) on measured costs.

- law.py: the loss law L(N, D) and the published fits.
- fit.py: Chinchilla approaches 1 (envelope) and 3 (parametric), bootstrap intervals.
- plan.py: the inference-aware optimum (Sardana et al.) under a cost model: FLOPs, seconds, dollars.
"""

from research.errors import UserError


class ScalingError(UserError, ValueError):
  """A scaling study that cannot run or fit as asked; the message names the fix."""
