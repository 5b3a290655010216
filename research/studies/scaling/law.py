"""The Chinchilla loss law L(N, D) = E + A / N**alpha + B / D**beta and what follows from it.

N is non-embedding parameters, D training tokens, L loss in nats per token. The published fits
are kept beside ours (their N counts every parameter and their L is nats per subword token, so
only the exponents and tokens per parameter compare across studies, never E, A or B).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Law:
  E: float
  A: float
  B: float
  alpha: float
  beta: float

  def loss(self, n, d) -> np.ndarray:
    """L(N, D), elementwise."""
    n, d = np.asarray(n, float), np.asarray(d, float)
    return self.E + self.A / n**self.alpha + self.B / d**self.beta

  def tokens_for_loss(self, n, target: float) -> np.ndarray:
    """The D with L(N, D) = target; inf where even infinite data leaves N above the target."""
    n = np.asarray(n, float)
    room = target - self.E - self.A / n**self.alpha  # what the data term may still cost
    with np.errstate(divide="ignore", invalid="ignore"):
      d = (self.B / room) ** (1.0 / self.beta)
    return np.where(room > 0, d, np.inf)

  def smallest_params_for_loss(self, target: float) -> float:
    """The N below which the target cannot be reached with any amount of data."""
    if target <= self.E:
      return math.inf
    return (self.A / (target - self.E)) ** (1.0 / self.alpha)

  def compute_optimal(self, flops) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) minimising L at C = 6 N D training FLOPs (Hoffmann et al. 2022, eq. 4)."""
    c = np.asarray(flops, float) / 6.0
    g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
    n = g * c ** (self.beta / (self.alpha + self.beta))
    return n, c / n

  def tokens_per_param_at(self, flops) -> np.ndarray:
    n, d = self.compute_optimal(flops)
    return d / n

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


# Hoffmann et al. 2022 (approach 3) and Besiroglu et al. 2024 (Epoch AI's refit of the same data).
CHINCHILLA = Law(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
EPOCH_AI = Law(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
PUBLISHED = {"Chinchilla (Hoffmann et al. 2022)": CHINCHILLA, "Epoch AI (2024)": EPOCH_AI}
