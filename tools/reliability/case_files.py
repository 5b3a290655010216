"""The files a bad-input case needs before it runs: each helper returns a setup, a function of
the case's temporary directory (tools/reliability/bad_inputs.py)."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from tools.reliability.judge import REPO, chmod_tree, run_subprocess


def text(rel: str, content: str) -> Callable[[str], None]:
  return binary(rel, content.encode())


def binary(rel: str, content: bytes) -> Callable[[str], None]:
  def setup(tmp: str) -> None:
    path = os.path.join(tmp, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(content)

  return setup


def directory(rel: str) -> Callable[[str], None]:
  return lambda tmp: os.makedirs(os.path.join(tmp, rel), exist_ok=True)


def npz(rel: str, make: Callable[[np.random.Generator], dict[str, np.ndarray]], npy: bool = False):
  def setup(tmp: str) -> None:
    arrays = make(np.random.default_rng(0))
    path = os.path.join(tmp, rel)
    if npy:
      np.save(path, arrays["x"])
    else:
      np.savez(path, **arrays)

  return setup


def classes(n: int, shape: tuple[int, ...] = (40,), labels: int | None = None, **replace):
  """A small classification set ([n, *shape] inputs, 10 classes), with arrays replaced."""

  def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {
      "x": rng.normal(size=(n, *shape)).astype(np.float32),
      "y": rng.integers(0, 10, labels if labels is not None else n),
      "x_test": rng.normal(size=(n // 4, *shape)).astype(np.float32),
      "y_test": rng.integers(0, 10, n // 4),
    }
    arrays.update({k: v(arrays) if callable(v) else v for k, v in replace.items()})
    return {k: v for k, v in arrays.items() if v is not None}

  return make


def fake_run(rel: str, spec: str, readonly: bool = False) -> Callable[[str], None]:
  """A workdir holding only the config.json of `spec`: enough for every check that must come
  before a checkpoint is read (the run's kind, where outputs go)."""

  def setup(tmp: str) -> None:
    from research.config import load_config, save_config

    workdir = os.path.join(tmp, rel)
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    save_config(load_config(os.path.join(REPO, spec)), os.path.join(workdir, "config.json"))
    if readonly:
      chmod_tree(workdir, writable=False)

  return setup


def readonly(rel: str) -> Callable[[str], None]:
  def setup(tmp: str) -> None:
    os.makedirs(os.path.join(tmp, rel), exist_ok=True)
    chmod_tree(os.path.join(tmp, rel), writable=False)

  return setup


def trained_lm(rel: str) -> Callable[[str], None]:
  """A tiny language model trained for 10 steps into `rel` (scripts/train.py in a fresh
  process, seconds): for cases that fail only once the model has been measured."""

  def setup(tmp: str) -> None:
    steps = ("num_steps=10", "log_every=5", "eval_every=10", "checkpoint_every=10")
    argv = ["scripts/train.py", "--config", "experiments/lm_markov_tiny.py:tiny", "--workdir",
            os.path.join(tmp, rel), "--no-progress", *(f"--config.{s}" for s in steps)]  # fmt: skip
    code, stderr = run_subprocess(argv, 600)
    if code != 0:
      raise RuntimeError(f"training the tiny LM failed ({code}): {stderr.strip()[-2000:]}")

  return setup


def all_of(*setups: Callable[[str], None]) -> Callable[[str], None]:
  def setup(tmp: str) -> None:
    for s in setups:
      s(tmp)

  return setup


# ----------------------------------------------------------------------------------------------
# The cases. One constructor per script puts every output and workdir under {tmp}.
