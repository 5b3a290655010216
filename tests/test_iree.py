"""The edge path: the IREE engine, modules per CPU target, emulation, and the edge figures."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import build_model
from research.serving.export import ExportError
from research.serving.iree import TARGETS, IreeEngine, compile_module, export_module, stablehlo_text

# IREE's aarch64 runtime wheel (scripts/edge.py --help says how to fetch it); CI fetches it and
# sets this, so the emulated tests run there.
RUNTIME_WHEEL = os.environ.get("IREE_AARCH64_RUNTIME", os.path.join("runs", "edge-runtime"))


def _tiny(name: str):
  config = {
    "cnn": {"name": "cnn1d", "channels": 8, "dtype": "float32"},
    "gru": {"name": "gru", "hidden": 8, "dtype": "float32"},
  }[name]
  model = build_model(config, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40)))
  x = np.random.default_rng(0).standard_normal((33, 40)).astype(np.float32)
  return model, params, x


def _emulation_ready() -> bool:
  from research.serving.emulation import EMULATORS, emulator_for, find_runtime_wheel

  try:
    find_runtime_wheel(emulator_for("aarch64"), RUNTIME_WHEEL)
  except Exception:
    return False
  return "aarch64" in EMULATORS


@pytest.mark.parametrize("name", ["cnn", "gru"])
def test_iree_engine_answers_as_jax_does_at_every_batch(name):
  model, params, x = _tiny(name)
  engine = IreeEngine.from_model(model, params, (40,), batch_sizes=(1, 8))
  reference = np.asarray(model.apply(params, x))
  # 33 examples: four full batches of 8, then one padded; one example: the batch-1 module.
  np.testing.assert_allclose(engine.logits(x), reference, atol=1e-4)
  np.testing.assert_allclose(engine.logits(x[:1]), reference[:1], atol=1e-4)
  np.testing.assert_allclose(engine.logits(x[:3]), reference[:3], atol=1e-4)
  assert engine.compile_count == 2 and engine.model_bytes > 0
  calls = engine.timing_calls(x[:8])
  np.testing.assert_allclose(calls["floor"](), reference[:8], atol=1e-4)
  calls["compute"]()  # runs on the device-resident input without fetching


def test_iree_modules_take_im2col_convolutions_unless_the_config_names_one():
  model, params, _ = _tiny("cnn")
  # IREE's direct 1-D convolution is the slow op (research.kernels): "auto" resolves to im2col.
  assert "stablehlo.convolution" not in stablehlo_text(model, params, (40,), 1)
  assert "stablehlo.convolution" not in stablehlo_text(model, params, (40,), 1, "int8")
  named = model.clone(conv_impl="xla")  # a config that names its kernel keeps it
  assert "stablehlo.convolution" in stablehlo_text(named, params, (40,), 1)


def test_dispatch_times_split_a_module_op_by_op():
  from research.bench.iree_native import dispatch_times
  from research.studies.edge_report import dispatch_lines

  model, params, _ = _tiny("cnn")
  mlir = stablehlo_text(model.clone(conv_impl="xla"), params, (40,), 16)
  split = dispatch_times(
    mlir, TARGETS["host"].compiler_flags(), (16, 40), repetitions=1, min_seconds=0.01
  )
  rows = split["dispatches"]
  assert split["module_us"] > 0
  names = [r["dispatch"] for r in rows]
  assert len(rows) == 5 and sum("_conv_16x" in n for n in names) == 3, names
  assert all(r["us"] > 0 for r in rows) and rows == sorted(rows, key=lambda r: -r["us"])
  profile = {"batch": 16, "variants": {"as exported": split}}
  md = "\n".join(dispatch_lines(profile, shown=2))
  assert names[0] in md and "3 others" in md and "batch 16" in md


def test_a_cnn_s_profile_sets_iree_s_direct_convolutions_beside_the_exported_module(monkeypatch):
  import types

  import research.bench.iree_native as native
  from research.studies.edge import dispatch_profile

  profiled = []

  def split(mlir, flags, shape):  # the MLIR each variant would be compiled from, not timed
    profiled.append(mlir)
    return {"module_us": 1.0, "dispatches": []}

  monkeypatch.setattr(native, "dispatch_times", split)
  model, params, _ = _tiny("cnn")
  run = types.SimpleNamespace(model=model, params=params, input_shape=(40,))
  profile = dispatch_profile(run, 4, log=lambda s: None)
  exported, direct = profile["variants"]
  assert exported == "as exported" and "conv_impl=xla" in direct
  assert "stablehlo.convolution" not in profiled[0] and "stablehlo.convolution" in profiled[1]
  gru, gru_params, _ = _tiny("gru")  # no convolution: the exported module alone
  run = types.SimpleNamespace(model=gru, params=gru_params, input_shape=(40,))
  assert list(dispatch_profile(run, 4, log=lambda s: None)["variants"]) == ["as exported"]


def test_a_module_for_another_cpu_is_refused_by_the_host_engine_in_one_line():
  model, params, _ = _tiny("cnn")
  vmfb = compile_module(stablehlo_text(model, params, (40,), 1), TARGETS["aarch64"])
  with pytest.raises(ExportError, match="compiled for another CPU \\(embedded-elf-arm_64\\)") as e:
    IreeEngine({1: vmfb}, (40,), source="phone.vmfb")
  assert "\n" not in str(e.value) and "--target host" in str(e.value)
  with pytest.raises(ExportError, match="is not an IREE module"):
    IreeEngine({1: b"not a module at all"}, (40,), source="junk.vmfb")


def test_int8_modules_keep_int8_weights_and_fp32_answers_close():
  # Wide enough that the weights (110 KiB in fp32) outweigh the dequantizing code int8 adds.
  model = build_model({"name": "cnn1d", "channels": 64, "dtype": "float32"}, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40)))
  x = np.random.default_rng(0).standard_normal((33, 40)).astype(np.float32)
  fp32, m32 = export_module(model, params, (40,), 10, "host", 1, "float32")
  int8, m8 = export_module(model, params, (40,), 10, "host", 1, "int8")
  weight_bytes = sum(np.size(w) for w in jax.tree.leaves(params) if np.ndim(w) >= 2) * 4
  # Constant evaluation off: the weights stay int8 (a quarter of their fp32 bytes, plus scales
  # and the module's alignment); folded back to fp32, the module would not shrink at all.
  assert len(fp32) - len(int8) > 0.4 * weight_bytes
  assert m8["precision"] == "int8" and m32["inputs"][0]["shape"] == [1, 40]
  engine = IreeEngine({1: int8}, (40,), precision="int8")
  np.testing.assert_allclose(engine.logits(x), np.asarray(model.apply(params, x)), atol=0.1)


def test_every_target_compiles_and_its_manifest_says_what_a_device_needs():
  model, params, _ = _tiny("gru")
  for target in TARGETS:
    vmfb, manifest = export_module(model, params, (40,), 10, target, 4)
    assert manifest["bytes"] == len(vmfb) > 1000
    assert manifest["inputs"] == [{"shape": [4, 40], "dtype": "float32"}]
    assert manifest["outputs"][0]["shape"] == [4, 10]
    assert "3.13.0" in manifest["compiler"] and "runtime" in manifest["runtime_needs"]
  assert export_module(model, params, (40,), 10, "aarch64")[1]["cpu"] == "cortex-a76"
  with pytest.raises(ExportError, match="unknown IREE target 'arm'; choose one of: host"):
    export_module(model, params, (40,), 10, "arm")


def test_the_peak_memory_is_the_tool_s_own_not_this_process_s():
  """A child started from this process inherits its peak resident size through fork and exec;
  the measurement must not report that (this process holds JAX: well over 100 MiB)."""
  from research.bench import iree_native

  if not os.access(iree_native.GNU_TIME, os.X_OK):
    pytest.skip("GNU time is not installed (Debian package time)")
  model, params, _ = _tiny("cnn")
  vmfb = compile_module(stablehlo_text(model, params, (40,), 1), TARGETS["host"])
  rss = iree_native.peak_rss_bytes(vmfb, (1, 40))
  assert 512 * 1024 < rss < 32 * 2**20
  bench = iree_native.benchmark_module(vmfb, (1, 40), repetitions=2)
  assert bench["repetitions"] == 2 and 0 < bench["p50_of_repetition_means_us"] < 10_000


def test_projections_follow_the_device_peaks():
  from research.cost.edge_devices import EDGE_DEVICES, projections

  rows = projections(1e6, 0.1, bytes_needed=3 * 2**20)
  for device, row in zip(EDGE_DEVICES, rows):
    assert row["projected"] is True
    assert row["latency_at_peak_us"] == pytest.approx(1e6 / device.peak_flops * 1e6)
    assert row["latency_at_host_fraction_us"] == pytest.approx(10 * row["latency_at_peak_us"])
    assert row["energy_at_host_fraction_uj"] == pytest.approx(
      row["latency_at_host_fraction_us"] * device.power_watts
    )
    assert set(row["sources"]) >= {"clock", "flops_per_cycle", "power"}
  assert rows[-1]["fits_memory"] is False  # 3 MiB in a 2 MiB flash
  assert projections(1e6, 0.1, bytes_needed=2**20)[-1]["fits_memory"] is True


def test_emulation_errors_say_what_to_install(monkeypatch, tmp_path):
  from research.serving import emulation

  with pytest.raises(emulation.EmulationError, match="no riscv64 build of its runtime"):
    emulation.emulator_for("riscv64")
  monkeypatch.setattr(emulation.shutil, "which", lambda name: None)
  with pytest.raises(emulation.EmulationError, match="apt-get install qemu-user libc6-arm64-cross"):
    emulation.emulator_for("aarch64")
  emu = emulation.EMULATORS["aarch64"]
  with pytest.raises(emulation.EmulationError, match="pip download .*manylinux_2_28_aarch64"):
    emulation.find_runtime_wheel(emu, str(tmp_path))
  old = tmp_path / "iree_base_runtime-3.12.0-cp311-cp311-manylinux_2_28_aarch64.whl"
  old.write_bytes(b"")
  with pytest.raises(emulation.EmulationError, match="is IREE runtime 3.12.0; the modules need"):
    emulation.find_runtime_wheel(emu, str(tmp_path))


@pytest.mark.skipif(not _emulation_ready(), reason="no QEMU or IREE aarch64 runtime here")
@pytest.mark.parametrize("name", ["cnn", "gru"])
def test_the_aarch64_module_answers_under_emulation_as_the_host_does(name):
  from research.serving.emulation import run_under_emulation

  model, params, x = _tiny(name)
  vmfb, _ = export_module(model, params, (40,), 10, "aarch64", len(x))
  (logits,) = run_under_emulation(vmfb, [x], "aarch64", RUNTIME_WHEEL)
  reference = np.asarray(model.apply(params, x))
  np.testing.assert_allclose(logits, reference, atol=1e-4)
  assert (logits.argmax(-1) == reference.argmax(-1)).all()


@pytest.mark.slow
def test_export_and_edge_scripts_on_a_trained_run(trained_cnn_run, script_here, tmp_path):
  workdir = trained_cnn_run[0]
  out = str(tmp_path / "cnn.vmfb")
  code, stdout, err = script_here("export.py", "--threads", "0", "--workdir", workdir,
                                  "--format", "iree", "--out", out)  # fmt: skip
  assert code in (0, None), err
  record = json.loads(open(out + ".json").read())
  check = record["check_against_jitted_apply"]
  assert check["predictions_identical"] and check["examples"] == 1000
  assert record["manifest"]["bytes"] == os.path.getsize(out) and "1000 predictions equal" in stdout
  phone = str(tmp_path / "phone.vmfb")
  args = ("--threads", "0", "--workdir", workdir, "--format", "iree", "--target", "aarch64")
  code, stdout, err = script_here("export.py", *args, "--out", phone)
  assert code in (0, None) and "runs it under emulation" in stdout, err
  with pytest.raises(ExportError, match="compiled for another CPU"):
    IreeEngine.from_file(phone, (40,), batch=1)

  edge = str(tmp_path / "edge")
  emulate = ["--runtime-wheel", RUNTIME_WHEEL] if _emulation_ready() else ["--no-emulate"]
  code, stdout, err = script_here("edge.py", "--threads", "0", "--workdir", workdir, "--out", edge,
                                  "--latency-calls", "50", "--dispatch-batch", "0",
                                  *emulate)  # fmt: skip
  assert code in (0, None), err
  r = json.loads(open(os.path.join(edge, "edge.json")).read())
  assert "dispatches" not in r["host"]  # --dispatch-batch 0: not split
  assert r["host"]["agreement"]["float32"]["agreement"] == 1.0
  assert r["modules"]["aarch64"]["int8"]["bytes"] < r["modules"]["aarch64"]["float32"]["bytes"]
  assert r["weights_bytes"]["int8"] < r["weights_bytes"]["float32"] / 2
  assert r["emulated"]["riscv64"]["run"] is False
  if _emulation_ready():
    assert (
      r["emulated"]["aarch64"]["agreement"] == 1.0 and r["emulated"]["aarch64"]["within_tolerance"]
    )
  assert all(d["projected"] for d in r["devices"])
  md = open(os.path.join(edge, "edge.md")).read()
  assert "## Projected on edge devices (not measured)" in md and "agreement" in md
