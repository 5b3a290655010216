"""The LM decode peers do our math: the plain PyTorch decoder and HF's GPT2LMHeadModel, given our
Transformer's weights, give our logits and our engine's greedy tokens; the study's report holds
the ratios. Skipped without torch and transformers (pip install -e '.[reference]')."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from research.models.transformer import Transformer  # noqa: E402
from research.serving.decode_engine import DecodeEngine, for_serving  # noqa: E402
from research.studies import lm_peers  # noqa: E402

VOCAB, N_CTX, PROMPT, NEW = 32, 32, 5, 12
MODEL = Transformer(num_classes=VOCAB, n_layer=2, d_model=32, n_head=4, d_ff=64, n_ctx=N_CTX)


@functools.lru_cache(maxsize=None)
def _params():
  """Random weights scaled up, so that greedy tokens are decided by clear margins."""
  init = lambda key: jax.tree.map(  # noqa: E731
    lambda x: 8.0 * x, MODEL.init(key, jnp.zeros((1, N_CTX), jnp.int32))
  )
  return jax.jit(init)(jax.random.key(0))


def _prompts(batch):
  return np.random.default_rng(batch).integers(0, VOCAB, (batch, PROMPT)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _ours(batch):
  engine = DecodeEngine(
    for_serving(MODEL), _params(), batch, (8,), (16, 32), prune_decode_buckets=False
  )
  tokens, stamps = lm_peers.EngineGenerate(engine).generate_timed(_prompts(batch), NEW)
  assert tokens.shape == (batch, NEW) and len(stamps) == NEW + 1
  return tokens


def test_plain_torch_gives_our_logits_and_our_engines_tokens():
  import torch

  from research.bench.torch_lm import PlainTorchLM

  plain = PlainTorchLM(MODEL, _params(), max_batch=4)
  prompt = _prompts(3)
  with torch.inference_mode():
    logits = plain.logits(torch.from_numpy(prompt.astype(np.int64)), 0).numpy()
  np.testing.assert_allclose(
    logits, np.asarray(MODEL.apply(_params(), prompt)), rtol=1e-4, atol=1e-3
  )
  tokens, stamps = plain.generate_timed(prompt, NEW)
  np.testing.assert_array_equal(tokens, _ours(3))
  assert np.all(np.diff(stamps) >= 0)
  assert len(set(tokens[0].tolist())) > 1  # not a constant repeat: the check can fail


def test_hf_generate_gives_our_engines_tokens():
  from research.bench.torch_lm import HfGenerate

  tokens, stamps = HfGenerate(MODEL, _params()).generate_timed(_prompts(3), NEW)
  assert len(stamps) == NEW + 1
  np.testing.assert_array_equal(tokens, _ours(3))


def test_report_has_every_framework_and_the_ratios(tmp_path):
  from research.outputs import json_text

  record = lm_peers.run(
    MODEL, _params(), ("hf", "torch", "jax"), (1, 2), PROMPT, 4, repeats=1, latency_runs=2,
    argv=["bench_lm_peers.py"], log=lambda _: None,
  )  # fmt: skip
  summary = record["frameworks"]
  assert set(summary) == {"hf", "torch", "jax"}
  assert [x["batch"] for x in summary["jax"]["sweep"]] == [1, 2]
  assert summary["jax"]["batch1"]["ttft_ms"]["n"] == 3  # latency rounds and the sweep's batch 1
  assert summary["hf"]["same_tokens_as_ours"]["runs"] == 4
  assert set(record["ratios"]) == {"jax_over_hf", "jax_over_torch"}
  assert record["ratios"]["jax_over_torch"]["tpot_x"] > 0
  assert "torch" in record["meta"]["versions"] and "transformers" in record["meta"]["versions"]
  json.loads(json_text(record))
  assert "jax over hf" in lm_peers.markdown(record)
