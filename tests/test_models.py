import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import ModelError, build_model, count_params

REFERENCE_COUNTS = {"logistic": 410, "mlp": 15_210, "cnn1d": 5_210, "gru": 5_134}


@pytest.mark.parametrize("name,expected", sorted(REFERENCE_COUNTS.items()))
def test_mnist1d_models_have_reference_parameter_counts(name, expected):
  model = build_model({"name": name}, num_classes=10)
  params = model.init(jax.random.key(0), jnp.zeros((2, 40)))
  assert count_params(params) == expected
  assert model.apply(params, jnp.ones((3, 40))).shape == (3, 10)


@pytest.mark.slow
def test_digits_cnn_runs_on_8x8_images():
  model = build_model({"name": "cnn2d"}, num_classes=10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8)))
  assert model.apply(params, jnp.ones((5, 8, 8))).shape == (5, 10)
  assert count_params(params) == (9 * 16 + 16) + (9 * 16 * 32 + 32) + (4 * 4 * 32 * 10 + 10)


@pytest.mark.slow
def test_im2col_cnn_matches_xla_conv_values_and_gradients():
  xla = build_model({"name": "cnn1d", "conv_impl": "xla"}, 10)
  fast = build_model({"name": "cnn1d", "conv_impl": "im2col"}, 10)
  params = xla.init(jax.random.key(0), jnp.zeros((1, 40)))
  x = jax.random.normal(jax.random.key(1), (6, 40))
  np.testing.assert_allclose(fast.apply(params, x), xla.apply(params, x), atol=1e-5)
  loss = lambda m: lambda p: jnp.sum(m.apply(p, x) ** 2)
  g_fast, g_xla = jax.grad(loss(fast))(params), jax.grad(loss(xla))(params)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_xla)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
  "k,s,p,c_in,length", [(5, 2, 1, 1, 40), (3, 2, 1, 25, 19), (4, 1, 0, 3, 9)]
)
def test_conv1d_layer_alignment_does_not_change_results(k, s, p, c_in, length):
  from research.models.layers import Conv1D

  x = jax.random.normal(jax.random.key(2), (4, length, c_in))
  ref = Conv1D(7, k, s, p, impl="xla")
  params = ref.init(jax.random.key(3), x)
  for align in (0, 8):
    y = Conv1D(7, k, s, p, impl="im2col", align=align).apply(params, x)
    np.testing.assert_allclose(y, ref.apply(params, x), atol=1e-5)


def _numpy_bigru(params, x_BxT):
  """PyTorch's GRU equations, step by step in NumPy, as an independent check of the scan."""
  p = jax.tree.map(np.asarray, params["params"])
  hidden = p["w_hid"].shape[1]
  batch, steps = x_BxT.shape
  outs = []
  for d in range(2):
    h = np.zeros((batch, hidden))
    seq = range(steps) if d == 0 else reversed(range(steps))
    out = np.zeros((batch, steps, hidden))
    for t in seq:
      gi = x_BxT[:, t : t + 1] @ p["w_in"][d] + p["b_in"][d]
      gh = h @ p["w_hid"][d] + p["b_hid"][d]
      sig = lambda v: 1 / (1 + np.exp(-v))
      r = sig(gi[:, :hidden] + gh[:, :hidden])
      z = sig(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
      n = np.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
      h = (1 - z) * n + z * h
      out[:, t] = h
    outs.append(out)
  flat = np.concatenate(outs, axis=-1).reshape(batch, -1)
  return flat @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]


@pytest.mark.parametrize("unroll", [1, 8])
def test_bigru_matches_step_by_step_reference(unroll):
  model = build_model({"name": "gru", "unroll": unroll}, 10)
  x = np.asarray(jax.random.normal(jax.random.key(4), (3, 40)))
  params = model.init(jax.random.key(5), x)
  np.testing.assert_allclose(model.apply(params, x), _numpy_bigru(params, x), atol=1e-5)


def test_unknown_model_and_field_are_clear_errors():
  with pytest.raises(ModelError, match="unknown model 'resnet'.*choose one of"):
    build_model({"name": "resnet"}, 10)
  with pytest.raises(ModelError, match="has no field.*widht"):
    build_model({"name": "mlp", "widht": 3}, 10)
  with pytest.raises(ModelError, match="unknown model.dtype"):
    build_model({"name": "mlp", "dtype": "float8"}, 10)


def test_bfloat16_compute_keeps_float32_params():
  model = build_model({"name": "cnn1d", "dtype": "bfloat16"}, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40)))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert model.apply(params, jnp.ones((2, 40))).dtype == jnp.bfloat16


def test_patch_matmul_gradients_equal_plain_matmul():
  from research.kernels.matmul import patch_matmul

  p = jax.random.normal(jax.random.key(6), (4, 7, 13))
  w = jax.random.normal(jax.random.key(7), (13, 5))
  f_custom = lambda p, w: jnp.sum(jnp.sin(patch_matmul(p, w)))
  f_plain = lambda p, w: jnp.sum(jnp.sin(p @ w))
  np.testing.assert_allclose(f_custom(p, w), f_plain(p, w), rtol=1e-6)
  for a, b in zip(jax.grad(f_custom, (0, 1))(p, w), jax.grad(f_plain, (0, 1))(p, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
