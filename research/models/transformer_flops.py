"""FLOPs of the decoder-only Transformer: Kaplan et al. (2020)'s formula and an exact count.

Conventions are `research/models/flops.py`'s (XLA's): a multiply-add is 2 FLOPs, an elementwise
add, multiply, max or select is 1, and exp/tanh/rsqrt are transcendentals, counted apart.

Kaplan's Table 1 counts, per token, C_forward = 2N + 2 n_layer n_ctx d_attn with
N = 2 d_model n_layer (2 d_attn + d_ff): the weight matmuls of the blocks and an attention term.
It leaves out
  - the embedding (a gather: no FLOPs) and the unembedding matmul, 2 d_model n_vocab per token,
    which is large for small models (here it can be 15-30% of the total) but a vanishing
    fraction once 2N grows as d_model^2 n_layer;
  - every elementwise op (biases, LayerNorm, GELU, softmax, residuals): O(d_model + d_ff +
    n_head n_ctx) per layer against the matmuls' O(d_model^2), so a few percent at d_model 64
    and well under 1% at d_model 1024;
  - half of the dense attention: QK^T and PV over the full T x T square cost 4 n_ctx d_attn per
    token per layer, twice Kaplan's term, which counts only the causal (lower-triangle) half
    that the model needs. XLA computes and counts the whole square, and so does `forward_terms`.
    The gap is 2 n_ctx / (24 d_model + 4 n_ctx) of the block FLOPs (d_ff = 4 d_model): small
    when d_model >> n_ctx / 12, Kaplan's own condition for dropping context terms.

`forward_terms` counts our module (research/models/transformer.py) op by op; XLA's count
(`research.cost.xla.compiled_cost`) is the cross-check. Where the two differ, XLA is counting
work the model does not need: its fusion pass
duplicates the fused qkv bias add into the q, k and v consumers (3x that add; measured), and it
counts a reduction over n elements as n - 1 adds.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from research.models.flops import LayerFlops

# Elementwise FLOPs per element, counted in the module's ops (checked against XLA's HLO):
LAYERNORM_FLOPS = 7  # x^2, two row sums, - mean, scale * rsqrt, *, + bias  (+ 1 rsqrt per row)
GELU_FLOPS = 8  # tanh form: x^3 (2), * c, + x, * sqrt(2/pi), + 1, * 0.5, * x  (+ 1 tanh)
SOFTMAX_FLOPS = 5  # causal select, row max, - max, row sum, * 1/sum  (+ 1 exp)
# Mean cross-entropy per vocabulary entry: forward max, - max, sum of exp, one-hot select and
# sum; backward softmax * g, - one-hot (+ 1 exp forward).
LOSS_FLOPS = 7

_DEFAULTS = {
  "n_layer": 2,
  "d_model": 64,
  "n_head": 4,
  "d_ff": 256,
  "n_ctx": 64,
  "tied_embeddings": True,
}


def _config(config: Any) -> dict[str, Any]:
  """The shape fields of a Transformer module, or of a mapping of its fields (defaults filled)."""
  if isinstance(config, Mapping):
    out = {**_DEFAULTS, **config}
  else:
    out = {k: getattr(config, k) for k in (*_DEFAULTS, "num_classes")}
  if "num_classes" not in out:
    raise ValueError("config needs num_classes (the vocabulary size)")
  return out


# ----------------------------------------------------------------------------------------------
# Parameters


def kaplan_non_embedding_params(
  n_layer: int, d_model: int, d_ff: int, d_attn: int | None = None
) -> int:
  """N = 2 d_model n_layer (2 d_attn + d_ff): weight matrices only, no biases or LayerNorms."""
  d_attn = d_model if d_attn is None else d_attn
  return 2 * d_model * n_layer * (2 * d_attn + d_ff)


def exact_non_embedding_params(n_layer: int, d_model: int, d_ff: int) -> int:
  """Our module's parameters outside the token/position embeddings and an untied head.

  Per block: qkv and output projections with biases, the MLP with biases, two LayerNorms (scale
  and bias); plus the final LayerNorm. Kaplan's N is this less the biases and LayerNorms.
  """
  d = d_model
  per_block = (d * 3 * d + 3 * d) + (d * d + d) + (d * d_ff + d_ff) + (d_ff * d + d) + 2 * 2 * d
  return n_layer * per_block + 2 * d


def param_count(config: Any) -> int:
  """Every parameter of the module: non-embedding, token and position embeddings, untied head."""
  c = _config(config)
  d, v = c["d_model"], c["num_classes"]
  head = 0 if c["tied_embeddings"] else d * v
  return exact_non_embedding_params(c["n_layer"], d, c["d_ff"]) + v * d + c["n_ctx"] * d + head


# ----------------------------------------------------------------------------------------------
# Kaplan


def kaplan_forward_flops_per_token(
  n_layer: int, d_model: int, d_ff: int, n_ctx: int, d_attn: int | None = None
) -> float:
  """C_forward = 2N + 2 n_layer n_ctx d_attn (Kaplan et al. 2020, Table 1)."""
  d_attn = d_model if d_attn is None else d_attn
  n = kaplan_non_embedding_params(n_layer, d_model, d_ff, d_attn)
  return 2.0 * n + 2.0 * n_layer * n_ctx * d_attn


def kaplan_train_flops_per_token(
  n_layer: int, d_model: int, d_ff: int, n_ctx: int, d_attn: int | None = None
) -> float:
  """Training is about 3x the forward pass (backward: input and weight gradients, 2x)."""
  return 3.0 * kaplan_forward_flops_per_token(n_layer, d_model, d_ff, n_ctx, d_attn)


# ----------------------------------------------------------------------------------------------
# Exact count of our module


def forward_terms(
  config: Any, batch: int, seq_len: int, key_len: int | None = None
) -> list[LayerFlops]:
  """Forward FLOPs of `batch` sequences of `seq_len` tokens, term by term, all layers summed.

  `key_len` is how many keys each query is scored against: `seq_len` for the full forward
  (the dense T x T square, as XLA computes it), `n_ctx` for `Transformer.decode`, which scores
  the whole fixed-size cache and masks what is not yet written.
  """
  c = _config(config)
  L, d, f, h, v = c["n_layer"], c["d_model"], c["d_ff"], c["n_head"], c["num_classes"]
  n = float(batch * seq_len)  # tokens
  k = seq_len if key_len is None else key_len
  scores = n * h * k  # per layer
  return [
    LayerFlops("embedding", 0.0, n * d, input_is_data=True),  # token + position embedding
    # q scaling (d) and the qkv bias (3d).
    LayerFlops("qkv", L * 2 * n * d * 3 * d, L * n * 4 * d, False),
    LayerFlops("attn_scores", L * 2 * n * k * d, 0.0, False),
    LayerFlops("attn_softmax", 0.0, L * SOFTMAX_FLOPS * scores, False, transcendentals=L * scores),
    LayerFlops("attn_values", L * 2 * n * k * d, 0.0, False),
    # Bias and residual add.
    LayerFlops("attn_out", L * 2 * n * d * d, L * n * 2 * d, False),
    # Two biases, the residual add and GELU.
    LayerFlops(
      "mlp",
      L * 2 * n * 2 * d * f,
      L * n * (f + 2 * d + GELU_FLOPS * f),
      False,
      transcendentals=L * n * f,
    ),
    # Two per block and the final one.
    LayerFlops(
      "layernorm",
      0.0,
      (2 * L + 1) * n * LAYERNORM_FLOPS * d,
      False,
      transcendentals=(2 * L + 1) * n,
    ),
    LayerFlops("unembed", 2 * n * d * v, 0.0, False),
  ]


def sequence_forward_flops(
  config: Any, batch: int, seq_len: int, key_len: int | None = None
) -> float:
  """Total forward FLOPs (matmuls + elementwise) of `forward_terms`."""
  return sum(t.forward for t in forward_terms(config, batch, seq_len, key_len))


def train_step_terms(config: Any, batch: int, seq_len: int) -> dict[str, float]:
  """FLOPs of one train step (`research.training.step.make_train_step`) on `batch` windows of
  `seq_len` tokens, by part, all but the optimizer update (`research.cost.flops` adds it).

  Backward follows `research/models/flops.py`: a matmul costs its forward again for the weight
  gradient and again for the input gradient (every matmul here has a computed input: the
  residual stream starts at the embeddings, which are trained), an elementwise op twice its
  forward, a transcendental 3 more. The embedding's gradient is a scatter-add of every token's
  gradient (plus the position embedding's sum over the batch, plus adding the unembedding's
  gradient when tied).
  """
  c = _config(config)
  terms = forward_terms(c, batch, seq_len)
  n = float(batch * seq_len)
  d, v = c["d_model"], c["num_classes"]
  return {
    "forward": sum(t.forward for t in terms),
    "backward": sum(t.backward for t in terms),
    "embedding_grad": 2 * n * d + (v * d if c["tied_embeddings"] else 0),
    "loss": LOSS_FLOPS * n * v,
  }


def forward_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, batch: int
) -> float:
  """The registry's signature (`research.models.FAMILIES`): `batch` windows of `input_shape[0]`
  tokens."""
  config = {**model_config, "num_classes": num_classes}
  return sequence_forward_flops(config, batch, int(input_shape[0]))


def train_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, batch: int
) -> dict[str, float]:
  """The registry's signature for `train_step_terms`."""
  return train_step_terms({**model_config, "num_classes": num_classes}, batch, int(input_shape[0]))


def decode_step_flops(
  config: Any, batch: int, new_tokens: int = 1, key_len: int | None = None
) -> float:
  """FLOPs of one `Transformer.decode` call on `new_tokens` per sequence, at any position.

  Every query scores all n_ctx cache slots (the shapes are fixed), so the cost does not depend on
  how much of the cache is filled; a call with `key_len` scores only that many.
  """
  key_len = _config(config)["n_ctx"] if key_len is None else key_len
  return sequence_forward_flops(config, batch, new_tokens, key_len=key_len)


def non_embedding_forward_flops(config: Any, batch: int, seq_len: int) -> float:
  """`sequence_forward_flops` less the terms Kaplan's formula leaves out: (un)embedding."""
  return sum(
    t.forward
    for t in forward_terms(config, batch, seq_len)
    if t.name not in ("embedding", "unembed")
  )
