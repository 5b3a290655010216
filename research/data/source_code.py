"""A real text corpus on every machine with no download: the source of a pinned Python package.

The scaling study needs real text (the Markov source saturates at its entropy rate and shows no
power law) of at least 10 MB, identical everywhere. A pure-Python wheel installs its `.py` files
byte for byte, so the source of a pinned release is that text: SymPy 1.14.0 gives 1,532 files,
26.2 MB of code and docstrings. Read as bytes (the vocabulary is the 168 byte values it uses),
split train/validation/test by file (a hash of each file's path), so no file is in two splits.
The bytes' sha256 is checked on load and recorded with every result.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os

import numpy as np

from research.data.dataset import DataError
from research.data.tokens import TokenCorpus

PACKAGE, VERSION = "sympy", "1.14.0"
SHA256 = (
  "9f0ece20da5d8fa69223ac9398c85f88f5d35055a05196dc9459353d4df343e3"  # every file, path order
)
SPLITS = {"train": 90, "val": 5, "test": 5}  # percent of files, by a hash of the path
SEPARATOR = b"\n"  # between files in a split's stream


def source_files(package: str = PACKAGE) -> tuple[str, list[str]]:
  """The installed package's directory and its `.py` files (posix paths relative to it, sorted)."""
  try:
    version = importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    raise DataError(
      f"the source-code corpus needs {package}=={VERSION} installed; "
      f"pip install {package}=={VERSION}"
    ) from None
  if version != VERSION:
    raise DataError(
      f"the source-code corpus is {package}=={VERSION}, but {version} is installed, which gives "
      f"other bytes; pip install {package}=={VERSION}"
    )
  spec = importlib.util.find_spec(package)
  root = os.path.dirname(spec.origin)
  files = []
  for directory, _, names in os.walk(root):
    files += [os.path.relpath(os.path.join(directory, n), root) for n in names if n.endswith(".py")]
  return root, sorted(f.replace(os.sep, "/") for f in files)


def split_of(path: str) -> str:
  """A file's split, fixed by its path alone (the same on every machine and run)."""
  bucket = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big") % 100
  edge = 0
  for name, percent in SPLITS.items():
    edge += percent
    if bucket < edge:
      return name
  raise AssertionError("SPLITS add up to 100")


def load_source_code_corpus(
  val_tokens: int = 0, test_tokens: int = 0
) -> tuple[TokenCorpus, dict[str, object]]:
  """The corpus (train, val and test byte streams as ids) and its record: package, version,
  sha256 of every file's bytes in path order, bytes and files per split.

  `val_tokens`/`test_tokens` > 0 keep only the first that many of those streams (evaluation
  cost grows with them; the files are in hash order, so the first ones are no special subset).
  """
  root, files = source_files()
  digest = hashlib.sha256()
  parts: dict[str, list[tuple[bytes, bytes]]] = {name: [] for name in SPLITS}
  for path in files:
    with open(os.path.join(root, path), "rb") as f:
      data = f.read()
    digest.update(data)
    parts[split_of(path)].append((hashlib.sha256(path.encode()).digest(), data))
  sha256 = digest.hexdigest()
  if sha256 != SHA256:
    raise DataError(
      f"the installed {PACKAGE} {VERSION} sources have sha256 {sha256[:16]}, not {SHA256}: they "
      f"were changed on this machine; pip install --force-reinstall {PACKAGE}=={VERSION}"
    )
  streams = {
    name: np.frombuffer(SEPARATOR.join(data for _, data in sorted(p)), np.uint8)
    for name, p in parts.items()
  }
  present = np.flatnonzero(sum(np.bincount(s, minlength=256) for s in streams.values()))
  ids = np.full(256, -1, np.int32)
  ids[present] = np.arange(len(present), dtype=np.int32)
  limits = {"val": val_tokens, "test": test_tokens}
  encoded = {}
  for name, stream in streams.items():
    if limits.get(name):
      stream = stream[: limits[name]]
    encoded[name] = ids[stream]
  record = {
    "package": PACKAGE,
    "version": VERSION,
    "sha256": sha256,
    "files": {name: len(p) for name, p in parts.items()},
    "bytes": {name: int(sum(len(data) for _, data in p)) for name, p in parts.items()},
    "vocab_size": int(len(present)),
    "level": "byte",
  }
  corpus = TokenCorpus(
    name=f"{PACKAGE}-{VERSION}-source",
    train=encoded["train"],
    val=encoded["val"],
    vocab_size=len(present),
    test=encoded["test"],
  )
  return corpus, record
