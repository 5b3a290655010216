"""Evaluation chosen by task, not by `if` in the loop: one evaluator per kind of dataset.

An evaluator owns its jitted eval step and its held-out arrays, and says what its result means:
the scalars TensorBoard gets, the fields `summary.json` gets, and the throughput of a train chunk
in its own units (examples, or tokens for a language model). `make_evaluator` picks the class by
`Dataset.task`. Losses are sums and counts over padded batches, so the mean is exact whatever the
batch size (algorithmic-efficiency's convention).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from research.data import Dataset
from research.data.dataset import CLASSIFICATION, LANGUAGE_MODEL
from research.training.losses import cross_entropy_sum

EvalStep = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


def make_eval_step(model: Any) -> EvalStep:
  """(params, x, y, mask) -> (loss sum, correct count, target count), for padded batches.

  A target is an example's label, or one position of a sequence (next-token prediction).
  """

  def eval_step(params, x, y, mask):
    logits = model.apply(params, x).astype(jnp.float32)
    losses = jax.vmap(lambda l, t: cross_entropy_sum(l[None], t[None]))(logits, y)
    correct = jnp.sum((jnp.argmax(logits, -1) == y).reshape(len(y), -1), axis=1)
    per_example = y[0].size
    return jnp.sum(losses * mask), jnp.sum(correct * mask), jnp.sum(mask) * per_example

  return eval_step


def evaluate(
  eval_fn: EvalStep, params: Any, x: np.ndarray, y: np.ndarray, batch_size: int
) -> dict[str, float]:
  """Test loss and accuracy over every example; the last batch is padded and masked out."""
  loss = correct = count = 0.0
  for start in range(0, len(x), batch_size):
    xb, yb = x[start : start + batch_size], y[start : start + batch_size]
    n = len(xb)
    mask = np.arange(batch_size) < n
    if n < batch_size:
      xb = np.concatenate([xb, np.zeros((batch_size - n, *xb.shape[1:]), xb.dtype)])
      yb = np.concatenate([yb, np.zeros((batch_size - n, *yb.shape[1:]), yb.dtype)])
    l, c, k = eval_fn(params, xb, yb, mask)
    loss, correct, count = loss + float(l), correct + float(c), count + float(k)
  return {"test_loss": loss / count, "test_accuracy": correct / count}


def language_model_metrics(
  loss_nats: float, floor: float | None, prefix: str = ""
) -> dict[str, float]:
  """Per-token loss in bits and as perplexity; with a known source, the gap to its entropy rate."""
  out = {
    f"{prefix}bits_per_token": loss_nats / math.log(2),
    f"{prefix}perplexity": math.exp(min(loss_nats, 700.0)),
  }
  if floor is not None:
    out.update({f"{prefix}loss_floor": floor, f"{prefix}gap_to_floor": loss_nats - floor})
  return out


class ClassificationEvaluator:
  """Loss and accuracy of a classifier on the test split, and on the validation split if any.

  The best checkpoint is chosen by `score` (higher is better), which reads the validation
  split only: the test split never takes part in model selection.
  """

  task = CLASSIFICATION
  score_name = "val_accuracy"

  def __init__(self, model: Any, data: Dataset, batch_size: int):
    self.data = data
    self.batch_size = min(batch_size, len(data.x_test))
    self.eval_fn = jax.jit(make_eval_step(model))

  def compile(self, params: Any) -> float:
    """Compiles the eval step ahead of the loop; returns the seconds it took."""
    t = time.perf_counter()
    b = self.batch_size
    self.eval_fn.lower(
      params, self.data.x_test[:b], self.data.y_test[:b], np.ones(b, bool)
    ).compile()
    return time.perf_counter() - t

  @property
  def has_validation(self) -> bool:
    return self.data.x_val is not None

  def __call__(self, params: Any) -> dict[str, float]:
    """{'test_loss', 'test_accuracy'} over the whole test split, and 'val_*' likewise."""
    result = evaluate(self.eval_fn, params, self.data.x_test, self.data.y_test, self.batch_size)
    if self.has_validation:
      val = evaluate(self.eval_fn, params, self.data.x_val, self.data.y_val, self.batch_size)
      result.update({k.replace("test_", "val_"): v for k, v in val.items()})
    return result

  def score(self, result: dict[str, float]) -> float | None:
    """The model-selection score of one evaluation (higher is better); None without validation."""
    return result["val_accuracy"] if self.has_validation else None

  def scalars(self, result: dict[str, float]) -> dict[str, float]:
    """TensorBoard scalars for one evaluation."""
    out = {"test/loss": result["test_loss"], "test/accuracy": result["test_accuracy"]}
    if self.has_validation:
      out.update({"val/loss": result["val_loss"], "val/accuracy": result["val_accuracy"]})
    return out

  def summary(self, result: dict[str, float]) -> dict[str, float]:
    """Extra summary.json fields for the final evaluation (none for a classifier)."""
    return {}

  def throughput(self, examples: int, seconds: float) -> dict[str, float]:
    """Extra perf scalars of a train chunk, beyond examples/s (none for a classifier)."""
    return {}


class LanguageModelEvaluator(ClassificationEvaluator):
  """Per-token loss and accuracy of next-token prediction, in nats, bits and perplexity, with the
  gap to the source's entropy rate when it is known."""

  task = LANGUAGE_MODEL
  score_name = "-val_loss"

  def score(self, result: dict[str, float]) -> float | None:
    """Minus the validation loss: per-token loss ranks language models, accuracy ties often."""
    return -result["val_loss"] if self.has_validation else None

  def scalars(self, result: dict[str, float]) -> dict[str, float]:
    return {
      **super().scalars(result),
      **language_model_metrics(result["test_loss"], self.data.loss_floor, "test/"),
    }

  def summary(self, result: dict[str, float]) -> dict[str, float]:
    return language_model_metrics(result["test_loss"], self.data.loss_floor)

  def throughput(self, examples: int, seconds: float) -> dict[str, float]:
    return {"train_speed/tokens_per_second": examples * self.data.targets_per_example / seconds}


EVALUATORS: dict[str, type[ClassificationEvaluator]] = {
  CLASSIFICATION: ClassificationEvaluator,
  LANGUAGE_MODEL: LanguageModelEvaluator,
}


def make_evaluator(model: Any, data: Dataset, batch_size: int) -> ClassificationEvaluator:
  """The evaluator for `data.task`, over its test split in batches of `batch_size`."""
  return EVALUATORS[data.task](model, data, batch_size)
