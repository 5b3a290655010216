"""Bad input to every script, and the judge of what a user sees when they give it.

The project's rule: bad input ends with exactly one line on stderr starting with `error: ` that
names the problem and the fix, exit status 1, and nothing created, changed or removed. Each
`BadInput` is one such mistake against one script in scripts/ (a flag's value, a missing or
corrupt file, the wrong kind of run, a path that is a directory or a file); `run_case` runs it
as a subprocess and checks all three. Every output path and workdir lies under the case's own
temporary directory (`{tmp}`) or is the shared trained run (`{run}`, never to be changed), so
nothing is ever written into the repository. `scripts/fault_campaign.py` runs them all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@dataclasses.dataclass(frozen=True)
class BadInput:
  """One mistake: the command (paths may hold `{tmp}` and `{run}`), and the files it needs."""

  name: str  # short and unique: "<script>: <mistake>"
  argv: tuple[str, ...]  # script path relative to the repository, then its flags
  setup: Callable[[str], None] | None = None  # prepares files in the case's tmp dir
  needs_run: bool = False  # needs a small finished training run at {run}


@dataclasses.dataclass
class CaseResult:
  name: str
  ok: bool
  exit_code: int | None  # None: killed at the timeout
  stderr_lines: list[str]  # the non-empty ones
  changed: list[str]  # "created|removed|modified: path"
  seconds: float
  why: str  # empty when ok


# ----------------------------------------------------------------------------------------------
# Setups: each returns a function of the case's tmp dir.


def _text(rel: str, content: str) -> Callable[[str], None]:
  def setup(tmp: str) -> None:
    path = os.path.join(tmp, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(content)

  return setup


def _dir(rel: str) -> Callable[[str], None]:
  return lambda tmp: os.makedirs(os.path.join(tmp, rel), exist_ok=True)


def _npz(rel: str, make: Callable[[np.random.Generator], dict[str, np.ndarray]], npy: bool = False):
  def setup(tmp: str) -> None:
    arrays = make(np.random.default_rng(0))
    path = os.path.join(tmp, rel)
    if npy:
      np.save(path, arrays["x"])
    else:
      np.savez(path, **arrays)

  return setup


def _classes(n: int, shape: tuple[int, ...] = (40,), labels: int | None = None, **replace):
  """A small classification set ([n, *shape] inputs, 10 classes), with arrays replaced."""

  def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {
      "x": rng.normal(size=(n, *shape)).astype(np.float32),
      "y": rng.integers(0, 10, labels if labels is not None else n),
      "x_test": rng.normal(size=(n // 4, *shape)).astype(np.float32),
      "y_test": rng.integers(0, 10, n // 4),
    }
    arrays.update({k: v(arrays) if callable(v) else v for k, v in replace.items()})
    return {k: v for k, v in arrays.items() if v is not None}

  return make


def _fake_run(rel: str, spec: str, readonly: bool = False) -> Callable[[str], None]:
  """A workdir holding only the config.json of `spec`: enough for every check that must come
  before a checkpoint is read (the run's kind, where outputs go)."""

  def setup(tmp: str) -> None:
    from research.config import load_config, save_config

    workdir = os.path.join(tmp, rel)
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    save_config(load_config(os.path.join(REPO, spec)), os.path.join(workdir, "config.json"))
    if readonly:
      _chmod_tree(workdir, writable=False)

  return setup


def _readonly(rel: str) -> Callable[[str], None]:
  def setup(tmp: str) -> None:
    os.makedirs(os.path.join(tmp, rel), exist_ok=True)
    _chmod_tree(os.path.join(tmp, rel), writable=False)

  return setup


def _all(*setups: Callable[[str], None]) -> Callable[[str], None]:
  def setup(tmp: str) -> None:
    for s in setups:
      s(tmp)

  return setup


def _chmod_tree(root: str, writable: bool) -> None:
  for directory, dirs, files in os.walk(root, topdown=False):
    for name in files + dirs + [""]:
      path = os.path.join(directory, name) if name else directory
      if os.path.islink(path):
        continue
      mode = os.lstat(path).st_mode
      os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~0o222))
  if writable:  # the walk above lists a read-only tree's entries only once it may be read
    for directory, dirs, _ in os.walk(root):
      for d in dirs:
        os.chmod(os.path.join(directory, d), os.lstat(os.path.join(directory, d)).st_mode | 0o700)


# ----------------------------------------------------------------------------------------------
# The cases. One constructor per script puts every output and workdir under {tmp}.

_CFG = "{tmp}/cfg.py"
_CNN, _GRU, _MLP = (f"experiments/mnist1d_{m}.py" for m in ("cnn", "gru", "mlp"))
_LM = "experiments/lm_markov_tiny.py"
_QUICK_BENCH = ("--no-loadgen", "--precisions", "float32", "--engines", "jax", "--max-batch", "4")


def _case(name: str, script: str, *flags: str, setup=None) -> BadInput:
  """`<script>: <name>`; it needs the shared run when a flag names `{run}`."""
  needs_run = any("{run}" in f for f in flags)
  return BadInput(f"{script.removesuffix('.py')}: {name}", (f"scripts/{script}", *flags), setup,
                  needs_run)  # fmt: skip


def _train(name: str, *flags: str, setup=None, config: str = _CNN) -> BadInput:
  flags = ("--config", config, "--workdir", "{tmp}/w", "--no-progress", *flags)
  return _case(name, "train.py", *flags, setup=setup)


def _npz_train(name: str, make) -> BadInput:
  flags = ("--config.data.name=npz", "--config.data.path={tmp}/d.npz")
  return _train(name, *flags, setup=_npz("d.npz", make))


def _merge(base: tuple[str, ...], flags: tuple[str, ...]) -> tuple[str, ...]:
  """`base` (`--flag value` pairs) without the flags that `flags` gives again, then `flags`."""
  given = {f for f in flags if f.startswith("--")}
  return (*(x for i in range(0, len(base), 2) if base[i] not in given for x in base[i:i + 2]),
          *flags)  # fmt: skip


def _infer(name: str, *flags: str, setup=None, inputs: str = "x.npy"):
  base = ("--workdir", "{run}", "--input", f"{{tmp}}/{inputs}", "--output", "{tmp}/p.npy")
  setups = _all(_npz("x.npy", _classes(8), npy=True), *([setup] if setup else []))
  return _case(name, "infer.py", *_merge(base, flags), setup=setups)


def _bench(name: str, *flags: str, setup=None, out: bool = True) -> BadInput:
  base = ("--workdir", "{run}", *(("--out", "{tmp}/bench") if out else ()))
  return _case(name, "bench_inference.py", *_QUICK_BENCH, *_merge(base, flags), setup=setup)


def _tvi(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--workdir", "{tmp}/w", "--out", "{tmp}/out", "--no-progress")
  return _case(name, "train_vs_infer.py", *_merge(base, flags), setup=setup)


def _lm(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--workdir", "{tmp}/lm", "--out", "{tmp}/o")
  setups = _all(_fake_run("lm", _LM), *([setup] if setup else []))
  return _case(name, "lm_costs.py", *_merge(base, flags), setup=setups)


def _export(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--workdir", "{run}", "--format", "onnx", "--out", "{tmp}/m.onnx")
  return _case(name, "export.py", *_merge(base, flags), setup=setup)


def _table(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--workdir", "{tmp}/c", "--out", "{tmp}/t")
  return _case(name, "reproduce_mnist1d.py", *_merge(base, flags), setup=setup)


def _sweep(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--sweep", "seed=0,1", "--workdir", "{tmp}/s")
  return _case(name, "sweep.py", *_merge(base, flags), setup=setup)


def _profile(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--workdir", "{run}", "--out", "{tmp}/p")
  return _case(name, "profile_batch1.py", *_merge(base, flags), setup=setup)


_RAISES = "def get_config(variant=''):\n  raise AttributeError('no such field')\n"
_VARIANT_RAISES = ("from research.config import base_config\n\ndef get_config(variant=''):\n"
                   "  if variant == 'wide':\n    raise RuntimeError('wide is not built yet')\n"
                   "  return base_config()\n")  # fmt: skip
_REPORT = {"break_even_predictions": {}, "flops": {}, "time": {}, "utilization": {}}
_FULL_REPORT = json.dumps({**_REPORT, "experiment": "x", "model": "m", "params": 1})
_BENCH = json.dumps({"records": []})
_SUMMARY = json.dumps({"experiment": "x", "model": "cnn1d", "params": 1, "steps": 1})
_FILE = _text("f", "keep me")
_LM_RUN = _fake_run("lm", _LM)
_NAN = lambda a: np.where(a["x"] > 2, np.nan, a["x"])  # noqa: E731
_READ_ONLY_RUN = _fake_run("ro", _CNN, readonly=True)
_RUN_CONFIG = "experiments/mnist1d_logistic.py"  # the shared run's (make_trained_run)
_RUN_FLAGS = ("num_steps=200", "log_every=100", "eval_every=100", "checkpoint_every=200")
_SHORT = ("--config.num_steps=20", "--config.log_every=10", "--config.eval_every=10",
          "--config.checkpoint_every=10")  # fmt: skip

# fmt: off
CASES: list[BadInput] = [
  # train.py: the config file
  _train("get_config raises", setup=_text("cfg.py", _RAISES), config=_CFG),
  _train("variant raises", setup=_text("cfg.py", _VARIANT_RAISES), config=_CFG + ":wide"),
  _train("config file missing", config="{tmp}/nope.py"),
  _train("config syntax error", setup=_text("cfg.py", "def get_config(:\n"), config=_CFG),
  _train("config without get_config", setup=_text("cfg.py", "X = 1\n"), config=_CFG),
  _train("get_config returns a dict", setup=_text("cfg.py", "def get_config():\n  return {}\n"),
         config=_CFG),
  _train("config not a .py file", setup=_text("cfg.txt", "x"), config="{tmp}/cfg.txt"),
  _train("config import fails", setup=_text("cfg.py", "import no_such_module\n"), config=_CFG),
  _train("unknown variant", config=_CNN + ":nope"),
  _train("config is a directory", setup=_dir("cfgdir"), config="{tmp}/cfgdir"),
  # train.py: config values
  _train("batch_size larger than the training set", "--config.batch_size=100000"),
  _train("batch_size 0", "--config.batch_size=0"),
  _train("batch_size negative", "--config.batch_size=-5"),
  _train("batch_size not an integer", "--config.batch_size=abc"),
  _train("optimizer rmsprop", "--config.optimizer.name=rmsprop"),
  _train("learning rate negative", "--config.optimizer.learning_rate=-1"),
  _train("learning rate not a number", "--config.optimizer.learning_rate=fast"),
  _train("unknown schedule", "--config.optimizer.schedule=step"),
  _train("end_factor above 1", "--config.optimizer.end_factor=2"),
  _train("warmup negative", "--config.optimizer.warmup_steps=-1"),
  _train("model.channels 0", "--config.model.channels=0"),
  _train("model.channels negative", "--config.model.channels=-3"),
  _train("gru hidden 0", "--config.model.hidden=0", config=_GRU),
  _train("mlp hidden negative", "--config.model.hidden=-100", config=_MLP),
  _train("lm n_layer 0", "--config.model.n_layer=0", config=_LM),
  _train("lm n_head 0", "--config.model.n_head=0", config=_LM),
  _train("lm d_model not a multiple of n_head", "--config.model.d_model=65", config=_LM),
  _train("lm model.n_ctx 0", "--config.model.n_ctx=0", config=_LM),
  _train("lm data.n_ctx above model.n_ctx", "--config.data.n_ctx=256", config=_LM),
  _train("lm vocab_size 0", "--config.data.vocab_size=0", config=_LM),
  _train("lm val_fraction 1.5", "--config.data.val_fraction=1.5", config=_LM),
  _train("lm text file missing", "--config.data.name=text", "--config.data.path={tmp}/no.txt",
         config=_LM),
  _train("data.seed -1", "--config.data.seed=-1"),
  _train("data.seed above 2**32", "--config.data.seed=10000000000"),
  _train("seed -1", "--config.seed=-1"),
  _train("num_steps 0", "--config.num_steps=0"),
  _train("keep_checkpoints 0", "--config.keep_checkpoints=0"),
  _train("eval_every not a multiple of log_every", "--config.eval_every=333"),
  _train("checkpoint_every not a multiple of eval_every", "--config.checkpoint_every=300"),
  _train("num_devices negative", "--config.num_devices=-1"),
  _train("num_devices beyond the machine", "--config.num_devices=64"),
  _train("profile window backwards", "--config.profile_steps=50:10"),
  _train("validation_size negative", "--config.data.validation_size=-1"),
  _train("validation_size the whole training set", "--config.data.validation_size=4000"),
  _train("unknown model", "--config.model.name=resnet"),
  _train("unknown model field", "--config.model.width=3"),
  _train("unknown model dtype", "--config.model.dtype=float64"),
  _train("cnn1d on 8x8 images", "--config.data.name=digits", *_SHORT),
  _train("unknown data source", "--config.data.name=cifar"),
  # train.py: flags
  _train("unknown config group", "--config.optimiser.name=adam"),
  _train("unknown config key", "--config.batchsize=10"),
  _train("override of a whole group", "--config.model=cnn"),
  _train("override without a value", "--config.batch_size"),
  _train("unknown flag", "--epochs", "3"),
  _train("threads 4", "--threads", "4"),
  # train.py: data files
  _train("npz path empty", "--config.data.name=npz"),
  _train("npz missing", "--config.data.name=npz", "--config.data.path={tmp}/none.npz"),
  _train("npz not a zip", "--config.data.name=npz", "--config.data.path={tmp}/d.npz",
         setup=_text("d.npz", "x,y\n1,2\n")),
  _npz_train("npz without y_test", _classes(200, y_test=None)),
  _npz_train("npz 3-D x for cnn1d", _classes(200, (40, 2))),
  _npz_train("npz labels shorter than inputs", _classes(200, labels=150)),
  _npz_train("npz inputs with NaN", _classes(200, x=_NAN)),
  _npz_train("npz negative labels", _classes(200, y=lambda a: a["y"] - 20)),
  _npz_train("npz train and test shapes differ", _classes(200, x_test=np.zeros((50, 39)))),
  # train.py: workdirs
  _train("workdir is a file", "--workdir", "{tmp}/f", setup=_FILE),
  _train("workdir under a file", "--workdir", "{tmp}/f/w", setup=_FILE),
  _train("workdir read-only", "--workdir", "{tmp}/ro", *_SHORT, setup=_readonly("ro")),
  # sweep.py
  _case("no --sweep", "sweep.py", "--workdir", "{tmp}/s"),
  _sweep("malformed --sweep", "--sweep", "seed"),
  _sweep("unknown key", "--sweep", "optimiser.lr=1,2"),
  _sweep("value of the wrong type", "--sweep", "batch_size=a,b"),
  _sweep("optimizer rmsprop", "--sweep", "optimizer.name=adam,rmsprop"),
  _sweep("workers -1", "--workers", "-1"),
  _sweep("workers 99", "--workers", "99"),
  _sweep("workdir is a file", "--workdir", "{tmp}/f", setup=_FILE),
  _sweep("--out is a directory", "--out", "{tmp}/o/", setup=_dir("o")),
  _case("missing --workdir", "sweep.py", "--sweep", "seed=0,1"),
  # infer.py
  _infer("checkpoint last", "--checkpoint", "last"),
  _infer("checkpoint at a step that was never saved", "--checkpoint", "12345"),
  _infer("checkpoint best without validation", "--checkpoint", "best"),
  _infer("output is a directory", "--output", "{tmp}/out.npy", setup=_dir("out.npy")),
  _infer("output of an unknown type", "--output", "{tmp}/p.txt"),
  _infer("output directory missing", "--output", "{tmp}/no/p.npy"),
  _infer("language-model run", "--workdir", "{tmp}/lm", setup=_LM_RUN),
  _infer("labels do not match the inputs", inputs="l.npz",
         setup=_npz("l.npz", lambda r: {"x": r.normal(size=(8, 40)), "y": np.zeros(5, int)})),
  _infer("npz that is not a zip", inputs="t.npz", setup=_text("t.npz", "1,2,3\n")),
  _infer("input missing", inputs="none.npy"),
  _infer("input of an unknown type", inputs="x.txt", setup=_text("x.txt", "1 2 3")),
  _infer("input of the wrong shape", inputs="w.npy", setup=_npz("w.npy", _classes(8, (39,)), True)),
  _infer("input with NaN", inputs="n.npy",
         setup=_npz("n.npy", _classes(8, x=np.full((8, 40), np.nan)), True)),
  _infer("input of strings", inputs="s.npy",
         setup=_npz("s.npy", _classes(8, x=np.array([["a"] * 40] * 8)), True)),
  _infer("npz without the key", "--key", "features", inputs="k.npz",
         setup=_npz("k.npz", _classes(8))),
  _infer("csv with a ragged row", inputs="r.csv", setup=_text("r.csv", "1,2,3\n4,5\n")),
  _infer("precision fp8", "--precision", "fp8"),
  _infer("batch size 0", "--batch-size", "0"),
  _infer("workdir without a run", "--workdir", "{tmp}/empty", setup=_dir("empty")),
  _infer("workdir missing", "--workdir", "{tmp}/none"),
  _infer("corrupt config.json", "--workdir", "{tmp}/c", setup=_text("c/config.json", "{oops")),
  _infer("config.json not an object", "--workdir", "{tmp}/c",
         setup=_text("c/config.json", "[1, 2]")),
  _case("missing --output", "infer.py", "--workdir", "{run}", "--input", "{tmp}/x.npy"),
  # export.py
  _export("out is a directory", "--out", "{tmp}"),
  _export("format pdf", "--format", "pdf"),
  _export("checkpoint last", "--checkpoint", "last"),
  _export("checkpoint never saved", "--format", "stablehlo", "--checkpoint", "7"),
  _export("out under a file", "--out", "{tmp}/f/m.onnx", setup=_FILE),
  _export("workdir missing", "--workdir", "{tmp}/none"),
  # export_dataset.py
  _case("out is an existing file", "export_dataset.py", "--out", "{tmp}/f", setup=_FILE),
  _case("out is a directory", "export_dataset.py", "--out", "{tmp}/d", setup=_dir("d")),
  _case("out under a file", "export_dataset.py", "--out", "{tmp}/f/d.npz", setup=_FILE),
  _case("language-model config", "export_dataset.py", "--config", _LM, "--out", "{tmp}/d.npz"),
  _case("unknown config key", "export_dataset.py", "--config.data.nmae=x", "--out", "{tmp}/d.npz"),
  _case("missing --out", "export_dataset.py"),
  # bench_inference.py
  _bench("out is an existing file", "--out", "{tmp}/f", setup=_FILE),
  _bench("read-only workdir", "--workdir", "{tmp}/ro", setup=_READ_ONLY_RUN, out=False),
  _bench("read-only workdir with --profile", "--workdir", "{tmp}/ro", "--profile",
         setup=_READ_ONLY_RUN),
  _bench("max batch 0", "--max-batch", "0"),
  _bench("latency calls negative", "--latency-calls", "-1"),
  _bench("latency bound 0 ms", "--latency-bound-ms", "0"),
  _bench("loadgen duration not a number", "--loadgen-ms", "abc"),
  _bench("unknown engine", "--engines", "tensorrt"),
  _bench("unknown precision", "--precisions", "fp8"),
  _bench("backend tpu", "--backends", "tpu"),
  _bench("peer onnx missing", "--peer-onnx", "{tmp}/peer.onnx"),
  _bench("checkpoint last", "--checkpoint", "last"),
  _bench("language-model run", "--workdir", "{tmp}/lm", setup=_LM_RUN),
  _bench("workdir missing", "--workdir", "{tmp}/none"),
  # train_vs_infer.py
  _tvi("max batch 0", "--max-batch", "0"),
  _tvi("latency calls 0", "--latency-calls", "0"),
  _tvi("power negative", "--power-watts", "-5"),
  _tvi("price negative", "--price-per-hour", "-1"),
  _tvi("unknown hardware profile", "--profiles", "abacus"),
  _tvi("unknown engine", "--engines", "tensorrt"),
  _tvi("language-model config", "--config", _LM),
  _tvi("out is an existing file", "--out", "{tmp}/f", setup=_FILE),
  _tvi("optimizer rmsprop", "--config.optimizer.name=rmsprop"),
  # lm_costs.py
  _case("classifier run", "lm_costs.py", "--workdir", "{run}", "--out", "{tmp}/lm"),
  _lm("new tokens 1", "--new-tokens", "1"),
  _lm("batch sizes not integers", "--batch-sizes", "1,x"),
  _lm("batch size 0", "--batch-sizes", "0,8"),
  _lm("workdir missing", "--workdir", "{tmp}/none"),
  _lm("out is an existing file", "--out", "{tmp}/f", setup=_FILE),
  # compare_runs.py
  _case("directory without summary", "compare_runs.py", "{tmp}/e", setup=_dir("e")),
  _case("path missing", "compare_runs.py", "{tmp}/none"),
  _case("out is a directory", "compare_runs.py", "{tmp}/r", "--out", "{tmp}/o",
        setup=_all(_text("r/summary.json", _SUMMARY), _dir("o"))),
  _case("format xml", "compare_runs.py", "{tmp}/r", "--format", "xml"),
  _case("corrupt summary.json", "compare_runs.py", "{tmp}/r",
        setup=_text("r/summary.json", '{"steps": ')),
  # replot.py
  _case("file missing", "replot.py", "{tmp}/report.json"),
  _case("not JSON", "replot.py", "{tmp}/report.json", setup=_text("report.json", "<html>")),
  _case("JSON of another kind", "replot.py", "{tmp}/x.json", setup=_text("x.json", "[1, 2]")),
  _case("report without its fields", "replot.py", "{tmp}/report.json",
        setup=_text("report.json", json.dumps(_REPORT))),
  _case("bench without latency samples", "replot.py", "{tmp}/bench.json",
        setup=_text("bench.json", _BENCH)),
  _case("latency samples corrupt", "replot.py", "{tmp}/bench.json",
        setup=_all(_text("bench.json", _BENCH), _text("latency_samples.json", "{}"))),
  _case("out is an existing file", "replot.py", "{tmp}/report.json", "--out", "{tmp}/f",
        setup=_all(_text("report.json", _FULL_REPORT), _FILE)),
  # bench_train_loop.py
  _case("steps 0", "bench_train_loop.py", "--steps", "0"),
  _case("repeats 0", "bench_train_loop.py", "--repeats", "0"),
  _case("chunks not dividing the steps", "bench_train_loop.py", "--steps", "100", "--chunks", "7"),
  _case("chunks not integers", "bench_train_loop.py", "--chunks", "a,b"),
  _case("unknown structure", "bench_train_loop.py", "--structures", "warp"),
  _case("model without sequence input", "bench_train_loop.py", "--model", "transformer"),
  _case("unknown model", "bench_train_loop.py", "--model", "resnet"),
  _case("unknown conv impl", "bench_train_loop.py", "--impls", "winograd", "--steps", "10",
        "--chunks", "10", "--repeats", "1"),
  _case("out is a directory", "bench_train_loop.py", "--out", "{tmp}", "--steps", "10",
        "--chunks", "10"),
  _case("threads 3", "bench_train_loop.py", "--threads", "3"),
  # profile_batch1.py
  _profile("blocks 0", "--blocks", "0"),
  _profile("out is a directory", "--out", "{tmp}"),
  _profile("peer onnx missing", "--peer-onnx", "{tmp}/peer.onnx"),
  _profile("language-model run", "--workdir", "{tmp}/lm", setup=_LM_RUN),
  _profile("workdir missing", "--workdir", "{tmp}/none"),
  # reproduce_mnist1d.py
  _table("workers 0", "--workers", "0"),
  _table("workers 99", "--workers", "99"),
  _table("seeds 0", "--config.seeds=0"),
  _table("unknown model", "--config.models=('resnet',)"),
  _table("num_steps not a multiple of eval_every", "--config.num_steps=1001"),
  _table("out is a directory", "--out", "{tmp}/o", setup=_dir("o")),
  _table("workdir is a file", "--workdir", "{tmp}/f", setup=_FILE),
  # the PyTorch peers (without torch installed, saying so is the one line)
  _case("unknown model", "bench_vs_torch.py", "--models", "resnet", "--out", "{tmp}/s"),
  _case("repeats 0", "bench_vs_torch.py", "--repeats", "0", "--out", "{tmp}/s"),
  _case("steps 0", "bench_torch_reference.py", "--steps", "0", "--out", "{tmp}/t.json"),
  _case("unknown model", "bench_torch_reference.py", "--models", "resnet", "--out", "{tmp}/t.json"),
  # last: should the refusal ever fail, this one would change the shared run
  _case("resume a finished run with another config", "train.py", "--config", _RUN_CONFIG,
        "--workdir", "{run}", "--no-progress", "--config.batch_size=50",
        *(f"--config.{f}" for f in _RUN_FLAGS)),
]
# fmt: on


# ----------------------------------------------------------------------------------------------
# Running and judging.


def make_trained_run(directory: str) -> str:
  """Trains one tiny run (MNIST-1D logistic regression, 200 steps: seconds, mostly making the data
  and compiling) into `directory`/run, once: a finished run already there is reused. Returns its
  workdir. The cases only need a finished classifier with a checkpoint, not a good one."""
  workdir = os.path.join(directory, "run")
  if os.path.isfile(os.path.join(workdir, "summary.json")):
    return workdir
  command = [sys.executable, "scripts/train.py", "--config", _RUN_CONFIG]
  command += ["--workdir", workdir, "--no-progress", *(f"--config.{f}" for f in _RUN_FLAGS)]
  done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
  if done.returncode != 0:
    raise RuntimeError(f"training the shared run failed: {done.stderr.strip()[-2000:]}")
  return workdir


def run_case(case: BadInput, tmp_root: str, run: str | None, timeout: float = 120) -> CaseResult:
  """Runs `case` in a fresh directory under `tmp_root` and judges it: exit status 1, exactly one
  non-empty stderr line starting with `error: `, and no file under the case's directory or the
  shared run created, removed or modified. The case's directory is removed afterwards."""
  t = time.perf_counter()
  slug = re.sub(r"[^A-Za-z0-9]+", "-", case.name).strip("-")[:40]
  tmp = tempfile.mkdtemp(prefix=f"{slug}-", dir=tmp_root)
  try:
    if case.needs_run and not run:
      return CaseResult(case.name, False, None, [], [], 0.0, "needs a trained run; none given")
    if case.setup is not None:
      case.setup(tmp)
    argv = [a.replace("{tmp}", tmp).replace("{run}", run or "") for a in case.argv]
    roots = [tmp] + ([run] if run else [])
    before = {root: _snapshot(root) for root in roots}
    code, stderr = _run(argv, timeout)
    changed = [c for root in roots for c in _changes(before[root], _snapshot(root))]
  finally:
    _chmod_tree(tmp, writable=True)
    shutil.rmtree(tmp, ignore_errors=True)
  lines = [line for line in stderr.splitlines() if line.strip()]
  why = []
  if code != 1:
    why.append("timed out" if code is None else f"exit status {code}, not 1")
  if len(lines) != 1 or not lines[0].startswith("error: "):
    last = lines[-1][:160] if lines else "nothing"
    why.append(f"{len(lines)} stderr line(s), not one `error:` line (last: {last})")
  if changed:
    why.append(f"{len(changed)} change(s) left behind: {', '.join(changed[:3])}")
  seconds = time.perf_counter() - t
  return CaseResult(case.name, not why, code, lines, changed, seconds, "; ".join(why))


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + ONE_THREAD).strip()
  env["PYTHONDONTWRITEBYTECODE"] = "1"  # a config file imported from {tmp} leaves no __pycache__
  return env


def _run(argv: list[str], timeout: float) -> tuple[int | None, str]:
  """(exit status or None at the timeout, stderr). The script runs in its own session, so a
  timeout ends it and every process it started."""
  process = subprocess.Popen(
    [sys.executable, *argv],
    cwd=REPO,
    env=_env(),
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )
  try:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    return None, stderr


def _snapshot(root: str) -> dict[str, tuple]:
  """path -> ("dir",) or ("file", size, mtime_ns, sha256) for everything under `root`."""
  found: dict[str, tuple] = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs:
      found[os.path.join(directory, name)] = ("dir",)
    for name in files:
      path = os.path.join(directory, name)
      try:
        info = os.lstat(path)
        digest = hashlib.sha256()
        if stat.S_ISREG(info.st_mode):
          with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
              digest.update(block)
        found[path] = ("file", info.st_size, info.st_mtime_ns, digest.hexdigest())
      except OSError:  # unreadable or gone: record that much
        found[path] = ("file", None, None, None)
  return found


def _changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
  out = [f"created: {p}" for p in sorted(set(after) - set(before))]
  out += [f"removed: {p}" for p in sorted(set(before) - set(after))]
  out += [f"modified: {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
  return out
