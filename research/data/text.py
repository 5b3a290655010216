"""A local UTF-8 text file as a character-level corpus (no tokenizer, no download)."""

from __future__ import annotations

import os

import numpy as np

from research.data.dataset import DataError
from research.data.tokens import TokenCorpus


def load_text_corpus(path: str | os.PathLike, val_fraction: float = 0.1) -> TokenCorpus:
  """Characters of `path` as ids into their sorted set; train first, validation last.

  The vocabulary is every distinct character in the whole file sorted by code point, so the
  same file always gives the same ids. The split is contiguous, not shuffled: the first
  round(n * (1 - val_fraction)) characters train, the rest validate, so no validation text
  sits between training windows. The file is decoded as strict UTF-8 with no newline
  translation (a "\\r\\n" file keeps both characters).
  """
  path = os.fspath(path)
  if not 0.0 < val_fraction < 1.0:
    raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}; pass e.g. 0.1")
  if os.path.isdir(path):
    raise DataError(f"text file {path!r} is a directory; pass the path of a UTF-8 text file")
  if not os.path.isfile(path):
    raise DataError(f"text file {path!r} does not exist; check the path")
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise DataError(
      f"text file {path!r} cannot be read ({e.strerror}); check its permissions"
    ) from None
  if not raw:
    raise DataError(f"text file {path!r} is empty; give a file with some text in it")
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(
      f"text file {path!r} is not valid UTF-8 (bad byte at offset {e.start}); re-save it as UTF-8"
    ) from None
  n = len(text)
  n_train = int(round(n * (1.0 - val_fraction)))
  if n_train < 2 or n - n_train < 2:
    raise DataError(
      f"text file {path!r} has {n} characters, which val_fraction={val_fraction} "
      f"splits {n_train}/{n - n_train}; each side needs at least 2, so use a "
      f"longer file or another val_fraction"
    )
  # Code points through UTF-32 keep this vectorized; np.unique sorts them and gives the ids.
  code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
  vocab, ids = np.unique(code_points, return_inverse=True)
  ids = ids.astype(np.int32)
  name = os.path.splitext(os.path.basename(path))[0]
  return TokenCorpus(
    name=name,
    train=ids[:n_train],
    val=ids[n_train:],
    vocab_size=len(vocab),
    entropy_rate=None,
    itos=tuple(chr(c) for c in vocab.tolist()),
  )
