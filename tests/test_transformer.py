"""Decoder-only Transformer: shapes, causality, KV-cache decoding, generation, FLOP counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.cost import flops
from research.cost.xla import compiled_cost
from research.models import count_params
from research.models import transformer_flops as tf
from research.models.layers import ModelError
from research.models.transformer import Transformer, init_cache
from research.serving.generate import GenerationError, make_generator
from research.training.optimizers import make_optimizer
from research.training.step import create_train_state, make_train_step

VOCAB = 32


def _model(**kw):
  return Transformer(
    num_classes=VOCAB, **{"n_layer": 2, "d_model": 32, "n_head": 4, "d_ff": 64, "n_ctx": 16, **kw}
  )


def _init(model, seed=0, spread=1.0):
  """Params, scaled by `spread`: larger weights keep a random model's greedy output varied."""

  def init(key):  # jitted: eager Flax init compiles every initializer call on its own
    params = model.init(key, jnp.zeros((1, model.n_ctx), jnp.int32))
    return jax.tree.map(lambda x: x * spread, params)

  return jax.jit(init)(jax.random.key(seed))


def _apply(model):
  """Jitted: op-by-op (eager) Flax is far slower than one compile at these sizes."""
  return jax.jit(model.apply)


@functools.lru_cache(maxsize=None)
def _lm(tied):
  """(model, params, jitted apply, generator), shared so tests reuse each other's compiles.

  The untied model's params are scaled up so that its greedy output is not a constant repeat.
  """
  model = _model(tied_embeddings=tied)
  params = _init(model, spread=1.0 if tied else 8.0)
  return model, params, _apply(model), make_generator(model)


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 0, VOCAB, dtype=jnp.int32)


# ----------------------------------------------------------------------------------------------
# (a) shapes, dtypes, parameter count


@pytest.mark.parametrize("tied", [True, False])
def test_logits_shape_dtype_and_parameter_count(tied):
  model, params, apply, _ = _lm(tied)
  logits = apply(params, _tokens((2, 11)))
  assert logits.shape == (2, 11, VOCAB) and logits.dtype == jnp.float32
  assert count_params(params) == tf.param_count(model)
  # Kaplan's N leaves out exactly the biases and LayerNorms: (3d + d + f + d) + 4d per block,
  # 2d for the final LayerNorm.
  d, f, L = 32, 64, 2
  assert (
    tf.exact_non_embedding_params(L, d, f) - tf.kaplan_non_embedding_params(L, d, f)
    == L * (9 * d + f) + 2 * d
  )
  embeddings = VOCAB * d + 16 * d + (0 if tied else d * VOCAB)
  assert count_params(params) == tf.exact_non_embedding_params(L, d, f) + embeddings


# ----------------------------------------------------------------------------------------------
# (b) causality


@pytest.mark.parametrize("t", [0, 5, 15])
def test_changing_a_token_changes_no_earlier_logits(t):
  _, params, apply, _ = _lm(True)
  tokens = _tokens((2, 16))
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % VOCAB)
  a, b = apply(params, tokens), apply(params, changed)
  np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
  assert np.abs(np.asarray(a[:, t:] - b[:, t:])).max(axis=-1).min() > 1e-4  # later ones do move


# ----------------------------------------------------------------------------------------------
# (c) the KV cache reproduces the full forward


# Cached decoding sums in another order than the full forward: float32 rounding of logits near 10
# reaches 1.1e-5 on some CPUs (AVX2 without AVX-512). A cache bug gives errors of order 1.
DECODE_TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


@pytest.mark.slow
def test_prefill_then_single_token_decode_matches_full_forward():
  _, params, apply, gen = _lm(True)
  seq = _tokens((2, 16))
  full = apply(params, seq)
  prompt_len = 5
  logits, cache = gen.prefill(params, seq[:, :prompt_len])
  np.testing.assert_allclose(logits, full[:, prompt_len - 1], **DECODE_TOLERANCE)
  for pos in range(prompt_len, seq.shape[1]):
    logits, cache = gen.decode_step(params, seq[:, pos], cache, jnp.int32(pos))
    np.testing.assert_allclose(logits, full[:, pos], **DECODE_TOLERANCE)


@pytest.mark.slow
def test_multi_token_decode_chunks_match_full_forward():
  model, params, apply, _ = _lm(False)
  seq = _tokens((2, 16), seed=3)
  full = apply(params, seq)
  decode = jax.jit(lambda p, t, c, s: model.apply(p, t, c, s, method=Transformer.decode))
  cache = init_cache(model, 2)
  for start, stop in [(0, 4), (4, 7), (7, 16)]:  # chunks of 4, 3 and 9 tokens
    logits, cache = decode(params, seq[:, start:stop], cache, start)
    np.testing.assert_allclose(logits, full[:, start:stop], **DECODE_TOLERANCE)
  assert cache[0]["k"].shape == (2, 16, 4, 8)


@pytest.mark.parametrize("layout", ["BTHD", "BHTD"])
def test_per_row_positions_and_key_len_match_full_forward(layout):
  """Rows at different positions in one decode call (the serving engine's step), scoring only the
  cache's first key_len positions, give each row's full-forward logits, in either cache layout."""
  model, params, apply, _ = _lm(True)
  model = model.clone(cache_layout=layout)
  seq = _tokens((3, 16), seed=5)
  full = apply(params, seq)
  decode = jax.jit(
    lambda p, t, c, s, key_len: model.apply(p, t, c, s, key_len, method=Transformer.decode),
    static_argnums=(4,),
  )
  cache = init_cache(model, 3)
  logits, cache = decode(params, seq[:, :4], cache, 0, 8)
  np.testing.assert_allclose(logits, full[:, :4], **DECODE_TOLERANCE)
  pos = np.array([4, 2, 3])  # rows 1 and 2 write positions 2 and 3 again: the same keys
  for _ in range(8):
    key_len = 8 if pos.max() < 8 else 16
    token = seq[np.arange(3), pos][:, None]
    logits, cache = decode(params, token, cache, jnp.asarray(pos), key_len)
    np.testing.assert_allclose(logits[:, 0], full[np.arange(3), pos], **DECODE_TOLERANCE)
    pos = pos + 1
  with pytest.raises(ValueError, match="key_len"):
    model.apply(params, _tokens((1, 3)), init_cache(model, 1), 6, 8, method=Transformer.decode)
  if layout == "BHTD":
    assert cache[0]["k"].shape == (3, 4, 16, 8)
    greedy = make_generator(model).generate(params, seq[:, :5], 6)
    np.testing.assert_array_equal(greedy, _lm(True)[3].generate(params, seq[:, :5], 6))
    with pytest.raises(ModelError, match="cache_layout"):
      model.clone(cache_layout="TBHD").apply(params, seq)


# ----------------------------------------------------------------------------------------------
# (d) generation


def test_greedy_generation_is_argmax_of_full_recompute_and_deterministic():
  model, params, apply, gen = _lm(False)
  prompt = _tokens((2, 4), seed=5)
  out = gen.generate(params, prompt, 8)
  assert out.shape == (2, 8) and out.dtype == jnp.int32
  # Recompute the whole sequence for every token. Padded to n_ctx so one compile serves every
  # length: the model is causal, so the padding cannot reach the position read.
  seq = jnp.zeros((2, model.n_ctx), jnp.int32).at[:, :4].set(prompt)
  for i in range(8):
    nxt = jnp.argmax(apply(params, seq)[:, 3 + i], axis=-1).astype(jnp.int32)
    np.testing.assert_array_equal(out[:, i], nxt)
    seq = seq.at[:, 4 + i].set(nxt)
  assert len(np.unique(np.asarray(out))) > 2  # not a degenerate repeat
  np.testing.assert_array_equal(gen.generate(params, prompt, 8), out)
  np.testing.assert_array_equal(gen.generate_scan(params, prompt, 8), out)


def test_sampling_is_reproducible_and_cold_sampling_is_greedy():
  _, params, _, gen = _lm(False)
  prompt = _tokens((2, 4), seed=7)
  key = jax.random.key(42)
  a = gen.generate(params, prompt, 6, temperature=1.0, key=key)
  np.testing.assert_array_equal(gen.generate(params, prompt, 6, temperature=1.0, key=key), a)
  np.testing.assert_array_equal(gen.generate_scan(params, prompt, 6, 1.0, key), a)
  other = gen.generate(params, prompt, 6, temperature=1.0, key=jax.random.key(43))
  assert not np.array_equal(a, other)
  greedy = gen.generate(params, prompt, 6)
  np.testing.assert_array_equal(gen.generate(params, prompt, 6, temperature=1e-6, key=key), greedy)
  assert gen.generate(params, prompt, 0).shape == (2, 0)


# ----------------------------------------------------------------------------------------------
# (e) errors


def test_too_long_inputs_and_bad_requests_raise():
  model, params, _, gen = _lm(True)
  with pytest.raises(ValueError, match="exceeds the model's context n_ctx=16"):
    model.apply(params, _tokens((1, 17)))
  with pytest.raises(ValueError, match="run past n_ctx=16"):
    model.apply(params, _tokens((1, 3)), init_cache(model, 1), 14, method=Transformer.decode)
  prompt = _tokens((2, 10))
  cases = [
    ((prompt, 7), "exceed the model's context"),
    ((prompt[:, :0], 3), "empty prompt"),
    ((prompt.astype(jnp.float32), 3), "must be integers"),
    ((prompt[0], 3), r"\[batch, length\]"),
    ((prompt.at[0, 0].set(VOCAB), 3), r"must lie in \[0, 32\)"),
    ((prompt, -1), "non-negative"),
  ]
  for args, message in cases:
    with pytest.raises(GenerationError, match=message):
      gen.generate(params, *args)
  with pytest.raises(GenerationError, match="needs a PRNG key"):
    gen.generate(params, prompt, 3, temperature=0.7)
  with pytest.raises(GenerationError, match="needs a PRNG key"):
    gen.generate_scan(params, prompt, 3, temperature=0.7)
  assert gen.generate(params, prompt, 6).shape == (2, 6)  # exactly n_ctx is allowed


# ----------------------------------------------------------------------------------------------
# (f) analytic FLOPs against XLA's count

SIZES = {
  "d64_l2": {"n_layer": 2, "d_model": 64, "n_head": 4, "d_ff": 256},
  "d128_l4": {"n_layer": 4, "d_model": 128, "n_head": 4, "d_ff": 512},
}
BATCH, SEQ, FLOPS_VOCAB = 4, 64, 256
# The larger size compiles longest; the inner loop (-m "not slow") checks the smaller one.
SIZE_PARAMS = [pytest.param(s, marks=pytest.mark.slow) if s == "d128_l4" else s for s in SIZES]


def _flops_setup(size):
  model = Transformer(num_classes=FLOPS_VOCAB, n_ctx=SEQ, **SIZES[size])
  tokens = jnp.zeros((BATCH, SEQ + 1), jnp.int32)  # the train step predicts SEQ positions
  params = jax.jit(model.init)(jax.random.key(0), tokens[:, :SEQ])
  return model, params, tokens


def _report(name, analytic, xla):
  print(f"{name}: analytic {analytic:.4g}, XLA {xla:.4g}, XLA/analytic {xla / analytic:.4f}")


@pytest.mark.parametrize("size", SIZE_PARAMS)
def test_forward_flops_agree_with_xla(size):
  """XLA counts 0.2-0.5% more than the analytic count: its fusion pass duplicates the fused qkv
  bias add into each of the q, k, v consumers (3x that add), and it counts LayerNorm's per-row
  mean/variance arithmetic, which the analytic count leaves out."""
  model, params, tokens = _flops_setup(size)
  analytic = tf.sequence_forward_flops(model, BATCH, SEQ)
  xla = compiled_cost(model.apply, params, tokens[:, :SEQ])["flops"]
  for term in tf.forward_terms(model, BATCH, SEQ):
    print(f"  {term.name}: matmul {term.matmul:.4g}, elementwise {term.elementwise:.4g}")
  _report(f"{size} forward", analytic, xla)
  assert abs(xla / analytic - 1) < 0.10
  # The matmuls alone already come within 10%; elementwise work is the remainder.
  matmuls = sum(t.matmul for t in tf.forward_terms(model, BATCH, SEQ))
  assert 0.9 < matmuls / xla < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZE_PARAMS)
def test_train_step_flops_agree_with_xla(size):
  model, params, tokens = _flops_setup(size)
  optimizer = make_optimizer("adam", 1e-3)
  # The step the train loop runs: tokens in, the next tokens as targets.
  state = create_train_state(model, optimizer, tokens[:1, :SEQ], jax.random.key(0))
  step = make_train_step(model, optimizer)
  config = {"name": "transformer", "n_ctx": SEQ, **SIZES[size]}
  terms = flops.train_step_terms(config, (SEQ,), FLOPS_VOCAB, BATCH, count_params(params), "adam")
  analytic = sum(terms.values())
  xla = compiled_cost(step, state, (tokens[:, :SEQ], tokens[:, 1 : SEQ + 1]))["flops"]
  print(terms)
  _report(f"{size} train step", analytic, xla)
  assert abs(xla / analytic - 1) < 0.10
  assert 2.9 < analytic / tf.sequence_forward_flops(model, BATCH, SEQ) < 3.2


def test_decode_step_flops_agree_with_xla():
  model, params, _ = _flops_setup("d64_l2")
  cache = init_cache(model, BATCH)
  decode = lambda p, t, c, s: model.apply(p, t, c, s, method=Transformer.decode)  # noqa: E731
  xla = compiled_cost(decode, params, jnp.zeros((BATCH, 1), jnp.int32), cache, jnp.int32(10))[
    "flops"
  ]
  analytic = tf.decode_step_flops(model, BATCH)
  _report("d64_l2 decode step", analytic, xla)
  assert abs(xla / analytic - 1) < 0.10
  # The serving engine's step: one position per row, scoring the cache's first 16 positions.
  model = model.clone(cache_layout="BHTD")
  step = lambda p, t, c, s: model.apply(p, t, c, s, 16, method=Transformer.decode)  # noqa: E731
  pos = jnp.arange(BATCH, dtype=jnp.int32)
  xla_16 = compiled_cost(
    step, params, jnp.zeros((BATCH, 1), jnp.int32), init_cache(model, BATCH), pos
  )
  analytic_16 = tf.decode_step_flops(model, BATCH, key_len=16)
  _report("d64_l2 decode step, 16 keys", analytic_16, xla_16["flops"])
  assert abs(xla_16["flops"] / analytic_16 - 1) < 0.10 and analytic_16 < analytic


# ----------------------------------------------------------------------------------------------
# (g) Kaplan's formula against the exact count


@pytest.mark.parametrize(
  "n_layer,d_model,n_ctx,tolerance",
  [
    # Measured gaps: 11.2%, 6.1%, 8.4%, 1.2%. The dense attention's causal half alone is
    # 2 n_ctx / (24 d_model + 4 n_ctx) of the blocks' FLOPs; elementwise work is the rest.
    (2, 64, 64, 0.15),  # small: attention's causal half 7.1%, elementwise 4.1%
    (4, 128, 64, 0.08),
    (24, 1024, 1024, 0.10),  # GPT-2 medium's shape: n_ctx = d_model, the causal half is 7.1%
    (48, 4096, 512, 0.015),  # d_model >> n_ctx / 12, Kaplan's regime: 1.0% + 0.2%
  ],
)
def test_kaplan_formula_is_close_to_the_exact_non_embedding_count(
  n_layer, d_model, n_ctx, tolerance
):
  d_ff = 4 * d_model
  config = {
    "n_layer": n_layer,
    "d_model": d_model,
    "n_head": d_model // 16,
    "d_ff": d_ff,
    "n_ctx": n_ctx,
    "num_classes": 50257,
  }
  kaplan = tf.kaplan_forward_flops_per_token(n_layer, d_model, d_ff, n_ctx)
  exact = tf.non_embedding_forward_flops(config, 1, n_ctx) / n_ctx
  assert kaplan < exact and abs(kaplan / exact - 1) < tolerance
  # The matmul part differs from Kaplan by exactly the causal half of dense attention.
  matmuls = sum(t.matmul for t in tf.forward_terms(config, 1, n_ctx) if t.name != "unembed")
  assert matmuls / n_ctx == kaplan + 2 * n_layer * n_ctx * d_model
  assert tf.kaplan_train_flops_per_token(n_layer, d_model, d_ff, n_ctx) == 3 * kaplan


# ----------------------------------------------------------------------------------------------
# (h) bfloat16 compute


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = _model(dtype=jnp.bfloat16)
  params = _init(model)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  tokens = _tokens((2, 12))
  logits = _apply(model)(params, tokens)
  assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
  reference = _apply(_model())(params, tokens)
  np.testing.assert_allclose(logits, reference, atol=0.05)
  gen = make_generator(model)
  last, cache = gen.prefill(params, tokens[:, :6])
  assert cache[0]["k"].dtype == jnp.bfloat16 and last.dtype == jnp.float32
  np.testing.assert_allclose(last, logits[:, 5], atol=0.05)
  assert gen.generate(params, tokens[:, :6], 4).shape == (2, 4)
