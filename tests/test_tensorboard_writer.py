"""The TF-free TensorBoard writer, checked by reading its files back with TensorBoard's reader."""

import math
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata

import research.tensorboard_writer as tbw
from research.tensorboard_writer import SummaryWriter


def _tiny_png(width: int = 3, height: int = 2) -> bytes:
  """An RGB PNG built by hand, so the test needs no image library."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  rows = b"".join(b"\x00" + bytes([255, 0, 0]) * width for _ in range(height))
  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(rows))
    + chunk(b"IEND", b"")
  )


def _load(logdir) -> ea.EventAccumulator:
  acc = ea.EventAccumulator(
    os.fspath(logdir),
    size_guidance={
      ea.SCALARS: 0,
      ea.TENSORS: 0,
      ea.IMAGES: 0,
      ea.HISTOGRAMS: 0,
      ea.COMPRESSED_HISTOGRAMS: 0,
    },
  )
  acc.Reload()
  return acc


def test_scalars_read_back_with_their_steps(tmp_path):
  # float32-exact values: simple_value is stored as float32.
  written = {0: 2.5, 1: 1.25, 7: 0.5, 100: 0.125}
  with SummaryWriter(tmp_path) as writer:
    for step, value in written.items():
      writer.scalar("train/loss", value, step)
    writer.scalars({"test/accuracy": np.float32(0.75), "test/loss": jnp.float32(0.375)}, step=7)
  acc = _load(tmp_path)
  loss = acc.Scalars("train/loss")
  assert [e.step for e in loss] == list(written)
  assert [e.value for e in loss] == list(written.values())
  assert [(e.step, e.value) for e in acc.Scalars("test/accuracy")] == [(7, 0.75)]
  assert [(e.step, e.value) for e in acc.Scalars("test/loss")] == [(7, 0.375)]


def test_non_finite_scalars_are_written_as_they_are(tmp_path):
  with SummaryWriter(tmp_path) as writer:
    writer.scalar("loss", float("nan"), 1)
    writer.scalar("loss", np.inf, 2)
    writer.scalar("loss", -np.inf, 3)
  values = [e.value for e in _load(tmp_path).Scalars("loss")]
  assert len(values) == 3
  assert math.isnan(values[0])
  assert values[1:] == [math.inf, -math.inf]


def test_scalars_share_one_event(tmp_path):
  with SummaryWriter(tmp_path) as writer:
    writer.scalars({"a": 1.0, "b": 2.0, "c": 3.0}, step=4)
  (path,) = [os.path.join(tmp_path, f) for f in os.listdir(tmp_path)]
  events = [e for e in LegacyEventFileLoader(path).Load() if e.HasField("summary")]
  assert len(events) == 1
  assert events[0].step == 4
  assert [v.tag for v in events[0].summary.value] == ["a", "b", "c"]


def test_text_is_stored_as_a_text_plugin_tensor(tmp_path):
  text = "# Config\n\n| lr | 0.1 |\n|----|-----|\n\nnon-ASCII: café"
  with SummaryWriter(tmp_path) as writer:
    writer.text("config", text, step=3)
  acc = _load(tmp_path)
  assert "config" in acc.PluginTagToContent("text")
  (event,) = acc.Tensors("config")
  assert event.step == 3
  assert event.tensor_proto.string_val[0].decode("utf-8") == text


def test_image_keeps_bytes_and_size(tmp_path):
  png = _tiny_png(width=3, height=2)
  with SummaryWriter(tmp_path) as writer:
    writer.image("plots/curve", png, step=5)
  acc = _load(tmp_path)
  assert "plots/curve" in acc.Tags()[ea.IMAGES]
  (event,) = acc.Images("plots/curve")
  assert (event.step, event.width, event.height) == (5, 3, 2)
  assert event.encoded_image_string == png


def test_image_rejects_bytes_that_are_not_png(tmp_path):
  with SummaryWriter(tmp_path) as writer:
    with pytest.raises(ValueError, match="PNG"):
      writer.image("x", b"\xff\xd8\xff\xe0 this is a JPEG header")


def test_hparams_are_one_trial_named_by_its_run(tmp_path):
  hparams = {
    "learning_rate": 0.1,
    "batch_size": np.int64(128),
    "model": "mlp",
    "use_bias": True,
    "hidden": (256, 128),
    "schedule": None,
    "momentum": jnp.float32(0.5),
  }
  with SummaryWriter(tmp_path) as writer:
    writer.hparams(hparams)
    writer.scalar("test/accuracy", 0.5, 10)
  acc = _load(tmp_path)
  assert acc.Scalars("test/accuracy")[0].value == 0.5
  content = acc.PluginTagToContent("hparams")
  # No experiment config: TensorBoard then builds one from every run and marks what differs.
  assert set(content) == {hparams_metadata.SESSION_START_INFO_TAG}
  session = hparams_metadata.parse_session_start_info_plugin_data(
    content[hparams_metadata.SESSION_START_INFO_TAG]
  )
  assert session.group_name == ""  # the dashboard names the trial by its run, not by a hash
  read = {name: getattr(value, value.WhichOneof("kind")) for name, value in session.hparams.items()}
  assert read == {
    "learning_rate": 0.1,
    "batch_size": 128.0,
    "model": "mlp",
    "use_bias": True,
    "hidden": "(256, 128)",
    "schedule": "None",
    "momentum": 0.5,
  }


def test_records_are_framed_byte_for_byte_as_tensorboards_own_writer(tmp_path):
  import io

  from tensorboard.summary.writer.record_writer import RecordWriter

  ours, theirs = io.BytesIO(), io.BytesIO()
  for data in (b"", b"x" * 1000, bytes(range(256)) * 3):
    tbw._RecordWriter(ours).write(data)
    RecordWriter(theirs).write(data)
  assert ours.getvalue() == theirs.getvalue()


def test_a_writer_that_writes_nothing_leaves_no_file(tmp_path):
  with SummaryWriter(tmp_path / "run") as writer:
    writer.flush()
  assert not (tmp_path / "run").exists()


def test_close_is_idempotent_and_later_writes_fail_loudly(tmp_path):
  with SummaryWriter(tmp_path / "run") as writer:
    writer.scalar("x", 1.0, 0)
  assert (tmp_path / "run").is_dir()
  writer.close()
  writer.flush()
  with pytest.raises(RuntimeError, match="closed"):
    writer.scalar("x", 2.0, 1)
  assert [e.value for e in _load(tmp_path / "run").Scalars("x")] == [1.0]


def test_events_reach_disk_without_an_explicit_flush(tmp_path, monkeypatch):
  # A live TensorBoard must see progress even if the training loop never calls flush().
  monkeypatch.setattr(tbw, "_FLUSH_SECS", 0.0)
  writer = SummaryWriter(tmp_path)
  try:
    writer.scalar("x", 1.0, 0)
    writer.scalar("x", 2.0, 1)
    assert [e.value for e in _load(tmp_path).Scalars("x")] == [1.0, 2.0]
  finally:
    writer.close()


def test_two_writers_on_one_dir_get_separate_files(tmp_path):
  with SummaryWriter(tmp_path) as first, SummaryWriter(tmp_path) as second:
    first.scalar("x", 1.0, 0)
    second.scalar("y", 2.0, 0)
  assert first.path != second.path
  assert len(os.listdir(tmp_path)) == 2
  acc = _load(tmp_path)
  assert (acc.Scalars("x")[0].value, acc.Scalars("y")[0].value) == (1.0, 2.0)


def test_writing_every_kind_never_tries_to_import_tensorflow(tmp_path, repo_root):
  # A fresh interpreter, so other tests' imports can't hide or fake an import. The finder records
  # even attempts that would fall back quietly (TensorBoard's lazy `tf` retries with a stub).
  script = textwrap.dedent(f"""
      import sys
      attempts = []
      class Spy:
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] == "tensorflow":
            attempts.append(name)
          return None
      sys.meta_path.insert(0, Spy())
      from research.tensorboard_writer import SummaryWriter
      with SummaryWriter({os.fspath(tmp_path)!r}) as w:
        w.scalar("a", 1.0, 0)
        w.scalars({{"b": 2.0}}, 1)
        w.text("t", "*x*")
        w.image("i", {_tiny_png()!r})
        w.hparams({{"lr": 0.1}})
      assert not attempts, attempts
      assert "tensorflow" not in sys.modules
      print("OK")
  """)
  result = subprocess.run(
    [sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "OK"
