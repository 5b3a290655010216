"""Cost accounting: analytic FLOPs for every family (flops.py, transformer.py), XLA's counts and
memory (xla.py), hardware profiles, energy, money and break-even (hardware.py)."""

from research.errors import UserError


class CostError(UserError, ValueError):
  """A cost that cannot be computed as asked (unknown profile, missing run); says what to do."""
