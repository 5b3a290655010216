"""Kernel choice per backend: "auto" keeps XLA:CPU's fast paths on CPU and gives every other
backend XLA's own ops; the platform is faked, since CI has no GPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import kernels
from research.models import ModelError, build_model, for_platform
from research.serving.predictor import Predictor


def _primitives(model, x):
  params = model.init(jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: jnp.sum(model.apply(p, x))))(params)
  return {str(e.primitive) for e in _equations(jaxpr.jaxpr)}


def _equations(jaxpr):
  for e in jaxpr.eqns:
    yield e
    for p in e.params.values():
      inner = getattr(p, "jaxpr", p)
      if hasattr(inner, "eqns"):
        yield from _equations(inner)


def test_auto_resolves_per_platform():
  assert kernels.resolve("conv1d", "auto", "cpu") == "im2col"
  assert kernels.resolve("matmul", "auto", "cpu") == "patch"
  for platform in ("gpu", "cuda", "rocm", "tpu"):
    assert kernels.resolve("conv1d", "auto", platform) == "xla"
    assert kernels.resolve("matmul", "auto", platform) == "xla"
  assert kernels.resolve("conv1d", "xla", "cpu") == "xla"  # a name is taken as given
  with pytest.raises(kernels.KernelError, match="choose auto or one of: im2col, xla"):
    kernels.resolve("conv1d", "winograd", "cpu")
  with pytest.raises(ModelError, match="model.matmul_impl"):
    build_model({"name": "mlp", "matmul_impl": "cublas"}, 10)


def test_cpu_trains_the_cnn_with_the_fast_paths():
  x = jnp.zeros((4, 40), jnp.float32)
  prims = _primitives(build_model({"name": "cnn1d"}, 10), x)
  assert "conv_general_dilated" not in prims
  assert "optimization_barrier" in prims  # the patch matmul's backward (expanded under grad)


def test_a_faked_gpu_gets_xla_own_ops(monkeypatch):
  monkeypatch.setattr(kernels, "_default_platform", lambda: "gpu")
  x = jnp.zeros((4, 40), jnp.float32)
  prims = _primitives(build_model({"name": "cnn1d"}, 10), x)
  assert "conv_general_dilated" in prims
  assert "optimization_barrier" not in prims


def test_for_platform_keeps_params_and_function():
  model = build_model({"name": "cnn1d"}, 10)
  x = jax.random.normal(jax.random.key(1), (8, 40))
  params = model.init(jax.random.key(0), x)
  on_gpu = for_platform(model, "gpu")
  assert (on_gpu.conv_impl, on_gpu.matmul_impl) == ("xla", "xla")
  assert (for_platform(model, "cpu").conv_impl, for_platform(model, "cpu").matmul_impl) == (
    "im2col",
    "patch",
  )
  np.testing.assert_allclose(on_gpu.apply(params, x), model.apply(params, x), atol=1e-5)
  built = build_model({"name": "cnn1d"}, 10, platform="tpu")
  assert (built.conv_impl, built.matmul_impl) == ("xla", "xla")


def test_the_predictor_picks_kernels_for_its_device(monkeypatch):
  # JAX's default backend "is" a GPU, but the predictor serves on a CPU device: CPU kernels.
  monkeypatch.setattr(kernels, "_default_platform", lambda: "gpu")
  model = build_model({"name": "cnn1d"}, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40)))
  predictor = Predictor(model, params, (40,), batch_sizes=(1,), device=jax.devices("cpu")[0])
  hlo = predictor.compiled[1].as_text()
  assert "convolution" not in hlo
