"""Cost accounting: analytic FLOPs for every family (flops.py, over each family's count in
research/models), XLA's counts and memory (xla.py), hardware profiles, energy, money and
break-even (hardware.py). Nothing here imports training."""

from research.errors import UserError


class CostError(UserError, ValueError):
  """A cost that cannot be computed as asked (unknown profile, missing run); says what to do."""
