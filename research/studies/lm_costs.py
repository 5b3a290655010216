"""A trained language model's costs: training against real-time and batched generation.

From one workdir: the loss against the source's entropy rate; FLOPs per token from Kaplan et al.
(2020, Table 1: forward 2N + 2 n_layer n_ctx d_attn, training 3x forward), from our exact count
and from XLA (forward and the real train step); training tokens/s and MFU; time to first token
and time per output token at batch 1; batched generation tokens/s and MFU; and the break-even:
the tokens generated after which inference has cost as much as training did.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research import workdir as workdir_lib
from research.bench.generation import (
  batched_generation,
  check_fits,
  engine_decode_sweep,
  engine_realtime_generation,
  realtime_generation,
)
from research.cost import flops, hardware, xla
from research.models import transformer_flops as tf
from research.serving.decode_engine import for_serving
from research.serving.generate import GenerationError, Generator
from research.serving.restore import load_run
from research.training.optimizers import optimizer_from_config
from research.training.step import create_train_state, make_train_step


@dataclasses.dataclass(frozen=True)
class LMCostSettings:
  prompt_tokens: int = 16
  new_tokens: int = 64
  sequences: int = 20
  batch_sizes: Sequence[int] = (1, 8, 32, 128)
  repeats: int = 5
  # Batched generation on "generator" (the lockstep Generator: whole generations, every step
  # over the whole n_ctx cache) or "engine" (the serving DecodeEngine, every slot busy, each
  # step over the filled prefix), batch 1's TTFT and TPOT likewise (a one-slot engine).
  decode: str = "generator"


DECODE_CHOICES = ("generator", "engine")


def _shape(model) -> dict[str, Any]:
  return {
    k: getattr(model, k)
    for k in ("num_classes", "n_layer", "d_model", "n_head", "d_ff", "n_ctx", "tied_embeddings")
  }


def flop_counts(model, params, batch: int, optimizer_name: str, optimizer) -> dict[str, Any]:
  """Per token: Kaplan's formula, our exact count and XLA's, for the forward pass and train step."""
  shape = _shape(model)
  n_ctx, tokens = shape["n_ctx"], batch * shape["n_ctx"]
  kaplan_fwd = tf.kaplan_forward_flops_per_token(
    shape["n_layer"], shape["d_model"], shape["d_ff"], n_ctx
  )
  x = jnp.zeros((batch, n_ctx), jnp.int32)
  state = create_train_state(model, optimizer, x[:1], jax.random.key(0))
  state = state.replace(params=params)
  step = make_train_step(model, optimizer)
  xla_fwd = xla.compiled_cost(model.apply, params, x)["flops"]
  xla_train = xla.compiled_cost(step, state, (x, x))["flops"]
  exact_fwd = tf.sequence_forward_flops(shape, batch, n_ctx)
  model_config = {**shape, "name": "transformer"}
  num_params = tf.param_count(shape)
  exact_train = flops.train_step_flops(
    model_config, (n_ctx,), shape["num_classes"], batch, num_params, optimizer_name
  )
  return {
    "non_embedding_params": {
      "kaplan": tf.kaplan_non_embedding_params(shape["n_layer"], shape["d_model"], shape["d_ff"]),
      "exact": tf.exact_non_embedding_params(shape["n_layer"], shape["d_model"], shape["d_ff"]),
    },
    "forward_per_token": {
      "kaplan": kaplan_fwd,
      "exact": exact_fwd / tokens,
      "xla": xla_fwd / tokens,
      "exact_non_embedding": tf.non_embedding_forward_flops(shape, batch, n_ctx) / tokens,
    },
    "train_step_per_token": {
      "kaplan": 3 * kaplan_fwd,
      "exact": exact_train / tokens,
      "xla": xla_train / tokens,
    },
    "xla_over_exact": {"forward": xla_fwd / exact_fwd, "train_step": xla_train / exact_train},
    "decode_per_token": tf.decode_step_flops(shape, 1),
    "batch_for_counts": batch,
  }


def lm_costs(
  workdir: str, settings: LMCostSettings = LMCostSettings(), peak: dict | None = None
) -> dict[str, Any]:
  """Everything in the report, as a JSON-able dict."""
  run = load_run(workdir)
  summary = workdir_lib.read_summary(workdir)
  config, model, params = run.config, run.model, run.params
  check_fits(model.n_ctx, settings.prompt_tokens, settings.new_tokens)  # before any timing
  if settings.decode not in DECODE_CHOICES:
    raise GenerationError(
      f"unknown decode {settings.decode!r}; choose one of: {', '.join(DECODE_CHOICES)}"
    )
  optimizer = optimizer_from_config(config)
  flops = flop_counts(model, params, min(config.batch_size, 8), config.optimizer.name, optimizer)
  peak = peak or hardware.measure_peak_flops()
  peak_flops = peak["peak_flops"]
  n_ctx = model.n_ctx
  tokens_per_step = config.batch_size * n_ctx
  train_tokens_per_s = summary["steps_per_second"] * tokens_per_step
  train_flops_total = flops["train_step_per_token"]["exact"] * tokens_per_step * summary["steps"]

  generator = Generator(model)
  rng = np.random.default_rng(0)
  prompt = jnp.asarray(rng.integers(0, model.num_classes, (1, settings.prompt_tokens)), jnp.int32)
  if settings.decode == "engine":
    realtime = engine_realtime_generation(
      for_serving(model), params, np.asarray(prompt)[0].tolist(), settings.new_tokens,
      settings.sequences,
    )  # fmt: skip
  else:
    realtime = realtime_generation(
      generator, params, prompt, settings.new_tokens, settings.sequences
    )
  if settings.decode == "engine":
    batched = engine_decode_sweep(
      for_serving(model),
      params,
      settings.batch_sizes,
      settings.prompt_tokens,
      settings.new_tokens,
      repeats=settings.repeats,
    )
  else:
    batched = batched_generation(
      generator,
      params,
      settings.prompt_tokens,
      settings.new_tokens,
      settings.batch_sizes,
      model.num_classes,
      settings.repeats,
    )
  decode_flops = flops["decode_per_token"]
  for r in batched:
    r["mfu"] = decode_flops * r["tokens_per_second"] / peak_flops
  best = max(batched, key=lambda r: r["tokens_per_second"])
  loss = summary["final_test_loss"]
  floor = summary.get("loss_floor")
  return {
    "workdir": os.path.abspath(workdir),
    "experiment": summary["experiment"],
    "model": _shape(model),
    "params": summary["params"],
    "steps": summary["steps"],
    "loss": {
      "test_nats_per_token": loss,
      "test_bits_per_token": loss / math.log(2),
      "perplexity": math.exp(loss),
      "entropy_rate": floor,
      "gap_to_entropy_rate": None if floor is None else loss - floor,
    },
    "flops": flops,
    "training": {
      "tokens_per_step": tokens_per_step,
      "tokens_per_second": train_tokens_per_s,
      "train_seconds": summary["train_seconds"],
      "compile_seconds": summary["compile_seconds"],
      "mfu": flops["train_step_per_token"]["exact"] * train_tokens_per_s / peak_flops,
      "total_flops": train_flops_total,
    },
    "generation": {
      "settings": dataclasses.asdict(settings),
      "realtime": realtime,
      "batched": batched,
      "best_batched": best,
      "realtime_mfu": decode_flops * realtime["tokens_per_second"] / peak_flops,
    },
    "peak": peak,
    "break_even_tokens": {
      "flops": train_flops_total / decode_flops,
      "seconds_realtime": summary["train_seconds"] / (realtime["tpot"]["p50_ms"] / 1e3),
      "seconds_batched": summary["train_seconds"] * best["tokens_per_second"],
    },
  }


def markdown(r: dict[str, Any], provenance_md: str) -> str:
  """The report a reader checks: loss, FLOPs per token, time, break-even, from this run."""
  t = r["training"]
  lines = [
    f"# Language model: training against generation ({r['experiment']})",
    "",
    provenance_md,
    "",
    f"Model: {r['model']['n_layer']} layers, d_model {r['model']['d_model']}, "
    f"{r['model']['n_head']} heads, d_ff {r['model']['d_ff']}, n_ctx {r['model']['n_ctx']}, "
    f"vocabulary {r['model']['num_classes']}; {r['params']:,} parameters; "
    f"{r['steps']} steps of {t['tokens_per_step']:,} tokens.",
    "",
    *_loss_section(r["loss"]),
    *_flops_section(r["flops"]),
    *_time_section(r),
    *_break_even_section(r),
  ]
  return "\n".join(lines)


def _count(x: float) -> str:
  return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _loss_section(loss: dict[str, Any]) -> list[str]:
  """The test loss, against the source's entropy rate when the data has one."""
  if loss["entropy_rate"] is not None:
    text = (
      f"Test loss {loss['test_nats_per_token']:.4f} nats/token ({loss['test_bits_per_token']:.4f} "
      f"bits, perplexity {loss['perplexity']:.3f}) against the source's entropy rate "
      f"{loss['entropy_rate']:.4f}: **{loss['gap_to_entropy_rate']:+.4f} nats/token** from the "
      f"best achievable. (A window's first position sees no context; its best loss is the "
      f"marginal entropy, which keeps even a perfect model a little above the rate.)"
    )
  else:
    text = (
      f"Test loss {loss['test_nats_per_token']:.4f} nats/token "
      f"({loss['test_bits_per_token']:.4f} bits, perplexity {loss['perplexity']:.3f})."
    )
  return ["## Loss", "", text, ""]


def _flops_section(f: dict[str, Any]) -> list[str]:
  """Kaplan's formula, our exact count and XLA's, per token."""
  from research.outputs import markdown_table

  return [
    "## FLOPs per token",
    "",
    markdown_table(
      [
        "",
        "Kaplan et al. (2N + 2 n_layer n_ctx d_attn; train 3x)",
        "exact (every matmul and elementwise op)",
        "XLA",
        "XLA / exact",
      ],
      [
        [
          "forward",
          _count(f["forward_per_token"]["kaplan"]),
          _count(f["forward_per_token"]["exact"]),
          _count(f["forward_per_token"]["xla"]),
          f"{f['xla_over_exact']['forward']:.3f}",
        ],
        [
          "train step",
          _count(f["train_step_per_token"]["kaplan"]),
          _count(f["train_step_per_token"]["exact"]),
          _count(f["train_step_per_token"]["xla"]),
          f"{f['xla_over_exact']['train_step']:.3f}",
        ],
        ["decode step (KV cache, batch 1)", "", _count(f["decode_per_token"]), "", ""],
      ],
    ),
    "",
    f"Non-embedding parameters: Kaplan {f['non_embedding_params']['kaplan']:,}, exact "
    f"{f['non_embedding_params']['exact']:,}. Kaplan's count leaves out the embedding and "
    f"the unembedding (d_model x vocabulary per token), which matter at this small width: "
    f"the exact forward count without them is "
    f"{_count(f['forward_per_token']['exact_non_embedding'])} per token.",
    "",
  ]


def _time_section(r: dict[str, Any]) -> list[str]:
  """Training, real-time and batched generation per token, with MFU against the measured peak."""
  from research.outputs import markdown_table

  t, g = r["training"], r["generation"]
  rt = g["realtime"]
  on = " (serving engine)" if g["settings"].get("decode") == "engine" else ""
  return [
    "## Time",
    "",
    markdown_table(
      ["", "per token", "tokens/s", "MFU"],
      [
        [
          "training (train step)",
          f"{1e6 / t['tokens_per_second']:.2f} µs",
          f"{t['tokens_per_second']:,.0f}",
          f"{100 * t['mfu']:.1f} %",
        ],
        [
          f"real-time generation{on} (batch 1), time per output token p50 / p99",
          f"{rt['tpot']['p50_ms']:.3f} / {rt['tpot']['p99_ms']:.3f} ms",
          f"{rt['tokens_per_second']:,.0f}",
          f"{100 * g['realtime_mfu']:.2f} %",
        ],
        *[
          [
            f"batched generation{on}, batch {b['batch_size']}",
            f"{1e6 / b['tokens_per_second']:.2f} µs",
            f"{b['tokens_per_second']:,.0f}",
            f"{100 * b['mfu']:.2f} %",
          ]
          for b in g["batched"]
        ],
      ],
    ),
    "",
    f"Time to first token (prompt of {rt['prompt_tokens']}, batch 1): "
    f"p50 {rt['ttft']['p50_ms']:.3f} ms, p99 {rt['ttft']['p99_ms']:.3f} ms. First calls "
    f"(compilation included): prefill {rt['first_call_seconds']['prefill_and_sample']:.2f} s, "
    f"decode step {rt['first_call_seconds']['decode_step']:.2f} s; training compiled in "
    f"{t['compile_seconds']:.2f} s. MFU: model FLOPs (exact count) / time / this "
    f"machine's measured peak ({r['peak']['peak_flops'] / 1e9:.0f} GFLOP/s, a "
    f"{r['peak']['matmul_n']}³ {r['peak']['dtype']} matmul).",
    "",
  ]


def _break_even_section(r: dict[str, Any]) -> list[str]:
  """Tokens generated after which generation has cost what training did."""
  t, g, be = r["training"], r["generation"], r["break_even_tokens"]
  return [
    "## Break-even",
    "",
    f"Training took {t['total_flops']:.3g} FLOPs and {t['train_seconds']:.1f} s. Generation "
    f"costs as much after **{be['flops']:,.0f} tokens** in FLOPs; in time, after "
    f"{be['seconds_realtime']:,.0f} tokens generated one at a time (batch 1) or "
    f"{be['seconds_batched']:,.0f} tokens generated at the best batch size "
    f"({g['best_batched']['batch_size']}).",
    "",
  ]


def write_lm_costs(
  workdir: str, out: str, settings: LMCostSettings, argv: Sequence[str]
) -> dict[str, Any]:
  """`lm_costs`, with provenance, written as OUT/report.json and OUT/report.md."""
  from research.outputs import check_output_dir, json_text, write_all
  from research.provenance import provenance
  from research.serving.run_kind import require_language_model

  require_language_model(workdir, "scripts/lm_costs.py")
  check_output_dir(
    out,
    "--out",
    names=(workdir_lib.REPORT, workdir_lib.REPORT_MARKDOWN),
    runs=[workdir],
    own=[workdir_lib.path(workdir, "lm_costs")],  # the default --out: this report's own place
  )
  t = time.perf_counter()
  report = lm_costs(workdir, settings)
  meta = provenance(argv, wall_seconds=time.perf_counter() - t)
  report["provenance"] = meta
  # Both or neither: a full disk or a signal part-way leaves the old pair, not one of each.
  write_all(
    {
      workdir_lib.path(out, workdir_lib.REPORT): json_text(report),
      workdir_lib.path(out, workdir_lib.REPORT_MARKDOWN): markdown(report, meta["markdown"]),
    }
  )
  return report
