"""The one batching schedule: which examples make up the batch at a given step.

A batch is a pure function of (step, seed), so the iterator's position is the step number and a
resumed run sees exactly the batches an uninterrupted one would. The default is the MNIST-1D
reference protocol: sequential slices of the training set, no shuffling.
"""

from __future__ import annotations

import numpy as np

from research.data.dataset import DataError


class BatchSchedule:
  """Example indices for any range of steps; epochs are `num_examples // batch_size` steps."""

  def __init__(self, num_examples: int, batch_size: int, shuffle: bool = False, seed: int = 0):
    if batch_size <= 0:
      raise DataError(f"batch_size must be positive, got {batch_size}")
    if batch_size > num_examples:
      raise DataError(
        f"batch_size {batch_size} exceeds the {num_examples} training examples; "
        f"lower --config.batch_size"
      )
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.shuffle = shuffle
    self.seed = seed
    self.steps_per_epoch = num_examples // batch_size
    self._cached_epoch: tuple[int, np.ndarray] | None = None

  def _order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self.num_examples, dtype=np.int32)
    if self._cached_epoch is None or self._cached_epoch[0] != epoch:
      rng = np.random.default_rng((self.seed, epoch))
      self._cached_epoch = (epoch, rng.permutation(self.num_examples).astype(np.int32))
    return self._cached_epoch[1]

  def indices(self, step: int) -> np.ndarray:
    """Indices of the batch taken at `step` (0-based)."""
    epoch, within = divmod(step, self.steps_per_epoch)
    start = within * self.batch_size
    return self._order(epoch)[start : start + self.batch_size]

  def chunk(self, first_step: int, num_steps: int) -> np.ndarray:
    """Indices for `num_steps` consecutive steps, shape (num_steps, batch_size)."""
    return np.stack([self.indices(s) for s in range(first_step, first_step + num_steps)])
