"""Data sources, chosen by a config's `data.name`."""

from __future__ import annotations

from typing import Any, Mapping

from research.data.batching import BatchSchedule
from research.data.dataset import DataError, Dataset, make_dataset, split_validation

SOURCES = ("mnist1d", "digits", "npz", "markov", "text", "source_code")


def load_dataset(data_config: Mapping[str, Any]) -> Dataset:
  """Builds the dataset a config describes, with `validation_size` training examples carved out
  for validation (0: none); unknown sources are a DataError."""
  return split_validation(_load_source(data_config), data_config.get("validation_size", 0))


def _load_source(data_config: Mapping[str, Any]) -> Dataset:
  name = data_config.get("name")
  if name == "mnist1d":
    from research.data.mnist1d import load_mnist1d

    return load_mnist1d(
      seed=data_config.get("seed", 42), shuffle_seq=data_config.get("shuffle_seq", False)
    )
  if name == "digits":
    from research.data.digits import load_digits

    return load_digits()
  if name == "npz":
    from research.data.files import load_npz

    return load_npz(data_config.get("path", ""))
  if name == "markov":
    from research.data.markov import load_markov_corpus
    from research.data.tokens import corpus_to_dataset

    corpus = load_markov_corpus(
      vocab_size=data_config.get("vocab_size", 32),
      branching=data_config.get("branching", 4),
      source_seed=data_config.get("seed", 0),
      train_tokens=data_config.get("train_tokens", 1_000_000),
      val_tokens=data_config.get("val_tokens", 100_000),
      sample_seed=data_config.get("sample_seed", 1),
    )
    return corpus_to_dataset(corpus, data_config.get("n_ctx", 64))
  if name == "text":
    from research.data.text import load_text_corpus
    from research.data.tokens import corpus_to_dataset

    corpus = load_text_corpus(data_config.get("path", ""), data_config.get("val_fraction", 0.1))
    return corpus_to_dataset(corpus, data_config.get("n_ctx", 64))
  if name == "source_code":
    from research.data.source_code import load_source_code_corpus
    from research.data.tokens import corpus_to_dataset

    corpus, _ = load_source_code_corpus(val_tokens=data_config.get("val_tokens", 0))
    return corpus_to_dataset(corpus, data_config.get("n_ctx", 64))
  raise DataError(f"unknown data source {name!r}; choose one of: {', '.join(SOURCES)}")


__all__ = [
  "BatchSchedule",
  "DataError",
  "Dataset",
  "SOURCES",
  "load_dataset",
  "make_dataset",
  "split_validation",
]
