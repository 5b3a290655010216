"""Datasets the user names: a local `.npz` holding `x`, `y`, `x_test`, `y_test`."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from research.data.dataset import DataError, Dataset, make_dataset

REQUIRED = ("x", "y", "x_test", "y_test")


def load_npz(path: str | os.PathLike) -> Dataset:
  """Reads the four arrays; anything missing or malformed is a DataError saying what to fix."""
  path = os.fspath(path)
  if not path:
    raise DataError("data.path is empty; set --config.data.path=/path/to/data.npz")
  if not os.path.isfile(path):
    raise DataError(f"data file {path!r} does not exist; check --config.data.path")
  if not zipfile.is_zipfile(path):
    raise DataError(
      f"data file {path!r} is not a readable .npz: not a zip archive of arrays; make one with "
      f"scripts/export_dataset.py or numpy.savez(path, x=..., y=..., x_test=..., y_test=...)"
    )
  try:
    with np.load(path, allow_pickle=False) as archive:
      missing = [k for k in REQUIRED if k not in archive.files]
      if missing:
        raise DataError(
          f"data file {path!r} lacks array(s) {', '.join(missing)}; an .npz needs "
          f"{', '.join(REQUIRED)} (found: {', '.join(archive.files) or 'none'})"
        )
      arrays = {k: archive[k] for k in REQUIRED}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(
      f"data file {path!r} is not a readable .npz ({e}); write it with "
      f"numpy.savez(path, x=..., y=..., x_test=..., y_test=...)"
    ) from None
  name = os.path.splitext(os.path.basename(path))[0]
  return make_dataset(name, arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"])
