"""MNIST-1D, generated procedurally by the `mnist1d` package (no download), cached on disk.

Generation costs about 8 s per process (and importing the package 3 s more), which made short
runs mostly overhead. The generated arrays are therefore kept in one `.npz` per generation key
(seed, spatial shuffle, the versions of mnist1d, numpy and scipy) under `cache_dir()`, written
atomically; a cached load gives the very arrays generation gives, and a file that does not read
back whole is generated again and replaced.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
import zipfile
import zlib
from typing import Any

import numpy as np

from research.data.dataset import Dataset, make_dataset
from research.outputs import write_npz

CACHE_ENV = "TRAIN_VS_INFER_CACHE"  # where cached datasets go; overrides the default below
_ARRAYS = ("x", "y", "x_test", "y_test")
_FORMAT = 1  # bump when the cached file's layout changes


def load_mnist1d(seed: int = 42, shuffle_seq: bool = False) -> Dataset:
  """4000 train / 1000 test sequences of length 40, the package's default arguments.

  `seed` is the generator's (42 is the paper's dataset). `shuffle_seq` applies one fixed
  permutation of the 40 positions to every sequence, the paper's spatially shuffled variant.
  """
  raw = _cached_or_generated(seed, shuffle_seq)
  name = "mnist1d_shuffled" if shuffle_seq else "mnist1d"
  return make_dataset(name, raw["x"], raw["y"], raw["x_test"], raw["y_test"], num_classes=10)


def cache_dir() -> str:
  """$TRAIN_VS_INFER_CACHE, else $XDG_CACHE_HOME/train-vs-infer, else ~/.cache/train-vs-infer."""
  if os.environ.get(CACHE_ENV):
    return os.environ[CACHE_ENV]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "train-vs-infer")


def cache_path(seed: int, shuffle_seq: bool) -> str:
  """The cache file of one generation key."""
  digest = hashlib.sha256(json.dumps(_key(seed, shuffle_seq), sort_keys=True).encode())
  return os.path.join(cache_dir(), f"mnist1d-{digest.hexdigest()[:16]}.npz")


def _key(seed: int, shuffle_seq: bool) -> dict[str, Any]:
  """Everything the generated arrays depend on (the package's defaults go with its version)."""
  return {
    "source": "mnist1d",
    "mnist1d": importlib.metadata.version("mnist1d"),
    # generation draws from numpy's RNG and interpolates with scipy: a new version of either
    # could change the arrays, and a stale cache would hide that
    "numpy": np.__version__,
    "scipy": importlib.metadata.version("scipy"),
    "seed": int(seed),
    "shuffle_seq": bool(shuffle_seq),
    "format": _FORMAT,
  }


def _cached_or_generated(seed: int, shuffle_seq: bool) -> dict[str, np.ndarray]:
  path, key = cache_path(seed, shuffle_seq), _key(seed, shuffle_seq)
  raw = _read(path, key)
  if raw is None:
    raw = _generate(seed, shuffle_seq)
    _write(path, key, raw)
  return raw


def _generate(seed: int, shuffle_seq: bool) -> dict[str, np.ndarray]:
  from mnist1d.data import get_dataset_args
  from mnist1d.data import make_dataset as generate

  args = get_dataset_args()
  args.seed = seed
  args.shuffle_seq = shuffle_seq
  state = np.random.get_state()  # the generator reseeds numpy's global RNG; leave it as found
  try:
    raw = generate(args)
  finally:
    np.random.set_state(state)
  return {k: np.asarray(raw[k]) for k in _ARRAYS}


def _read(path: str, key: dict[str, Any]) -> dict[str, np.ndarray] | None:
  """The cached arrays, or None when the file is missing, of another key, or damaged (a zip
  member's CRC, a truncated archive, a missing or misshapen array)."""
  try:
    with np.load(path, allow_pickle=False) as archive:
      if json.loads(str(archive["key"])) != key:
        return None
      raw = {k: archive[k] for k in _ARRAYS}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
    return None
  if not (raw["x"].ndim == raw["x_test"].ndim == 2 and raw["y"].ndim == raw["y_test"].ndim == 1):
    return None
  if len(raw["x"]) != len(raw["y"]) or len(raw["x_test"]) != len(raw["y_test"]):
    return None
  return raw


def _write(path: str, key: dict[str, Any], raw: dict[str, np.ndarray]) -> None:
  """Writes the cache file atomically; a cache that cannot be written costs time, not the run."""
  try:
    write_npz(path, key=np.array(json.dumps(key, sort_keys=True)), **raw)
  except OSError as e:
    print(
      f"warning: cannot cache MNIST-1D in {os.path.dirname(path)} ({e.strerror}); set "
      f"{CACHE_ENV} to a writable directory to skip generation next time",
      file=sys.stderr,
    )
