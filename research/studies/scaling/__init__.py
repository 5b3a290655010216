"""Inference-aware scaling (Hoffmann et al. 2022; Sardana et al. 2024) on measured costs.

- law.py: the loss law L(N, D) and the published fits.
- fit.py: Chinchilla approach 3 (the parametric fit), its bootstrap intervals and residuals.
- lbfgs.py: L-BFGS on many small problems at once (the fit's 5,400 starts).
- envelope.py: Chinchilla approach 1 (the envelope of the learning curves) and its bootstrap.
- plan.py: the inference-aware optimum (Sardana et al.) under a cost model: FLOPs, seconds, dollars.
- grid.py: the grid of runs (model sizes x token budgets), its presets and memory check.
- costs.py: training and serving seconds per token, measured per model size.
- study.py: the study end to end: train the grid, fit, measure costs, plan.
- check.py: train the recommended and the Chinchilla-optimal model; predicted against measured.
- inputs.py: what the command is given (grid, corpus, OUT), checked before anything trains.
- report.py: scaling.json and scaling.md.
- figures.py: the figures, drawn from the study's result.
"""

from research.errors import UserError


class ScalingError(UserError, ValueError):
  """A scaling study that cannot run or fit as asked; the message names the fix."""
