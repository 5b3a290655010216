"""The one place that writes TensorBoard event files, without TensorFlow.

`flax.metrics.tensorboard` and `clu.metric_writers` import TensorFlow, which this project does
not install. TensorBoard itself ships a TF-free record writer and TF-free builders for the
summary protos it reads back (scalars, text, images, the HParams dashboard); this module wraps
them. TensorBoard's own `EventFileWriter` is not used: it resolves `tensorboard.compat.tf`, which
runs `import tensorflow` and only falls back to a stub when that fails, so on a machine with
TensorFlow installed it would load TF (and let it claim the GPU). The records are written with
TensorBoard's TF-free `RecordWriter` instead; `tests/test_tensorboard_writer.py` checks that no
import of `tensorflow` is even attempted.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.record_writer import RecordWriter

HParamValue = bool | int | float | str

_FLUSH_SECS = 10.0
_file_counter = itertools.count()

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG IHDR colour type -> channels, which is what `Summary.Image.colorspace` means.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class _TypeOnlyDomain(hparams_summary.Domain):
  """Declares an hparam's type but no domain.

  A discrete domain built from one run's value would make the dashboard's filter hide every run
  with another value (TensorBoard shows the config of one arbitrary run). Type-only is also what
  TensorBoard infers itself for numbers when no config is written.
  """

  _TYPES = {
    bool: api_pb2.DATA_TYPE_BOOL,
    float: api_pb2.DATA_TYPE_FLOAT64,
    str: api_pb2.DATA_TYPE_STRING,
  }

  def __init__(self, dtype: type):
    self._dtype = dtype

  @classmethod
  def of(cls, value: HParamValue) -> _TypeOnlyDomain:
    # bool before int: bool is an int subclass. The plugin stores every number as a float64.
    return cls(bool if isinstance(value, bool) else str if isinstance(value, str) else float)

  @property
  def dtype(self) -> type:
    return self._dtype

  def sample_uniform(self, rng: Any = None) -> Any:
    raise NotImplementedError("a type-only domain has nothing to sample")

  def update_hparam_info(self, hparam_info: api_pb2.HParamInfo) -> None:
    hparam_info.type = self._TYPES[self._dtype]


def _hparam_value(value: Any) -> HParamValue:
  """A value the HParams plugin can store: bool, number or string.

  numpy/jax scalars become Python scalars first so `np.float32(0.1)` stays a number; anything else
  (tuples, None, lists) is stored as its `str`, which is still filterable in the dashboard.
  """
  if getattr(value, "shape", None) == () and hasattr(value, "item"):
    value = value.item()
  if isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def _png_size(png_bytes: bytes) -> tuple[int, int, int]:
  """(height, width, channels) from the IHDR chunk, so the event carries the real image size."""
  if len(png_bytes) < 26 or png_bytes[:8] != _PNG_SIGNATURE or png_bytes[12:16] != b"IHDR":
    raise ValueError("image() expects already-encoded PNG bytes")
  width, height = struct.unpack(">II", png_bytes[16:24])
  return height, width, _PNG_CHANNELS.get(png_bytes[25], 0)


class SummaryWriter:
  """One run directory's event file.

  Everything for a run (metrics, text, images, hparams) must share the directory: the HParams
  dashboard pairs a run's hparams with the scalars of that same run.
  """

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = os.path.abspath(os.fspath(logdir))
    os.makedirs(self.logdir, exist_ok=True)
    # Same name pattern as TensorBoard's writer; the counter keeps two writers of one process
    # (same second, same pid) from sharing a file.
    name = (
      f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
      f"{os.getpid()}.{next(_file_counter)}"
    )
    self.path = os.path.join(self.logdir, name)
    self._records = RecordWriter(open(self.path, "wb"))
    self._closed = False
    self._last_flush = time.monotonic()
    self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self.flush()

  def _add(self, event: event_pb2.Event) -> None:
    if self._closed:
      raise RuntimeError(f"SummaryWriter for {self.logdir} is already closed")
    self._records.write(event.SerializeToString())
    # No background thread (unlike EventFileWriter), so flush here to let a live TensorBoard
    # see progress even if the caller never flushes.
    if time.monotonic() - self._last_flush > _FLUSH_SECS:
      self.flush()

  def _write(self, summary: summary_pb2.Summary, step: int) -> None:
    self._add(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def scalar(self, tag: str, value: float, step: int) -> None:
    """NaN/inf are written as they are: TensorBoard plots them, and hiding them hides divergence."""
    self.scalars({tag: value}, step)

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    """Several scalars in one event, so they share a wall time and cost one record."""
    if not values:
      return
    # float() accepts numpy and jax scalars; simple_value is float32, as TensorBoard stores it.
    summary = summary_pb2.Summary(
      value=[
        summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
        for tag, value in values.items()
      ]
    )
    self._write(summary, step)

  def text(self, tag: str, text: str, step: int = 0) -> None:
    """Markdown text, shown in the Text tab."""
    self._write(text_summary.text_pb(tag, text), step)

  def image(self, tag: str, png_bytes: bytes, step: int = 0) -> None:
    """An already-encoded PNG (e.g. a matplotlib figure saved to bytes); no re-encoding."""
    height, width, channels = _png_size(png_bytes)
    image = summary_pb2.Summary.Image(
      height=height, width=width, colorspace=channels, encoded_image_string=bytes(png_bytes)
    )
    self._write(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)]), step)

  def hparams(self, hparams: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
    """Experiment config plus this run's hparam values, both in this run directory.

    `metric_tags` are the scalar tags the dashboard shows as columns; they must be tags this run
    writes with `scalar()`. When several runs under one logdir each write a config, TensorBoard
    uses one of them (arbitrarily), so runs of one sweep should share names and metric tags.
    """
    values = {str(name): _hparam_value(value) for name, value in hparams.items()}
    config = hparams_summary.hparams_config_pb(
      hparams=[
        hparams_summary.HParam(name, _TypeOnlyDomain.of(value)) for name, value in values.items()
      ],
      metrics=[hparams_summary.Metric(tag) for tag in dict.fromkeys(metric_tags)],
    )
    self._write(config, 0)
    self._write(hparams_summary.hparams_pb(values), 0)

  def flush(self) -> None:
    """Pushes queued events to disk, e.g. before another process reads the run."""
    if not self._closed:
      self._records.flush()
      self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and closes the file; safe to call twice."""
    if not self._closed:
      self._closed = True
      self._records.close()

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()
