"""Inference's inputs and outputs as local files: `.npy`, `.npz` or CSV, in and out.

A CSV is read as UTF-8, with or without the byte-order mark spreadsheets write. Its first row is
a header only when a field in it is not a number (`x0,x1,...`); a row of numbers is data, so a
header of numbers (`0,1,2,...`) is read as an example: name the columns with words, or leave
the header out.
"""

from __future__ import annotations

import itertools
import os
import warnings
import zipfile

import numpy as np

from research.data.dataset import DataError
from research.outputs import atomic_path, write_npz

INPUT_SUFFIXES = (".npy", ".npz", ".csv")
OUTPUT_SUFFIXES = (".npy", ".npz", ".csv")


def read_inputs(path: str, key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
  """Features and, when the file carries them, labels.

  An `.npz` gives the array `key` (default `x`, or its only array) and labels from the matching
  `y` key (`x` -> `y`, `x_test` -> `y_test`) when present; a CSV is one example per row, with an
  optional header line (told apart by its content: see the module's docstring).
  """
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in INPUT_SUFFIXES:
    raise DataError(f"input {path!r} has an unknown type; use one of {', '.join(INPUT_SUFFIXES)}")
  if not os.path.isfile(path):
    raise DataError(f"input file {path!r} does not exist")
  if suffix == ".npz" and not zipfile.is_zipfile(path):
    raise DataError(
      f"input {path!r} is not a readable .npz: not a zip archive of arrays; make one with "
      f"scripts/export_dataset.py or numpy.savez(path, x=...)"
    )
  x, labels = _read(path, suffix, key)
  if labels is not None and (labels.ndim != 1 or x.ndim == 0 or len(labels) != len(x)):
    raise DataError(
      f"labels in {path!r} have shape {list(labels.shape)} but the inputs hold "
      f"{len(x) if x.ndim else 0} examples; give one label per example or drop the labels"
    )
  return x, labels


def _read(path: str, suffix: str, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
  try:
    if suffix == ".npy":
      return np.load(path, allow_pickle=False), None
    if suffix == ".csv":
      return _read_csv(path), None
    with np.load(path, allow_pickle=False) as archive:
      names = archive.files
      if key is None:
        key = "x" if "x" in names else (names[0] if len(names) == 1 else None)
      if key is None or key not in names:
        raise DataError(
          f"input {path!r} has no array {key or 'x'!r} (found: "
          f"{', '.join(names) or 'none'}); pick one with --key"
        )
      label_key = "y" + key[1:] if key.startswith("x") else None
      labels = archive[label_key] if label_key in names else None
      return archive[key], labels
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f"input {path!r} is not a readable {suffix} file ({_first_line(e)})") from None


def _read_csv(path: str) -> np.ndarray:
  """One example per row, read as UTF-8 with or without a byte-order mark (spreadsheets write
  one). The first row is a header only when one of its fields is not a number (`x0,x1,...`);
  a row of numbers is always data, so no example is ever dropped as a presumed header."""
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      first = f.readline()
      rows = f if is_header(first) else itertools.chain([first], f)
      with warnings.catch_warnings():  # no rows: said below, in the one error line
        warnings.simplefilter("ignore", UserWarning)
        x = np.loadtxt(rows, delimiter=",", quotechar='"', ndmin=2, dtype=np.float64)
  except UnicodeDecodeError as e:
    raise DataError(
      f"input {path!r} is not UTF-8 text ({e.reason} at byte {e.start}); save it as CSV UTF-8"
    ) from None
  except ValueError as e:
    raise DataError(
      f"input {path!r} has a non-numeric or ragged row ({_first_line(e)}); "
      f"give one example per line, comma-separated numbers"
    ) from None
  if not x.size:
    raise DataError(f"input {path!r} holds no rows of numbers; give one example per line")
  return x


def is_header(line: str) -> bool:
  """Whether a CSV row is a header: some field is not a number (an empty field counts as
  neither, and a row of only empty fields is no header)."""
  for field in line.split(","):
    field = field.strip().strip('"').strip()
    if not field:
      continue
    try:
      float(field)
    except ValueError:
      return True
  return False


def write_predictions(
  path: str, predictions: np.ndarray, probabilities: np.ndarray | None = None
) -> None:
  """Writes atomically. `.npy` holds the probabilities when given, else the labels; `.npz` and
  CSV hold both (CSV columns: prediction, p0, p1, ...)."""
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in OUTPUT_SUFFIXES:
    raise DataError(f"output {path!r} has an unknown type; use one of {', '.join(OUTPUT_SUFFIXES)}")
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise DataError(f"output directory {directory!r} does not exist; create it first")
  if suffix == ".npz":
    arrays = {"predictions": predictions}
    if probabilities is not None:
      arrays["probabilities"] = probabilities
    write_npz(path, **arrays)
    return
  with atomic_path(path) as tmp:
    if suffix == ".npy":
      np.save(tmp, probabilities if probabilities is not None else predictions)
    else:
      columns = [predictions[:, None].astype(np.float64)]
      header = "prediction"
      if probabilities is not None:
        columns.append(probabilities)
        header += "," + ",".join(f"p{i}" for i in range(probabilities.shape[1]))
      fmt = ["%d"] + ["%.6g"] * (sum(c.shape[1] for c in columns) - 1)
      np.savetxt(
        tmp, np.concatenate(columns, axis=1), delimiter=",", header=header, comments="", fmt=fmt
      )


def _first_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return lines[0][:200] if lines else type(e).__name__
