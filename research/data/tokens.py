"""Token streams for next-token language models, and their cut into (context, target) windows.

A corpus is two int32 streams (train, then validation) over a vocabulary of `vocab_size` ids.
`windows` turns a stream into examples x [N, n_ctx] and targets y [N, n_ctx] with y one token
ahead of x, so a model that predicts every position gets n_ctx training signals per example.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.data.dataset import DataError, Dataset, make_sequence_dataset


@dataclasses.dataclass(frozen=True)
class TokenCorpus:
  """Train and validation token ids in [0, vocab_size), stored as read-only int32 copies.

  `entropy_rate` (nats/token) is the least loss any model can reach when the source is known
  (a Markov chain), None for natural text; `itos` maps ids to characters for text, None otherwise.
  """

  name: str
  train: np.ndarray
  val: np.ndarray
  vocab_size: int
  entropy_rate: float | None = None
  itos: tuple[str, ...] | None = None
  test: np.ndarray | None = None  # a third split, held out from model selection, where one exists

  def __post_init__(self):
    if self.vocab_size < 1:
      raise DataError(f"{self.name}: vocab_size must be positive, got {self.vocab_size}")
    if self.itos is not None and len(self.itos) != self.vocab_size:
      raise DataError(
        f"{self.name}: itos has {len(self.itos)} entries but vocab_size is "
        f"{self.vocab_size}; they must match"
      )
    for split in ("train", "val", "test"):
      if getattr(self, split) is None:
        continue
      ids = _checked_ids(getattr(self, split), self.vocab_size, f"{self.name}: {split} stream")
      ids = np.array(ids, dtype=np.int32)  # a private copy, so read-only cannot leak to the caller
      ids.setflags(write=False)
      object.__setattr__(self, split, ids)


def _checked_ids(ids, vocab_size: int, what: str) -> np.ndarray:
  ids = np.asarray(ids)
  if ids.ndim != 1:
    raise DataError(f"{what} must be a 1-D array of token ids, got shape {ids.shape}")
  if not np.issubdtype(ids.dtype, np.integer):
    raise DataError(f"{what} must hold integer token ids, got dtype {ids.dtype}")
  if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
    raise DataError(
      f"{what} has ids outside [0, {vocab_size}) (min {ids.min()}, "
      f"max {ids.max()}); fix the vocabulary size or the ids"
    )
  return ids


def windows(
  tokens: np.ndarray, n_ctx: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """x [N, n_ctx] and y [N, n_ctx] int32 with y[i, t] = tokens[i * stride + t + 1].

  `stride` defaults to n_ctx (non-overlapping windows); a trailing piece too short for a full
  window is dropped. Each window needs n_ctx + 1 tokens, so a shorter stream is an error.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 1:
    raise DataError(f"token stream must be 1-D, got shape {tokens.shape}")
  if n_ctx < 1:
    raise DataError(f"n_ctx must be at least 1, got {n_ctx}")
  stride = n_ctx if stride is None else stride
  if stride < 1:
    raise DataError(f"stride must be at least 1, got {stride}")
  if len(tokens) < n_ctx + 1:
    raise DataError(
      f"token stream has {len(tokens)} tokens but a window of n_ctx={n_ctx} needs "
      f"{n_ctx + 1}; lower n_ctx or use more data"
    )
  view = np.lib.stride_tricks.sliding_window_view(tokens, n_ctx + 1)[::stride]
  return view[:, :-1].astype(np.int32), view[:, 1:].astype(np.int32)


def corpus_to_dataset(corpus: TokenCorpus, n_ctx: int) -> Dataset:
  """Non-overlapping windows of the train stream (train) and the val stream (test).

  `num_classes` is the vocabulary size, `input_shape` is (n_ctx,), and `loss_floor` the source's
  entropy rate when known. A window's first position sees no context, so a perfect model's
  loss on it is the marginal entropy: the floor is reachable only as n_ctx grows.
  """
  x_train, y_train = windows(corpus.train, n_ctx)
  x_test, y_test = windows(corpus.val, n_ctx)
  return make_sequence_dataset(
    corpus.name, x_train, y_train, x_test, y_test, corpus.vocab_size, loss_floor=corpus.entropy_rate
  )


def encode(corpus: TokenCorpus, text: str) -> np.ndarray:
  """Character ids (int32) of `text` in a text corpus's vocabulary."""
  itos = _itos(corpus)
  stoi = {ch: i for i, ch in enumerate(itos)}
  unknown = sorted(set(text) - stoi.keys())
  if unknown:
    raise DataError(
      f"{corpus.name}: characters {''.join(unknown)!r} are not in the vocabulary; "
      f"encode only text drawn from the corpus's characters"
    )
  return np.array([stoi[ch] for ch in text], dtype=np.int32)


def decode(corpus: TokenCorpus, ids) -> str:
  """The characters that token ids stand for in a text corpus."""
  itos = _itos(corpus)
  ids = _checked_ids(ids, corpus.vocab_size, f"{corpus.name}: ids to decode")
  return "".join(itos[i] for i in ids.tolist())


def _itos(corpus: TokenCorpus) -> tuple[str, ...]:
  if corpus.itos is None:
    raise DataError(
      f"{corpus.name}: has no characters (itos is None), so it cannot be decoded; "
      f"encode/decode work only on text corpora"
    )
  return corpus.itos
