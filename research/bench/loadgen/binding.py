"""The mlperf_loadgen binding, imported late, and the error a failed run raises.

Its own module because the SUTs, the log readers and the scenarios all need both, and none of
them may import another's layer above it.
"""

from __future__ import annotations


class LoadGenRunError(RuntimeError):
  """The SUT failed during a LoadGen run; `__cause__` holds the original exception."""


def _lg():
  import mlperf_loadgen  # imported late: only benchmarks need the package

  return mlperf_loadgen
