"""Data sources, chosen by a config's `data.name`."""
from __future__ import annotations

from typing import Any, Mapping

from research.data.batching import BatchSchedule
from research.data.dataset import DataError, Dataset, make_dataset

SOURCES = ("mnist1d", "digits", "npz")


def load_dataset(data_config: Mapping[str, Any]) -> Dataset:
  """Builds the dataset a config describes; unknown sources are a DataError."""
  name = data_config.get("name")
  if name == "mnist1d":
    from research.data.mnist1d import load_mnist1d
    return load_mnist1d(seed=data_config.get("seed", 42),
                        shuffle_seq=data_config.get("shuffle_seq", False))
  if name == "digits":
    from research.data.digits import load_digits
    return load_digits()
  if name == "npz":
    from research.data.files import load_npz
    return load_npz(data_config.get("path", ""))
  raise DataError(f"unknown data source {name!r}; choose one of: {', '.join(SOURCES)}")


__all__ = ["BatchSchedule", "DataError", "Dataset", "SOURCES", "load_dataset", "make_dataset"]
