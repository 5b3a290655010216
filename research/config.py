"""Experiment configs: plain Python files in experiments/ whose `get_config()` returns a ConfigDict.

`load_config("experiments/x.py:variant")` imports the file and calls `get_config("variant")`;
overrides ("optimizer.learning_rate=3e-3") must name an existing field and parse as its type, and
the result is locked: no code can add a field to it afterwards.
Nothing here imports JAX, so scripts can read a config before fixing XLA's flags.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any, Iterable

import ml_collections

from research.config_checks import parse_window, validate_optimizer, validate_sizes
from research.errors import UserError

# Fields that change what is recorded, not what is trained: not hyperparameters when runs are
# compared (TensorBoard's HParams, compare_runs.py).
NOT_HYPERPARAMETERS = ("profile_steps", "peer_timeout_seconds")
# Fields in which runs trained side by side (one vmapped program) may differ: the seed, and the
# optimizer scalars Optax injects into the optimizer state (research/training/optimizers.py).
# Turning weight decay or clipping on or off changes the optimizer's structure, so those must
# agree on being zero.
SIDE_BY_SIDE = (
  "experiment",
  "seed",
  "optimizer.learning_rate",
  "optimizer.weight_decay",
  "optimizer.clip_norm",
)


class ConfigError(UserError, ValueError):
  """A config that cannot be used; the message names the file or key and the fix."""


def base_config() -> ml_collections.ConfigDict:
  """Fields every classification experiment has, at the MNIST-1D reference protocol."""
  c = ml_collections.ConfigDict()
  c.experiment = ""
  c.seed = 0  # parameter initialisation (and shuffling, when on)
  c.data = ml_collections.ConfigDict(
    {
      "name": "mnist1d",
      "seed": 42,  # the generator's seed: 42 is the paper's dataset
      "shuffle_seq": False,  # the paper's spatially shuffled variant
      "path": "",  # for name=npz
      "shuffle": False,  # reshuffle the training set every epoch (reference: sequential)
      "validation_size": 0,  # training examples held out to choose the best checkpoint; 0: none
    }
  )
  c.model = ml_collections.ConfigDict({"name": "cnn1d"})
  c.optimizer = optimizer_config(name="adam", learning_rate=1e-2)
  c.batch_size = 100
  c.num_steps = 6000
  c.log_every = 250  # steps per compiled chunk; train metrics are logged for every step
  c.eval_every = 250  # a multiple of log_every
  c.checkpoint_every = 1000  # a multiple of eval_every
  c.keep_checkpoints = 2  # latest N, plus the best on validation (when data.validation_size > 0)
  c.eval_batch_size = 1000
  c.num_devices = 1  # data parallel over this many devices (0: all); batch split over them
  c.profile_steps = ""  # "START:END": a jax.profiler trace of those steps (TensorBoard Profile)
  # Several processes (--distributed): a peer silent this long ends every process with one line.
  c.peer_timeout_seconds = 30
  return c


def optimizer_config(**fields: Any) -> ml_collections.ConfigDict:
  """An `optimizer` group with every field a config may override, at its default unless given.

  Defaults: a constant rate, no clipping, weight decay (when nonzero) on every parameter; that
  is the plain Optax optimizer, bit for bit (research/training/optimizers.py).
  """
  group = ml_collections.ConfigDict(
    {
      "name": "adam",  # adam (decay as L2 in the gradient), adamw (decoupled) or sgd
      "learning_rate": 1e-3,  # the peak rate, when there is a schedule
      "b1": 0.9,
      "b2": 0.999,
      "weight_decay": 0.0,
      "momentum": 0.9,  # sgd only
      "schedule": "constant",  # constant, cosine or linear (decay after warmup)
      "warmup_steps": 0,  # linear warmup from 0 to learning_rate
      "decay_steps": 0,  # where the decay ends; 0: num_steps
      "end_factor": 0.0,  # the decay's end value, as a fraction of learning_rate
      "clip_norm": 0.0,  # clip the global gradient norm to this; 0: no clipping
      "weight_decay_mask": "all",  # all, or matrices (skip biases and norm scales)
    }
  )
  unknown = set(fields) - set(group)
  if unknown:
    raise ConfigError(f"unknown optimizer fields {sorted(unknown)}; known: {', '.join(group)}")
  group.update(fields)
  return group


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """Loads `path.py[:variant]`, applies `key=value` overrides and validates the result."""
  path, _, variant = spec.partition(":")
  if not path:
    raise ConfigError("no config given; pass --config experiments/<name>.py")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist; see experiments/ for the configs")
  module_spec = importlib.util.spec_from_file_location(
    "experiment_config_" + os.path.splitext(os.path.basename(path))[0], path
  )
  if module_spec is None:  # no loader for the suffix
    raise ConfigError(f"config file {path!r} is not a Python file; give experiments/<name>.py")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(
      f"config file {path!r} has a syntax error at line {e.lineno}: {e.msg}"
    ) from None
  except Exception as e:
    raise ConfigError(f"config file {path!r} failed to load ({type(e).__name__}: {e})") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"config file {path!r} defines no get_config() function")
  try:
    config = module.get_config(variant) if variant else module.get_config()
  except TypeError as e:
    raise ConfigError(f"config file {path!r}: get_config({variant!r}) failed: {e}") from None
  except (KeyError, ValueError) as e:
    raise ConfigError(f"config file {path!r}: {e}") from None
  except Exception as e:  # any bug in the file is the file's, named as such
    raise ConfigError(
      f"config file {path!r}: get_config({repr(variant) if variant else ''}) raised "
      f"{type(e).__name__}: {e}; "
      f"fix the file or pick one of its variants"
    ) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(
      f"config file {path!r}: get_config() must return an ml_collections.ConfigDict"
    )
  apply_overrides(config, overrides)
  validate(config)
  config.lock()  # fields may change value, but a misspelt new field is an error, not a no-op
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
  """Sets `a.b=value` fields in place, parsing each value as the field's current type.

  Why not ml_collections' `config_flags` (tried with ml_collections 1.1.0, absl-py 2.5.1): it
  reads overrides from `sys.argv` (or an argv fixed when the flag is defined), not from the
  argv being parsed, so `FlagValues()(["p", "--config=x.py", "--config.num_steps=7"])` fails
  with "Unknown command line flag 'config.num_steps'"; sweeps, Table 1's workers and tests load
  many configs with override lists in one process, and would each need a new FlagValues and a
  made-up argv. Its errors are not our one line with the fix: a misspelt key is an
  AttributeError "'num_stepz'\\nDid you mean ..." without the known keys, a bad variant or a
  failing get_config() an IllegalFlagValueError holding the whole traceback, a missing file a
  bare OSError, a syntax error a bare SyntaxError. It rejects `num_steps=1e4` for an int and
  `yes` for a bool, which we accept. And it parses with absl, while every script's own flags are
  argparse (`research.cli.parse_with_overrides` hands the `--config.*` rest here). What it
  would save, the typed parse (this function and its two helpers, about 60 lines), would go to
  a wrapper about as long that still changes what an override accepts.
  """
  for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep or not key:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    parent, leaf = _parent_of(config, key)
    current = parent[leaf]
    parent[leaf] = _parse_like(key, raw, current)


def _parent_of(config: ml_collections.ConfigDict, key: str) -> tuple[Any, str]:
  *path, leaf = key.split(".")
  node = config
  for i, part in enumerate(path):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(
        f"unknown config key {'.'.join(path[: i + 1])!r} (in override {key!r}); "
        f"known keys: {', '.join(_flat_keys(config))}"
      )
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(_flat_keys(config))}")
  if isinstance(node[leaf], ml_collections.ConfigDict):
    raise ConfigError(f"config key {key!r} is a group; override its fields ({key}.<field>=...)")
  return node, leaf


def _parse_like(key: str, raw: str, current: Any) -> Any:
  kind = type(current)
  try:
    if kind is bool:
      lowered = raw.strip().lower()
      if lowered in ("true", "1", "yes"):
        return True
      if lowered in ("false", "0", "no"):
        return False
      raise ValueError
    if kind is int:
      value = ast.literal_eval(raw)
      if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
          return int(value)
        raise ValueError
      return value
    if kind is float:
      return float(raw)
    if kind is str:
      return raw
    if kind in (tuple, list):
      value = ast.literal_eval(raw)
      if not isinstance(value, (tuple, list)):
        raise ValueError
      return kind(value)
    if current is None:
      try:
        return ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        return raw
  except (ValueError, SyntaxError):
    pass
  raise ConfigError(f"config key {key!r} expects {kind.__name__}, got {raw!r}")


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys += _flat_keys(v, prefix + k + ".")
    else:
      keys.append(prefix + k)
  return keys


def flatten(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'optimizer.learning_rate': 0.01, ...}: the form hyperparameter tables want."""
  return {k: _get(config, k) for k in _flat_keys(config)}


def _get(config, dotted):
  for part in dotted.split("."):
    config = config[part]
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks what the train loop relies on, so mistakes fail before any compilation."""

  def need(cond, message):
    if not cond:
      raise ConfigError(message)

  for key in (
    "batch_size",
    "num_steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_batch_size",
  ):
    need(
      key in config and isinstance(config[key], int) and config[key] > 0,
      f"config key {key!r} must be a positive integer, got {config.get(key)!r}",
    )
  need(
    isinstance(config.get("num_devices", 1), int) and config.get("num_devices", 1) >= 0,
    f"num_devices must be 0 (all devices) or a positive integer, got {config.get('num_devices')!r}",
  )
  timeout = config.get("peer_timeout_seconds", 30)
  need(
    isinstance(timeout, int) and not isinstance(timeout, bool) and timeout >= 1,
    f"peer_timeout_seconds must be a whole number of seconds >= 1, got {timeout!r}",
  )
  try:
    parse_window(config.get("profile_steps", ""), config.num_steps)
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None
  need(
    config.eval_every % config.log_every == 0,
    f"eval_every ({config.eval_every}) must be a multiple of log_every ({config.log_every})",
  )
  need(
    config.checkpoint_every % config.eval_every == 0,
    f"checkpoint_every ({config.checkpoint_every}) must be a multiple of eval_every "
    f"({config.eval_every}), so every checkpoint carries a test accuracy",
  )
  need(
    isinstance(config.get("model"), ml_collections.ConfigDict) and "name" in config.model,
    "config needs model.name",
  )
  need(
    isinstance(config.get("data"), ml_collections.ConfigDict) and "name" in config.data,
    "config needs data.name",
  )
  validate_sizes(config, need)
  if "n_ctx" in config.model and "n_ctx" in config.data:
    need(
      config.data.n_ctx <= config.model.n_ctx,
      f"data.n_ctx ({config.data.n_ctx}) exceeds model.n_ctx ({config.model.n_ctx}): windows "
      f"must fit the model's context; lower data.n_ctx or raise model.n_ctx",
    )
  val = config.data.get("validation_size", 0)
  need(
    isinstance(val, int) and val >= 0,
    f"data.validation_size must be an integer >= 0 (training examples held out), got {val!r}",
  )
  opt = config.get("optimizer")
  need(
    isinstance(opt, ml_collections.ConfigDict) and "name" in opt and "learning_rate" in opt,
    "config needs optimizer.name and optimizer.learning_rate",
  )
  need(opt.learning_rate > 0, f"optimizer.learning_rate must be positive, got {opt.learning_rate}")
  validate_optimizer(opt, config.num_steps, need)


def to_dict(config: ml_collections.ConfigDict) -> dict:
  """A JSON-safe plain dict (tuples become lists)."""
  return json.loads(config.to_json())


def save_config(config: ml_collections.ConfigDict, path: str) -> None:
  from research.outputs import write_json

  write_json(path, to_dict(config))


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
  """Dotted keys whose values differ between two plain config dicts."""
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
    if isinstance(va, dict) and isinstance(vb, dict):
      out += config_differences(va, vb, prefix + key + ".")
    elif va != vb:
      out.append(prefix + key)
  return out


def side_by_side_key(config: ml_collections.ConfigDict) -> str:
  """What runs trained side by side must share: every field outside SIDE_BY_SIDE, and whether
  weight decay and clipping are on."""
  flat = flatten(config)
  for key in SIDE_BY_SIDE:
    flat.pop(key, None)
  opt = config.optimizer
  flat["optimizer.weight_decay != 0"] = opt.get("weight_decay", 0.0) != 0.0
  flat["optimizer.clip_norm != 0"] = opt.get("clip_norm", 0.0) != 0.0
  return json.dumps(flat, sort_keys=True, default=str)


def check_side_by_side(configs: list[ml_collections.ConfigDict]) -> None:
  """Raises ConfigError naming the fields that keep these runs from one vmapped program."""
  first = side_by_side_key(configs[0])
  for other in configs[1:]:
    if side_by_side_key(other) != first:
      fields = [
        k for k in config_differences(to_dict(configs[0]), to_dict(other)) if k not in SIDE_BY_SIDE
      ] or ["optimizer.weight_decay or clip_norm (zero in one run, not in another)"]
      raise ConfigError(
        f"runs differ in {', '.join(fields)}; only {', '.join(SIDE_BY_SIDE)} may differ "
        f"between runs trained side by side"
      )
