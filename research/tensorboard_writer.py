"""The one place that writes TensorBoard event files, without TensorFlow.

`flax.metrics.tensorboard` and `clu.metric_writers` import TensorFlow, which this project does
not install. TensorBoard itself ships a TF-free record writer and TF-free builders for the
summary protos it reads back (scalars, text, images, the HParams dashboard); this module wraps
them. TensorBoard's own `EventFileWriter` is not used: it resolves `tensorboard.compat.tf`, which
runs `import tensorflow` and only falls back to a stub when that fails, so on a machine with
TensorFlow installed it would load TF (and let it claim the GPU). The records are written here
in TFRecord framing instead, with the C CRC32C of `google-crc32c`: TensorBoard's TF-free
`RecordWriter` checksums in pure Python, which made 60 % of the cost of logging every training
step (0.29 s per 6000-step run). `tests/test_tensorboard_writer.py` checks that no import of
`tensorflow` is even attempted and that the bytes equal TensorBoard's own `RecordWriter`'s.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import summary_v2 as text_summary

from research.outputs import atomic_path

HParamValue = bool | int | float | str

_FLUSH_SECS = 10.0
_file_counter = itertools.count()

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG IHDR colour type -> channels, which is what `Summary.Image.colorspace` means.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


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


try:  # C implementation; TensorBoard's pure-Python one is the fallback
  from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover
  from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c


def _masked_crc(data: bytes) -> bytes:
  crc = _crc32c(data)
  return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


class _RecordWriter:
  """TFRecord framing: length, its masked CRC32C, the bytes, their masked CRC32C."""

  def __init__(self, file):
    self._file = file

  def write(self, data: bytes) -> None:
    header = struct.pack("<Q", len(data))
    self._file.write(header + _masked_crc(header) + data + _masked_crc(data))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def event_file_name(suffix: str = "") -> str:
  """TensorBoard's name pattern (it loads files whose name holds `tfevents`, in name order); the
  counter keeps two writers of one process (same second, same pid) from sharing a file."""
  return (
    f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
    f"{os.getpid()}.{next(_file_counter)}{suffix}"
  )


class SummaryWriter:
  """One run directory's event file.

  Everything for a run (metrics, text, images, hparams) must share the directory: the HParams
  dashboard pairs a run's hparams with the scalars of that same run. The file is created by the
  first event, so a writer that never writes leaves no empty event file behind.
  """

  def __init__(self, logdir: str | os.PathLike, path: str | None = None, enabled: bool = True):
    """`enabled=False` writes nothing: every process of a multi-process run but the first."""
    self.logdir = os.path.abspath(os.fspath(logdir))
    self.path = path or os.path.join(self.logdir, event_file_name())
    self.enabled = enabled
    self._records: _RecordWriter | None = None
    self._closed = False
    self._last_flush = time.monotonic()

  def _add(self, event: event_pb2.Event) -> None:
    if self._closed:
      raise RuntimeError(f"SummaryWriter for {self.logdir} is already closed")
    if not self.enabled:
      return
    if self._records is None:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      self._records = _RecordWriter(open(self.path, "wb"))
      header = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
      self._records.write(header.SerializeToString())
    self._records.write(event.SerializeToString())
    # No background thread (unlike EventFileWriter), so flush here to let a live TensorBoard
    # see progress even if the caller never flushes.
    if time.monotonic() - self._last_flush > _FLUSH_SECS:
      self.flush()

  def _write(self, summary: summary_pb2.Summary, step: int) -> None:
    self._add(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def session_start(self, first_step: int) -> None:
    """Marks a (re)start whose first logged step is `first_step`.

    TensorBoard's way to drop the orphans of a killed run: on every START after a run's first,
    it discards what earlier files logged at `first_step` and later, which a resume from an
    earlier checkpoint logs again. Without it the steps between the checkpoint and the kill
    appear twice.
    """
    session_log = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
    self._add(event_pb2.Event(wall_time=time.time(), step=int(first_step), session_log=session_log))

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

  def hparams(self, hparams: Mapping[str, Any], step: int = 0) -> None:
    """This directory's hparam values: one trial of the HParams dashboard, named by the run.

    No experiment config is written. TensorBoard then builds the experiment from every run's
    values, marks the hparams whose values differ between runs and shows those first (the
    first five are ticked); a config written by each run would instead be taken from one
    run, arbitrarily, with every hparam marked as the same. The trial's metrics are every scalar
    tag of this directory (and its subdirectories), sorted by tag; the first five are shown.
    The group name is left empty so the dashboard names the trial by its run, not by a hash.
    """
    values = {str(name): _hparam_value(value) for name, value in hparams.items()}
    summary = hparams_summary.hparams_pb(values)  # checks the value types
    value = summary.value[0]
    start = hparams_metadata.parse_session_start_info_plugin_data(
      value.metadata.plugin_data.content
    )
    start.group_name = ""  # hparams_pb would name the trial by a hash of its values
    value.metadata.CopyFrom(
      hparams_metadata.create_summary_metadata(
        plugin_data_pb2.HParamsPluginData(session_start_info=start)
      )
    )
    self._write(summary, step)

  def flush(self) -> None:
    """Pushes queued events to disk, e.g. before another process reads the run."""
    if not self._closed and self._records is not None:
      self._records.flush()
      self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and closes the file; safe to call twice."""
    if not self._closed:
      self._closed = True
      if self._records is not None:
        self._records.close()

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()


def replace_part(
  logdir: str | os.PathLike, part: str, fill: Callable[[SummaryWriter], None]
) -> str:
  """Writes one named part of a run directory as a fresh event file, replacing its last version.

  For results that are a snapshot, not a history (a run's hparams and headline figures, a
  report's text and images): re-running the command that makes them replaces them instead of
  adding a second point at the same step. The file is written under a name TensorBoard ignores
  and renamed into place, so a reader sees the old part or the new one, never half of one; a
  TensorBoard already running keeps what it read until restarted. Returns the new file's path.
  """
  logdir = os.path.abspath(os.fspath(logdir))
  suffix = f".{part}"
  old = [
    name
    for name in (os.listdir(logdir) if os.path.isdir(logdir) else [])
    if "tfevents" in name and name.endswith(suffix)
  ]
  path = os.path.join(logdir, event_file_name(suffix))
  staging = os.path.join(logdir, f".staging-{os.getpid()}-{part}")
  with atomic_path(path, tmp=staging, optional=True), SummaryWriter(logdir, path=staging) as writer:
    fill(writer)
  for name in old:
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(logdir, name))
  return path
