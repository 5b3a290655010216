"""The one in-memory dataset type every source returns."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from research.errors import UserError


class DataError(UserError, ValueError):
  """A data source that cannot give a usable dataset; the message says what to fix."""


CLASSIFICATION = "classification"  # one label per example
LANGUAGE_MODEL = "language_model"  # one next-token target per position
# Sources of token streams, cut into windows with one next-token target per position; every
# other source gives one label per example.
TOKEN_SOURCES = ("markov", "text", "source_code")


def task_of(data: Dataset | Mapping[str, Any]) -> str:
  """CLASSIFICATION or LANGUAGE_MODEL: the one place a run's task is decided.

  Of a loaded Dataset, by its targets (one per example, or one per position); of a data config
  (a run's `config.data`, read from a workdir without loading anything), by the source it names,
  which is what that source's Dataset will say. Evaluators, the serving tools' run checks and the
  validation split all ask here.
  """
  if isinstance(data, Dataset):
    return LANGUAGE_MODEL if data.y_train.ndim > 1 else CLASSIFICATION
  return LANGUAGE_MODEL if data.get("name") in TOKEN_SOURCES else CLASSIFICATION


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test arrays with integer labels in [0, num_classes).

  A classification set has one label per example (y: [N]); a sequence set has one target per
  position (x, y: [N, T] token ids, y the next token). `loss_floor` is the best achievable test
  loss in nats per target when the source is known (a Markov chain's entropy rate), else None.
  `x_val`, `y_val` are a validation split carved from the training data (`split_validation`),
  or None: model selection looks at them, never at the test split.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  loss_floor: float | None = None
  x_val: np.ndarray | None = None
  y_val: np.ndarray | None = None

  @property
  def targets_per_example(self) -> int:
    return int(np.prod(self.y_train.shape[1:], dtype=np.int64))

  @property
  def task(self) -> str:
    """`task_of(self)`: the train loop picks its evaluator by this name."""
    return task_of(self)

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


def make_dataset(
  name: str, x_train, y_train, x_test, y_test, num_classes: int | None = None
) -> Dataset:
  """Checks shapes and labels, casts to float32/int32, and infers the class count."""
  x_train, x_test = np.asarray(x_train), np.asarray(x_test)
  y_train, y_test = np.asarray(y_train), np.asarray(y_test)
  for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    if x.ndim < 2:
      raise DataError(f"{name}: {split} inputs need shape (examples, features...), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
      raise DataError(
        f"{name}: {split} labels need shape ({len(x)},) to match the inputs, got {y.shape}"
      )
    if len(x) == 0:
      raise DataError(f"{name}: the {split} split is empty")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
      raise DataError(f"{name}: {split} inputs must be real numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
      raise DataError(f"{name}: {split} inputs contain NaN or inf")
    if not (
      np.issubdtype(y.dtype, np.integer)
      or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))
    ):
      raise DataError(f"{name}: {split} labels must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
      raise DataError(f"{name}: {split} labels must be >= 0, found {y.min()}")
  if x_train.shape[1:] != x_test.shape[1:]:
    raise DataError(
      f"{name}: train inputs {x_train.shape[1:]} and test inputs "
      f"{x_test.shape[1:]} differ in shape per example"
    )
  inferred = int(max(y_train.max(), y_test.max())) + 1
  num_classes = inferred if num_classes is None else num_classes
  if inferred > num_classes:
    raise DataError(f"{name}: labels reach {inferred - 1} but num_classes is {num_classes}")
  return Dataset(
    name,
    x_train.astype(np.float32),
    y_train.astype(np.int32),
    x_test.astype(np.float32),
    y_test.astype(np.int32),
    num_classes,
  )


def make_sequence_dataset(
  name: str, x_train, y_train, x_test, y_test, num_classes: int, loss_floor: float | None = None
) -> Dataset:
  """Token windows and their next-token targets, int32 [N, T], ids in [0, num_classes)."""
  arrays = {}
  for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape != y.shape or len(x) == 0:
      raise DataError(
        f"{name}: {split} tokens and targets need one shape (windows, positions), "
        f"got {x.shape} and {y.shape}"
      )
    for what, a in (("tokens", x), ("targets", y)):
      if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{name}: {split} {what} must be integer ids, got dtype {a.dtype}")
      if a.min() < 0 or a.max() >= num_classes:
        raise DataError(
          f"{name}: {split} {what} must lie in [0, {num_classes}), found [{a.min()}, {a.max()}]"
        )
    arrays[split] = (x.astype(np.int32), y.astype(np.int32))
  if arrays["train"][0].shape[1] != arrays["test"][0].shape[1]:
    raise DataError(f"{name}: train and test windows differ in length")
  return Dataset(name, *arrays["train"], *arrays["test"], num_classes, loss_floor)


def split_validation(data: Dataset, size: int) -> Dataset:
  """`data` with `size` training examples moved into a validation split (0: unchanged).

  Deterministic: a classification set gives up examples chosen by a fixed-seed permutation (a
  file's training set may be sorted by class), kept in their original order; a sequence set
  gives up its last windows, so validation text follows training text as test text does (they
  share one boundary token, the last training target). The rest keep their order.
  """
  if size == 0:
    return data
  n = len(data.x_train)
  if not 0 < size < n:
    raise DataError(
      f"{data.name}: data.validation_size must be between 0 and {n - 1} (the training split has "
      f"{n} examples), got {size}"
    )
  if data.task == LANGUAGE_MODEL:
    val = np.arange(n - size, n)
  else:
    val = np.sort(np.random.default_rng(0).permutation(n)[:size])
  keep = np.ones(n, bool)
  keep[val] = False
  return dataclasses.replace(
    data,
    x_train=data.x_train[keep],
    y_train=data.y_train[keep],
    x_val=data.x_train[val],
    y_val=data.y_train[val],
  )
