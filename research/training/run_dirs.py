"""A training's run directories: claimed (locked and checked) before the dataset loads, prepared
(config and numeric environment pinned) once training is about to start, and taken back when a
start fails before its first checkpoint. `research.training.loop.train_runs` holds both.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import jax
import ml_collections
import numpy as np

from research import runtime, workdir_lock
from research import workdir as workdir_lib
from research.errors import UserError


@contextlib.contextmanager
def claimed(
  configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str], primary: bool
) -> Iterator[dict]:
  """Holds every workdir's lock for the block (one writer per workdir; in a multi-process run
  the first process holds it for all), then checks that each run may go on there: its config,
  the kinds of its entries, and the numeric environment, which it yields to be recorded. All
  before the dataset loads, and under the lock, so no other writer changes the run meanwhile.
  The processes of a multi-process run agree: a refusal ends them all at once."""
  numerics = runtime.numeric_environment()
  with contextlib.ExitStack() as stack:
    error = None
    try:
      if primary:
        stack.enter_context(workdir_lock.hold(workdirs))
      for c, w in zip(configs, workdirs):
        workdir_lib.check_config(w, c)
        workdir_lib.check_numerics(w, numerics)
    except UserError as e:
      error = e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      refused = multihost_utils.process_allgather(np.int32(error is not None))
      if error is None and np.any(refused):
        error = workdir_lib.WorkdirError(
          "another process of this run was refused its workdir; its error line says why"
        )
    if error is not None:
      raise error
    yield numerics


@contextlib.contextmanager
def undone_if_failed(
  workdirs: Sequence[str],
  configs: Sequence[ml_collections.ConfigDict],
  primary: bool,
  numerics: dict,
) -> Iterator[None]:
  """Prepares every workdir; a run that fails before its first checkpoint is taken back, so the
  corrected command is not refused (22 of 92 bad starts had left a blocking config.json)."""
  starts = []
  try:
    for w, c in zip(workdirs, configs):
      starts.append(workdir_lib.prepare(w, c, write=primary, numerics=numerics))
    yield
  except BaseException:
    if primary:
      for start in starts:
        start.undo()
    raise
