"""The roofline: bounds on the right side of the ridge, intensities as FLOPs per byte, decode bytes
that grow with context and batch as counted, the crossover, the figure; tiny sizes, no timing
asserted."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.bench import roofline as rl
from research.models import transformer_flops as tf
from research.models.transformer import Transformer

PEAKS = {"matmul_flops_per_s": 100.0, "triad_bytes_per_s": 10.0, "ridge_flops_per_byte": 10.0}
MODEL = Transformer(num_classes=32, n_layer=2, d_model=32, n_head=4, d_ff=64, n_ctx=32)


def test_the_bound_is_memory_below_the_ridge_and_compute_above():
  low = rl.roofline_point("decode", 8, 200.0, {"weights": 60.0, "kv_read": 40.0}, 20.0, PEAKS)
  assert low["intensity"] == 2.0 and low["bytes"] == 100.0  # flops / bytes, terms summed
  assert low["bound"] == "memory" and low["bound_flops_per_s"] == 20.0  # 2 FLOP/B x 10 B/s
  assert low["achieved_flops_per_s"] == 10.0 and low["fraction"] == 0.5
  high = rl.roofline_point("train step", 32, 5000.0, {"weights": 100.0}, 100.0, PEAKS)
  assert high["intensity"] == 50.0 and high["bound"] == "compute"
  assert high["bound_flops_per_s"] == 100.0 and high["fraction"] == 0.5
  assert (
    rl.bound(10.0 - 1e-9, PEAKS)[1] == "memory" and rl.bound(10.0 + 1e-9, PEAKS)[1] == "compute"
  )


def test_decode_bytes_grow_with_the_context_and_the_batch_as_counted():
  params_bytes = 1000
  one = rl.decode_bytes(MODEL, params_bytes, 1, 16)
  per_position = 2 * MODEL.n_layer * MODEL.d_model * 4  # k and v, every layer, float32
  assert one["kv_read"] == 16 * per_position and one["kv_write"] == per_position
  longer = rl.decode_bytes(MODEL, params_bytes, 1, 17)
  assert longer["kv_read"] - one["kv_read"] == per_position
  assert longer["activations"] - one["activations"] == 4 * 2 * MODEL.n_layer * MODEL.n_head
  assert longer["weights"] == one["weights"] == params_bytes  # read once whatever the context
  eight = rl.decode_bytes(MODEL, params_bytes, 8, 16)
  assert eight["weights"] == params_bytes
  for term in ("kv_read", "kv_write", "activations"):
    assert eight[term] == 8 * one[term]
  # The memory budget side: slots of n_ctx positions beside the params.
  kv = rl.kv_memory(MODEL, {"w": jnp.zeros(250)}, {"ten": 10 * 32 * per_position + 1000 + 1})
  assert kv["per_token"] == per_position and kv["per_slot"] == 32 * per_position
  assert kv["slots_that_fit"] == {"ten": 10}
  # So intensity rises with the batch towards a limit set by the per-row terms alone.
  flops = [tf.decode_step_flops(MODEL, b, key_len=16) for b in (1, 8, 1024)]
  moved = [sum(rl.decode_bytes(MODEL, params_bytes, b, 16).values()) for b in (1, 8, 1024)]
  intensity = [f / m for f, m in zip(flops, moved)]
  assert intensity[0] < intensity[1] < intensity[2]


def _decode_points(intensities, batches=(1, 4, 16, 64), limit=None):
  out = []
  for b, x in zip(batches, intensities):
    p = {"phase": "decode", "batch": b, "intensity": x}
    if limit is not None:  # per row f FLOPs, `per_row` bytes; weights w
      f, per_row, w = limit
      p.update(flops_per_row=f, bytes_per_row=per_row, weights_bytes=w, intensity_limit=f / per_row)
    out.append(p)
  return out


def test_crossover_is_interpolated_in_log_batch_or_said_to_lie_outside():
  c = rl.crossover(_decode_points([1.0, 4.0, 16.0, 20.0]), PEAKS)
  assert c["where"] == "interpolated"
  t = (10.0 - 4.0) / (16.0 - 4.0)
  assert c["batch"] == pytest.approx(math.exp(math.log(4) + t * (math.log(16) - math.log(4))))
  assert rl.crossover(_decode_points([12.0, 14.0, 16.0, 20.0]), PEAKS)["batch"] == 1
  beyond = rl.crossover(_decode_points([1.0, 2.0, 3.0, 4.0]), PEAKS)
  assert beyond["where"] == "beyond the sweep" and beyond["batch"] is None
  # The large-batch limit decides whether it ever turns: 30 FLOPs over 2 bytes per row -> 15.
  turns = rl.crossover(_decode_points([1.0, 2.0, 3.0, 4.0], limit=(30.0, 2.0, 1000.0)), PEAKS)
  assert turns["analytic_batch"] == pytest.approx(10.0 * 1000.0 / (30.0 - 10.0 * 2.0))
  never = rl.crossover(_decode_points([1.0, 2.0, 3.0, 4.0], limit=(10.0, 2.0, 1000.0)), PEAKS)
  assert never["analytic_batch"] is None and never["text"].startswith("never")
  with pytest.raises(rl.RooflineError):
    rl.crossover([{"phase": "prefill", "batch": 1, "intensity": 3.0}], PEAKS)


def test_plot_writes_a_png(tmp_path):
  peaks = {**PEAKS, "cache_triad_bytes_per_s": 40.0}
  points = [
    rl.roofline_point("train step", 32, 5000.0, {"weights": 100.0}, 100.0, peaks),
    rl.roofline_point("prefill", 1, 800.0, {"weights": 100.0}, 20.0, peaks),
  ]
  for b, seconds in ((1, 40.0), (8, 30.0)):
    p = rl.roofline_point("decode", b, 100.0 * b, {"weights": 50.0, "kv": 20.0 * b}, seconds, peaks)
    points.append(
      {**p, "tokens_per_s": b / seconds, "mfu": 0.1, "roofline_fraction": p["fraction"]}
    )
  path = tmp_path / "roofline.png"
  rl.plot_roofline(points, peaks, str(path))
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  rl.plot_decode_sweep(points, str(tmp_path / "decode.png"))
  assert (tmp_path / "decode.png").read_bytes()[:4] == b"\x89PNG"


def test_measure_peaks_gives_positive_finite_numbers_at_tiny_sizes():
  peaks = rl.measure_peaks(
    threads=0, matmul_n=32, triad_elements=4096, cache_triad_elements=1024, repeats=2
  )
  for key in ("matmul_flops_per_s", "triad_bytes_per_s", "ridge_flops_per_byte"):
    assert np.isfinite(peaks[key]) and peaks[key] > 0
  assert peaks["ridge_flops_per_byte"] == peaks["matmul_flops_per_s"] / peaks["triad_bytes_per_s"]
  assert peaks["matmul"]["n"] == 32 and peaks["triad"]["bytes_per_call"] == 12 * 4096
  with pytest.raises(rl.RooflineError):
    rl.measure_peaks(threads=2)


def test_phase_points_count_each_phase_with_the_codebase_counts():
  model = MODEL.clone(n_layer=1)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32), jnp.int32))
  points = rl.lm_phase_points(
    model,
    params,
    PEAKS,
    decode_batches=(1, 2),
    prefill_tokens=8,
    threads=0,
    train_batch=2,
    prompt_tokens=4,
    new_tokens=3,
    repeats=1,
    optimizer="sgd",  # compiles faster than Adam
    decode_buckets=(32,),  # one executable: every step scores the whole cache
  )
  assert [(p["phase"], p["batch"]) for p in points] == [
    ("train step", 2),
    ("prefill", 1),
    ("decode", 1),
    ("decode", 2),
  ]
  for p in points:
    assert p["intensity"] == pytest.approx(p["flops"] / p["bytes"])
    assert p["bound"] in ("memory", "compute") and p["fraction"] > 0
  assert points[1]["flops"] == tf.decode_step_flops(model, 1, new_tokens=8, key_len=8)
  decode = points[2:]
  for p in decode:
    # Steps write positions 4 and 5 (contexts 5 and 6) and score all 32 cache positions.
    assert p["mean_keys_scored"] == 32 and p["mean_context"] == 5.5
    assert p["flops"] == tf.decode_step_flops(model, p["batch"], key_len=32)
    assert p["useful_flops"] < p["flops"]  # MFU counts the real context, not the bucket
    assert p["roofline_fraction"] == p["fraction"] and p["mfu"] > 0 and p["tokens_per_s"] > 0
    assert p["xla"]["xla_bytes_accessed"] > 0 and p["compilations_after_warmup"] == 0
  assert decode[1]["bytes"] - decode[0]["bytes"] == pytest.approx(
    sum(rl.decode_bytes(model, 0, 1, 32).values())  # one more row's per-row terms
  )
  assert rl.crossover(points, PEAKS)["batches"] == [1, 2]  # the decode points alone
