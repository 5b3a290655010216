"""The ONNX Runtime decode engine behind the Scheduler: the jax engine's greedy tokens for the
same requests, continuous and static, slots at different positions sharing each step; sampling
refused with one line."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models.transformer import Transformer
from research.serving.decode_engine import DecodeEngine, Request, for_serving, serve
from research.serving.generate import GenerationError
from research.serving.onnx_decode_engine import OnnxDecodeEngine

VOCAB, N_CTX = 32, 32
MODEL = Transformer(num_classes=VOCAB, n_layer=2, d_model=32, n_head=4, d_ff=64, n_ctx=N_CTX)


@functools.lru_cache(maxsize=None)
def _params():
  """Random weights scaled up, so that greedy tokens are decided by clear margins."""
  init = lambda key: jax.tree.map(  # noqa: E731
    lambda x: 8.0 * x, MODEL.init(key, jnp.zeros((1, N_CTX), jnp.int32))
  )
  return jax.jit(init)(jax.random.key(0))


def _requests() -> list[Request]:
  """Prompts of 1 to 14 tokens, 2 to 20 new tokens: slots sit at different positions."""
  rng = np.random.default_rng(0)
  shapes = [(1, 20), (14, 2), (3, 9), (8, 4), (5, 16), (12, 6), (2, 3), (9, 12)]
  return [
    Request(f"g{i}", rng.integers(0, VOCAB, p).tolist(), n) for i, (p, n) in enumerate(shapes)
  ]


@functools.lru_cache(maxsize=None)
def _expected() -> dict:
  engine = DecodeEngine(for_serving(MODEL), _params(), 3, (16,), (16, 32))
  with jax.default_matmul_precision("float32"):
    return {k: c.tokens for k, c in serve(engine, _requests()).items()}


@functools.lru_cache(maxsize=None)
def _onnx(slots: int, decode_buckets=None, layout: str = "BTHD") -> OnnxDecodeEngine:
  model = MODEL.clone(cache_layout=layout)
  engine = OnnxDecodeEngine(model, _params(), slots, (16,), decode_buckets, threads=1)
  engine.warmup()
  return engine


@pytest.mark.parametrize("slots,decode_buckets,layout", [(1, (32,), "BTHD"), (3, (16, 32), "BHTD")])
def test_onnx_engine_gives_the_jax_engines_tokens(slots, decode_buckets, layout):
  expected = _expected()
  assert len({len(v) for v in expected.values()}) > 4
  assert all(len(set(v)) > 1 for v in expected.values() if len(v) > 3)  # not constant repeats
  engine = _onnx(slots, decode_buckets, layout)
  order = np.random.default_rng(slots).permutation(len(_requests()))
  results = serve(engine, [_requests()[i] for i in order], "continuous")
  assert {k: c.tokens for k, c in results.items()} == expected
  static = serve(engine, _requests()[::-1], "static")
  assert {k: c.tokens for k, c in static.items()} == expected
  assert engine.free_slots() == list(range(slots)) and engine.compilations_after_warmup == 0


def test_onnx_engine_refuses_sampling_and_what_the_jax_engine_refuses():
  engine = _onnx(1, (32,))
  with pytest.raises(GenerationError, match="decodes greedily"):
    engine.check(Request("s", [1, 2], 3, temperature=1.0, key=0))
  with pytest.raises(GenerationError, match="exceed the model's context"):
    engine.check(Request("long", [1] * 20, 20))
  with pytest.raises(GenerationError, match="vocabulary"):
    engine.check(Request("oov", [VOCAB], 2))
