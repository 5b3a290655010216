"""The source-code corpus: the same bytes everywhere, split by file, refused if it differs."""

import importlib.metadata

import numpy as np
import pytest

from research.data import load_dataset, source_code
from research.data.dataset import DataError, task_of


@pytest.fixture(scope="module")
def loaded():
  return source_code.load_source_code_corpus(val_tokens=4096, test_tokens=2048)


def test_the_corpus_is_the_pinned_bytes_split_by_file(loaded):
  corpus, record = loaded
  assert record["sha256"] == source_code.SHA256 and record["version"] == "1.14.0"
  assert sum(record["bytes"].values()) > 10_000_000  # the 10 MB of real text
  assert record["files"]["val"] > 20 and record["files"]["test"] > 20
  assert (len(corpus.val), len(corpus.test)) == (4096, 2048)  # the caps
  _, files = source_code.source_files()
  splits = [source_code.split_of(f) for f in files]
  assert splits == [source_code.split_of(f) for f in files]  # by path alone
  assert 0.85 < splits.count("train") / len(files) < 0.95
  # byte level: ids cover the bytes used, and text decodes back through the vocabulary
  assert corpus.vocab_size == record["vocab_size"] and corpus.train.max() == corpus.vocab_size - 1
  assert corpus.train.dtype == np.int32 and len(corpus.train) == record["bytes"]["train"] + (
    record["files"]["train"] - 1
  )  # every file's bytes and a newline between files


def test_another_version_is_refused_with_the_fix(monkeypatch):
  monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.13.3")
  with pytest.raises(DataError, match=r"1\.13\.3 is installed.*pip install sympy==1\.14\.0"):
    source_code.load_source_code_corpus()


def test_changed_sources_are_refused(monkeypatch):
  monkeypatch.setattr(source_code, "SHA256", "0" * 64)
  with pytest.raises(DataError, match="changed on this machine; pip install --force-reinstall"):
    source_code.load_source_code_corpus()


def test_a_config_names_it_as_a_language_model_source():
  data = load_dataset({"name": "source_code", "n_ctx": 64, "val_tokens": 64 * 10 + 1})
  assert task_of(data) == "language_model" and data.x_test.shape == (10, 64)
  assert data.x_train.shape[1] == 64 and data.num_classes == 168
