"""The LM decode peers in PyTorch: Hugging Face's GPT-2 and the same math written plainly.

Both are built from our Transformer's params (research/models/transformer.py), copied over, so
the three frameworks run the same network: GPT-2's layout is ours (pre-LayerNorm blocks, one
fused qkv projection whose 3 x d_model outputs are q, k, v and within each the heads in order,
tanh GELU, learned positions, final LayerNorm, tied unembedding), and a flax Dense kernel is
[in, out] as GPT-2's Conv1D weight is. Only LayerNorm's epsilon differs by default (flax 1e-6,
GPT-2 1e-5), so the config sets it.

  PlainTorchLM  prefill and decode steps against a KV cache allocated once ([L, B, H, n_ctx, Dh]
                per k and v); each step writes its keys at the shared position and attends over
                the filled prefix only, as a plain implementation would.
  hf_gpt2       transformers' GPT2LMHeadModel, run through its own `generate` (greedy, KV cache,
                fixed new-token count, no end-of-sequence token).

Each `generate_timed` returns the new tokens [B, N] and N + 1 host timestamps: the call's start
and the moment each new token was on the host. The one module outside research/studies/ that
imports torch (pip install -e '.[reference]').
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LAYERNORM_EPS = 1e-6  # flax.linen.LayerNorm's default, which our Transformer uses


def pin_threads() -> None:
  """One intra-op and one inter-op thread: the peers are timed on one core, like ours."""
  torch.set_num_threads(1)
  try:
    torch.set_num_interop_threads(1)
  except RuntimeError:  # already set (a second call in one process): it can be set only once
    pass


def _np(x: Any) -> np.ndarray:
  return np.asarray(x, np.float32)


def transformer_weights(model: Any, params: Any) -> dict[str, Any]:
  """Our Transformer's params as float32 torch tensors, by role, blocks in order."""
  p = params["params"] if "params" in params else params
  t = lambda x: torch.from_numpy(_np(x).copy())  # noqa: E731
  blocks = []
  for i in range(model.n_layer):
    b = p[f"block{i}"]
    blocks.append(
      {
        "ln1_w": t(b["ln_attn"]["scale"]),
        "ln1_b": t(b["ln_attn"]["bias"]),
        "qkv_w": t(b["qkv"]["kernel"]),
        "qkv_b": t(b["qkv"]["bias"]),
        "out_w": t(b["attn_out"]["kernel"]),
        "out_b": t(b["attn_out"]["bias"]),
        "ln2_w": t(b["ln_mlp"]["scale"]),
        "ln2_b": t(b["ln_mlp"]["bias"]),
        "fc_w": t(b["mlp_in"]["kernel"]),
        "fc_b": t(b["mlp_in"]["bias"]),
        "proj_w": t(b["mlp_out"]["kernel"]),
        "proj_b": t(b["mlp_out"]["bias"]),
      }
    )
  wte = t(p["embed"]["embedding"])
  return {
    "wte": wte,
    "wpe": t(p["pos_embed"]),
    "blocks": blocks,
    "lnf_w": t(p["ln_f"]["scale"]),
    "lnf_b": t(p["ln_f"]["bias"]),
    # [D, V]: the tied unembedding is the token embedding transposed
    "head": wte.T.contiguous() if model.tied_embeddings else t(p["head"]["kernel"]),
  }


class PlainTorchLM:
  """Greedy decoding in plain PyTorch ops with a preallocated KV cache: our decode step's math.

  The cache holds `max_batch` rows; a generation uses the first B. Every row of a batch is at
  the same position (prompts of one length, run in lockstep).
  """

  def __init__(self, model: Any, params: Any, max_batch: int):
    self.w = transformer_weights(model, params)
    self.n_layer, self.n_head, self.n_ctx = model.n_layer, model.n_head, model.n_ctx
    self.d_model = model.d_model
    self.d_head = model.d_model // model.n_head
    shape = (model.n_layer, max_batch, model.n_head, model.n_ctx, self.d_head)
    self.k = torch.zeros(shape)
    self.v = torch.zeros(shape)
    self.max_batch = max_batch

  def _ln(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (self.d_model,), w, b, LAYERNORM_EPS)

  def logits(self, tokens_BxS: torch.Tensor, pos: int) -> torch.Tensor:
    """Logits [B, S, V] of S new tokens at positions pos.., their keys and values cached."""
    batch, s = tokens_BxS.shape
    h, dh, d = self.n_head, self.d_head, self.d_model
    end = pos + s
    x_BxSxD = self.w["wte"][tokens_BxS] + self.w["wpe"][pos:end]
    mask_SxT = None
    if s > 1:  # a query sees keys at its own position and before
      mask_SxT = torch.ones(s, end, dtype=torch.bool).tril(diagonal=pos)
    for i, b in enumerate(self.w["blocks"]):
      qkv = (self._ln(x_BxSxD, b["ln1_w"], b["ln1_b"]) @ b["qkv_w"] + b["qkv_b"]).view(
        batch, s, 3, h, dh
      )
      q_BxHxSxDh = qkv[:, :, 0].transpose(1, 2) * dh**-0.5
      self.k[i, :batch, :, pos:end] = qkv[:, :, 1].transpose(1, 2)
      self.v[i, :batch, :, pos:end] = qkv[:, :, 2].transpose(1, 2)
      keys_BxHxTxDh, values_BxHxTxDh = self.k[i, :batch, :, :end], self.v[i, :batch, :, :end]
      scores_BxHxSxT = q_BxHxSxDh @ keys_BxHxTxDh.transpose(-1, -2)
      if mask_SxT is not None:
        scores_BxHxSxT = scores_BxHxSxT.masked_fill(~mask_SxT, torch.finfo(torch.float32).min)
      attn = torch.softmax(scores_BxHxSxT, dim=-1) @ values_BxHxTxDh
      x_BxSxD = x_BxSxD + attn.transpose(1, 2).reshape(batch, s, d) @ b["out_w"] + b["out_b"]
      hidden = F.gelu(
        self._ln(x_BxSxD, b["ln2_w"], b["ln2_b"]) @ b["fc_w"] + b["fc_b"], approximate="tanh"
      )
      x_BxSxD = x_BxSxD + hidden @ b["proj_w"] + b["proj_b"]
    return self._ln(x_BxSxD, self.w["lnf_w"], self.w["lnf_b"]) @ self.w["head"]

  @torch.inference_mode()
  def generate_timed(self, prompt_BxP: np.ndarray, new_tokens: int) -> tuple[np.ndarray, list]:
    """Greedy: the new tokens [B, N] and N + 1 timestamps (start, then each token on the host)."""
    stamps = [time.perf_counter()]
    prompt = torch.from_numpy(np.asarray(prompt_BxP, np.int64))
    if len(prompt) > self.max_batch:
      raise ValueError(f"batch {len(prompt)} exceeds the cache's {self.max_batch} rows")
    pos = prompt.shape[1]
    token_B = self.logits(prompt, 0)[:, -1].argmax(-1)
    out = [token_B.tolist()]
    stamps.append(time.perf_counter())
    for i in range(1, new_tokens):
      token_B = self.logits(token_B[:, None], pos + i - 1)[:, -1].argmax(-1)
      out.append(token_B.tolist())
      stamps.append(time.perf_counter())
    return np.asarray(out, np.int32).T, stamps


def gpt2_config(model: Any) -> Any:
  """A GPT2Config of our Transformer's shape: no dropout, its LayerNorm epsilon, no special
  tokens (our vocabulary has none)."""
  from transformers import GPT2Config

  return GPT2Config(
    vocab_size=model.num_classes,
    n_positions=model.n_ctx,
    n_embd=model.d_model,
    n_layer=model.n_layer,
    n_head=model.n_head,
    n_inner=model.d_ff,
    activation_function="gelu_new",  # tanh GELU, as nn.gelu(approximate=True)
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    layer_norm_epsilon=LAYERNORM_EPS,
    tie_word_embeddings=bool(model.tied_embeddings),
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,  # nothing is padded (and the model then skips its per-call padding check)
  )


@torch.no_grad()
def hf_gpt2(model: Any, params: Any) -> Any:
  """transformers' GPT2LMHeadModel of our Transformer's shape, holding its params, in eval mode."""
  from transformers import GPT2LMHeadModel

  hf = GPT2LMHeadModel(gpt2_config(model)).eval()
  w = transformer_weights(model, params)
  tr = hf.transformer
  tr.wte.weight.copy_(w["wte"])
  tr.wpe.weight.copy_(w["wpe"])
  for block, b in zip(tr.h, w["blocks"]):
    block.ln_1.weight.copy_(b["ln1_w"])
    block.ln_1.bias.copy_(b["ln1_b"])
    block.attn.c_attn.weight.copy_(b["qkv_w"])  # Conv1D: [in, out], a Dense kernel's layout
    block.attn.c_attn.bias.copy_(b["qkv_b"])
    block.attn.c_proj.weight.copy_(b["out_w"])
    block.attn.c_proj.bias.copy_(b["out_b"])
    block.ln_2.weight.copy_(b["ln2_w"])
    block.ln_2.bias.copy_(b["ln2_b"])
    block.mlp.c_fc.weight.copy_(b["fc_w"])
    block.mlp.c_fc.bias.copy_(b["fc_b"])
    block.mlp.c_proj.weight.copy_(b["proj_w"])
    block.mlp.c_proj.bias.copy_(b["proj_b"])
  tr.ln_f.weight.copy_(w["lnf_w"])
  tr.ln_f.bias.copy_(w["lnf_b"])
  if not model.tied_embeddings:
    hf.lm_head.weight.copy_(w["head"].T)
  return hf


class HfGenerate:
  """`GPT2LMHeadModel.generate`, greedy with its KV cache, exactly `new_tokens` new tokens (no
  end-of-sequence token can stop it), each token's arrival stamped by a streamer."""

  def __init__(self, model: Any, params: Any):
    from transformers import GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    self.hf = hf_gpt2(model, params)
    self._config = lambda n: GenerationConfig(  # noqa: E731
      max_new_tokens=n,
      do_sample=False,
      use_cache=True,
      eos_token_id=None,
      bos_token_id=None,
      pad_token_id=0,
    )
    self.configs: dict[int, Any] = {}

    class Stamps(BaseStreamer):
      """generate() calls put() with the prompt, then with each new token [B] as it is made."""

      def __init__(self):
        self.stamps, self.prompt_seen = [], False

      def put(self, value):
        if self.prompt_seen:
          self.stamps.append(time.perf_counter())
        self.prompt_seen = True

      def end(self):
        pass

    self._stamps = Stamps

  @torch.inference_mode()
  def generate_timed(self, prompt_BxP: np.ndarray, new_tokens: int) -> tuple[np.ndarray, list]:
    """Greedy: the new tokens [B, N] and N + 1 timestamps (start, then each token on the host)."""
    if new_tokens not in self.configs:
      self.configs[new_tokens] = self._config(new_tokens)
    streamer = self._stamps()
    start = time.perf_counter()
    prompt = torch.from_numpy(np.asarray(prompt_BxP, np.int64))
    out = self.hf.generate(
      prompt,
      attention_mask=torch.ones_like(prompt),
      generation_config=self.configs[new_tokens],
      streamer=streamer,
    )
    if len(streamer.stamps) != new_tokens:
      raise RuntimeError(f"generate made {len(streamer.stamps)} tokens, {new_tokens} asked")
    return out[:, prompt.shape[1] :].numpy().astype(np.int32), [start, *streamer.stamps]
