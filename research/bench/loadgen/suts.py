"""The system under test: the sample library (QSL) and the SUTs LoadGen calls to answer queries.

Padding and batching: the predictor runs only the batch sizes it compiled at warm-up and pads a
batch up to the nearest one (larger batches run in chunks of the largest). Compiling a new shape
mid-run takes long enough to collapse the latency tail, so nothing here compiles: `compile_count`
stays put. In Server, `batching=True` answers whatever is waiting (up to the largest compiled
size) in one call; `batching=False` answers one sample at a time (batch-1 serving).
A predictor error never escapes into LoadGen (it would wait forever): `_Responder` records it and
`run_scenario` raises it after the run.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, NamedTuple, Sequence

import numpy as np

from research.bench.loadgen.binding import LoadGenRunError, _lg

WORKER_JOIN_TIMEOUT_S = 60.0
SERVER_WORKER_NAME = "loadgen-server-worker"


class _SampleLibrary:
  """A QSL over an in-memory array: load and unload have nothing to do."""

  def __init__(self, samples: np.ndarray, performance_count: int):
    self.samples = samples
    self.performance_count = performance_count
    self.handle = _lg().ConstructQSL(len(samples), performance_count, self._load, self._unload)

  def _load(self, indices):
    pass

  def _unload(self, indices):
    pass

  def destroy(self) -> None:
    _lg().DestroyQSL(self.handle)


class _Sample(NamedTuple):
  id: int
  index: int


class _Responder:
  """Runs the predictor on a list of LoadGen samples and completes them, never raising.

  An exception is recorded, the samples are completed empty (LoadGen would otherwise wait for
  them forever) and every later query completes at once; `run_scenario` raises it afterwards.
  """

  def __init__(self, predictor, samples: np.ndarray):
    self.predictor = predictor
    self.samples = samples
    self.error: BaseException | None = None
    self.batch_sizes = collections.Counter()  # samples per predictor call
    self.samples_answered = 0

  def answer(self, query_samples: Sequence[Any]) -> None:
    lg = _lg()
    if self.error is None:
      try:
        x = self.samples[[q.index for q in query_samples]]
        logits = np.ascontiguousarray(self.predictor.logits(x), dtype=np.float32)
        if logits.shape[0] != len(query_samples):
          raise ValueError(
            f"predictor returned {logits.shape[0]} rows for {len(query_samples)} samples"
          )
        row_bytes = logits.strides[0]
        base = logits.ctypes.data
        responses = [
          lg.QuerySampleResponse(q.id, base + i * row_bytes, row_bytes)
          for i, q in enumerate(query_samples)
        ]
        lg.QuerySamplesComplete(responses)  # copies what it logs before returning
        self.batch_sizes[len(query_samples)] += 1
        self.samples_answered += len(query_samples)
        return
      except BaseException as e:  # noqa: BLE001 -- re-raised by run_scenario
        self.error = e
    lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in query_samples])


class _SynchronousSUT:
  """SingleStream / MultiStream / Offline: answered inside LoadGen's issue call.

  A query larger than `chunk` (Offline) is answered and completed chunk by chunk.
  """

  def __init__(self, responder: _Responder, chunk: int):
    self.responder = responder
    self.chunk = chunk
    self.handle = _lg().ConstructSUT(self.issue_queries, self.flush_queries)

  def issue_queries(self, query_samples) -> None:
    for i in range(0, len(query_samples), self.chunk):
      self.responder.answer(query_samples[i : i + self.chunk])

  def flush_queries(self) -> None:
    pass

  def stop(self) -> None:
    pass

  def destroy(self) -> None:
    _lg().DestroySUT(self.handle)


class _ServerSUT:
  """Server: LoadGen's issue call only enqueues; one worker thread answers.

  The worker takes whatever is waiting, up to `max_batch` samples (1 for batch-1 serving), and
  answers them with one predictor call (padded by the predictor to a compiled size).
  """

  def __init__(self, responder: _Responder, max_batch: int):
    self.responder = responder
    self.max_batch = max_batch
    self.queue: collections.deque = collections.deque()
    self.ready = threading.Condition()
    self.stopping = False
    self.handle = _lg().ConstructSUT(self.issue_queries, self.flush_queries)
    self.worker = threading.Thread(target=self._serve, name=SERVER_WORKER_NAME, daemon=True)
    self.worker.start()

  def issue_queries(self, query_samples) -> None:
    # Plain (id, index) pairs: the worker never holds LoadGen's objects past this call.
    pending = [_Sample(q.id, q.index) for q in query_samples]
    with self.ready:
      self.queue.extend(pending)
      self.ready.notify()

  def flush_queries(self) -> None:
    pass

  def _serve(self) -> None:
    while True:
      with self.ready:
        while not self.queue and not self.stopping:
          self.ready.wait()
        if not self.queue:
          return  # stopping, and nothing left to answer
        batch = [self.queue.popleft() for _ in range(min(len(self.queue), self.max_batch))]
      self.responder.answer(batch)

  def stop(self) -> None:
    with self.ready:
      self.stopping = True
      self.ready.notify()
    self.worker.join(WORKER_JOIN_TIMEOUT_S)
    if self.worker.is_alive():
      raise LoadGenRunError(f"the Server worker did not stop within {WORKER_JOIN_TIMEOUT_S:g} s")

  def destroy(self) -> None:
    _lg().DestroySUT(self.handle)
