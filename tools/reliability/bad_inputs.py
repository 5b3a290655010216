"""Bad input to every script: the catalog of cases. The project's
rule: bad input ends with exactly one line on stderr starting with `error: ` that names the
problem and the fix, exit status 1, and nothing created, changed or removed. Each `BadInput` is
one such mistake against one script in scripts/ (a flag's value, a missing or corrupt file, the
wrong kind of run, a path that is a directory or a file); `run_case`
(tools/reliability/judge.py) runs it, as a subprocess or inside a test process
(tools/reliability/in_process.py), and checks all three. Every output path
and workdir lies under the case's own temporary directory (`{tmp}`) or is the shared trained run
(`{run}`, never to be changed), so nothing is ever written into the repository.
`scripts/fault_campaign.py` runs them all.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tools.reliability import case_files as files
from tools.reliability.judge import (  # noqa: F401 (the runner is part of this interface)
  REPO,
  RUN_CONFIG,
  RUN_FLAGS,
  BadInput,
  CaseResult,
  chmod_tree,
  make_trained_run,
  run_case,
  run_subprocess,
)

_CFG = "{tmp}/cfg.py"
_CNN, _GRU, _MLP = (f"experiments/mnist1d_{m}.py" for m in ("cnn", "gru", "mlp"))
_LM = "experiments/lm_markov_tiny.py"
_QUICK_BENCH = ("--no-loadgen", "--precisions", "float32", "--engines", "jax", "--max-batch", "4")


def _case(name: str, script: str, *flags: str, setup=None, **more) -> BadInput:
  """`<script>: <name>`; it needs the shared run when a flag names `{run}` or it copies the run.
  `more`: BadInput's env, copy_run and expect."""
  needs_run = any("{run}" in f for f in flags) or bool(more.get("copy_run"))
  return BadInput(f"{script.removesuffix('.py')}: {name}", (f"scripts/{script}", *flags), setup,
                  needs_run, **more)  # fmt: skip


def _train(name: str, *flags: str, setup=None, config: str = _CNN, **more) -> BadInput:
  flags = ("--config", config, "--workdir", "{tmp}/w", "--no-progress", *flags)
  return _case(name, "train.py", *flags, setup=setup, **more)


def _resume(name: str, *flags: str, env: tuple[tuple[str, str], ...] = (), expect: str) -> BadInput:
  """A copy of the shared run (stopped at step 200) resumed to step 400 under another numeric
  environment: refused, as a resume that would silently stop being bitwise."""
  flags = ("--config", RUN_CONFIG, "--workdir", "{tmp}/r", "--no-progress",
           *(f"--config.{f}" for f in RUN_FLAGS), "--config.num_steps=400", *flags)  # fmt: skip
  return _case(name, "train.py", *flags, env=env, copy_run="r", expect=expect)


def _npz_train(name: str, make) -> BadInput:
  flags = ("--config.data.name=npz", "--config.data.path={tmp}/d.npz")
  return _train(name, *flags, setup=files.npz("d.npz", make))


def _merge(base: tuple[str, ...], flags: tuple[str, ...]) -> tuple[str, ...]:
  """`base` (`--flag value` pairs) without the flags that `flags` gives again, then `flags`."""
  given = {f for f in flags if f.startswith("--")}
  return (*(x for i in range(0, len(base), 2) if base[i] not in given for x in base[i:i + 2]),
          *flags)  # fmt: skip


def _infer(name: str, *flags: str, setup=None, inputs: str = "x.npy"):
  base = ("--workdir", "{run}", "--input", f"{{tmp}}/{inputs}", "--output", "{tmp}/p.npy")
  setups = files.all_of(files.npz("x.npy", files.classes(8), npy=True), *([setup] if setup else []))
  return _case(name, "infer.py", *_merge(base, flags), setup=setups)


def _bench(name: str, *flags: str, setup=None, out: bool = True) -> BadInput:
  base = ("--workdir", "{run}", *(("--out", "{tmp}/bench") if out else ()))
  return _case(name, "bench_inference.py", *_QUICK_BENCH, *_merge(base, flags), setup=setup)


def _tvi(name: str, *flags: str, setup=None, **more) -> BadInput:
  base = ("--workdir", "{tmp}/w", "--out", "{tmp}/out", "--no-progress")
  return _case(name, "train_vs_infer.py", *_merge(base, flags), setup=setup, **more)


def _lm(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--workdir", "{tmp}/lm", "--out", "{tmp}/o")
  setups = files.all_of(files.fake_run("lm", _LM), *([setup] if setup else []))
  return _case(name, "lm_costs.py", *_merge(base, flags), setup=setups)


def _serve(name: str, *flags: str, setup=None, **more) -> BadInput:
  base = ("--workdir", "{tmp}/lm", "--out", "{tmp}/o", "--quick")
  setups = files.all_of(files.fake_run("lm", _LM), *([setup] if setup else []))
  return _case(name, "serve_lm.py", *_merge(base, flags), setup=setups, **more)


def _scaling(name: str, *flags: str, setup=None, **more) -> BadInput:
  base = ("--preset", "tiny", "--workdir", "{tmp}/w", "--out", "{tmp}/o")
  return _case(name, "scaling.py", *_merge(base, flags), setup=setup, **more)


def _export(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--workdir", "{run}", "--format", "onnx", "--out", "{tmp}/m.onnx")
  return _case(name, "export.py", *_merge(base, flags), setup=setup)


def _edge(name: str, *flags: str, setup=None) -> BadInput:
  base = ("--workdir", "{run}", "--out", "{tmp}/edge", "--runtime-wheel", "{tmp}")
  return _case(name, "edge.py", *_merge(base, flags), setup=setup)


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
_FILE = files.text("f", "keep me")
_LM_RUN = files.fake_run("lm", _LM)
_NAN = lambda a: np.where(a["x"] > 2, np.nan, a["x"])  # noqa: E731
_READ_ONLY_RUN = files.fake_run("ro", _CNN, readonly=True)
_HAS_GPU = os.path.exists("/dev/nvidiactl")  # where JAX_PLATFORMS=cuda is no mistake
_ONE_CORE = len(os.sched_getaffinity(0)) < 2  # where --threads 0 runs one thread, as 1 does
_OTHER_RUN = files.fake_run("r", _CNN)  # a run directory an output must not land on
_SHORT = ("--config.num_steps=20", "--config.log_every=10", "--config.eval_every=10",
          "--config.checkpoint_every=10")  # fmt: skip

# fmt: off
CASES: list[BadInput] = [
  # train.py: the config file
  _train("get_config raises", setup=files.text("cfg.py", _RAISES), config=_CFG),
  _train("variant raises", setup=files.text("cfg.py", _VARIANT_RAISES), config=_CFG + ":wide"),
  _train("config file missing", config="{tmp}/nope.py"),
  _train("config syntax error", setup=files.text("cfg.py", "def get_config(:\n"), config=_CFG),
  _train("config without get_config", setup=files.text("cfg.py", "X = 1\n"), config=_CFG),
  _train("get_config returns a dict",
         setup=files.text("cfg.py", "def get_config():\n  return {}\n"), config=_CFG),
  _train("config not a .py file", setup=files.text("cfg.txt", "x"), config="{tmp}/cfg.txt"),
  _train("config import fails", setup=files.text("cfg.py", "import no_such_module\n"), config=_CFG),
  _train("unknown variant", config=_CNN + ":nope"),
  _train("config is a directory", setup=files.directory("cfgdir"), config="{tmp}/cfgdir"),
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
  # train.py: numbers the optimizer and the runtime cannot take (issue 24's "also seen")
  _train("num_steps 3e9 with a linear schedule", "--config.num_steps=3e9",
         "--config.optimizer.schedule=linear", expect="num_steps"),
  _train("optimizer.b1 nan", "--config.optimizer.b1=nan", expect="b1"),
  _train("optimizer.b2 1.5", "--config.optimizer.b2=1.5", expect="b2"),
  *([] if _HAS_GPU else [_train("JAX_PLATFORMS=cuda without a GPU", *_SHORT,
                                env=(("JAX_PLATFORMS", "cuda"),), expect="cuda")]),
  # XLA_FLAGS unset: the cases' one-thread flags would keep --threads 0 at one thread, the same
  *([] if _ONE_CORE else [_resume("resume with another --threads", "--threads", "0",
                                  env=(("XLA_FLAGS", ""),), expect="thread")]),
  _resume("resume under JAX_ENABLE_X64=1", env=(("JAX_ENABLE_X64", "1"),), expect="x64"),
  # train.py: data files
  _train("npz path empty", "--config.data.name=npz"),
  _train("npz missing", "--config.data.name=npz", "--config.data.path={tmp}/none.npz"),
  _train("npz not a zip", "--config.data.name=npz", "--config.data.path={tmp}/d.npz",
         setup=files.text("d.npz", "x,y\n1,2\n")),
  _npz_train("npz without y_test", files.classes(200, y_test=None)),
  _npz_train("npz 3-D x for cnn1d", files.classes(200, (40, 2))),
  _npz_train("npz labels shorter than inputs", files.classes(200, labels=150)),
  _npz_train("npz inputs with NaN", files.classes(200, x=_NAN)),
  _npz_train("npz negative labels", files.classes(200, y=lambda a: a["y"] - 20)),
  _npz_train("npz train and test shapes differ", files.classes(200, x_test=np.zeros((50, 39)))),
  # train.py: workdirs
  _train("workdir is a file", "--workdir", "{tmp}/f", setup=_FILE),
  _train("workdir under a file", "--workdir", "{tmp}/f/w", setup=_FILE),
  _train("workdir read-only", "--workdir", "{tmp}/ro", *_SHORT, setup=files.readonly("ro")),
  # sweep.py
  _case("no --sweep", "sweep.py", "--workdir", "{tmp}/s"),
  _sweep("malformed --sweep", "--sweep", "seed"),
  _sweep("unknown key", "--sweep", "optimiser.lr=1,2"),
  _sweep("value of the wrong type", "--sweep", "batch_size=a,b"),
  _sweep("optimizer rmsprop", "--sweep", "optimizer.name=adam,rmsprop"),
  _sweep("workers -1", "--workers", "-1"),
  _sweep("workers 99", "--workers", "99"),
  _sweep("workdir is a file", "--workdir", "{tmp}/f", setup=_FILE),
  _sweep("--out is a directory", "--out", "{tmp}/o/", setup=files.directory("o")),
  _sweep("--out onto a run's config.json", "--out", "{tmp}/s/seed=0/config"),
  _case("missing --workdir", "sweep.py", "--sweep", "seed=0,1"),
  # infer.py
  _infer("checkpoint last", "--checkpoint", "last"),
  _infer("checkpoint at a step that was never saved", "--checkpoint", "12345"),
  _infer("checkpoint best without validation", "--checkpoint", "best"),
  _infer("output is a directory", "--output", "{tmp}/out.npy", setup=files.directory("out.npy")),
  _infer("output of an unknown type", "--output", "{tmp}/p.txt"),
  _infer("output directory missing", "--output", "{tmp}/no/p.npy"),
  _infer("language-model run", "--workdir", "{tmp}/lm", setup=_LM_RUN),
  _infer("labels do not match the inputs", inputs="l.npz",
         setup=files.npz("l.npz", lambda r: {"x": r.normal(size=(8, 40)), "y": np.zeros(5, int)})),
  _infer("npz that is not a zip", inputs="t.npz", setup=files.text("t.npz", "1,2,3\n")),
  _infer("input missing", inputs="none.npy"),
  _infer("input of an unknown type", inputs="x.txt", setup=files.text("x.txt", "1 2 3")),
  _infer("input of the wrong shape", inputs="w.npy",
         setup=files.npz("w.npy", files.classes(8, (39,)), True)),
  _infer("input with NaN", inputs="n.npy",
         setup=files.npz("n.npy", files.classes(8, x=np.full((8, 40), np.nan)), True)),
  _infer("input of strings", inputs="s.npy",
         setup=files.npz("s.npy", files.classes(8, x=np.array([["a"] * 40] * 8)), True)),
  _infer("npz without the key", "--key", "features", inputs="k.npz",
         setup=files.npz("k.npz", files.classes(8))),
  _infer("csv with a ragged row", inputs="r.csv", setup=files.text("r.csv", "1,2,3\n4,5\n")),
  _infer("precision fp8", "--precision", "fp8"),
  _infer("batch size 0", "--batch-size", "0"),
  _infer("workdir without a run", "--workdir", "{tmp}/empty", setup=files.directory("empty")),
  _infer("workdir missing", "--workdir", "{tmp}/none"),
  _infer("corrupt config.json", "--workdir", "{tmp}/c", setup=files.text("c/config.json", "{oops")),
  _infer("config.json not an object", "--workdir", "{tmp}/c",
         setup=files.text("c/config.json", "[1, 2]")),
  _case("missing --output", "infer.py", "--workdir", "{run}", "--input", "{tmp}/x.npy"),
  _infer("inputs that overflow the model", inputs="big.npy",
         setup=files.npz("big.npy", files.classes(8, x=np.full((8, 40), 3e38, np.float32)), True)),
  _infer("output is the input", "--output", "{tmp}/x.npy"),
  _infer("output onto a run's summary.json", "--output", "{tmp}/r/summary.json", setup=_OTHER_RUN),
  # export.py
  _export("out is a directory", "--out", "{tmp}"),
  _export("format pdf", "--format", "pdf"),
  _export("checkpoint last", "--checkpoint", "last"),
  _export("checkpoint never saved", "--format", "stablehlo", "--checkpoint", "7"),
  _export("out under a file", "--out", "{tmp}/f/m.onnx", setup=_FILE),
  _export("workdir missing", "--workdir", "{tmp}/none"),
  _export("out onto a run's config.json", "--out", "{tmp}/r/config", setup=_OTHER_RUN),
  _export("out into a run's checkpoints", "--out", "{tmp}/r/checkpoints/m.onnx", setup=_OTHER_RUN),
  _export("iree unknown target", "--format", "iree", "--target", "armv7", "--out", "{tmp}/m.vmfb"),
  _export("iree precision bf16", "--format", "iree", "--precision", "bfloat16"),
  _export("target without iree", "--target", "aarch64"),
  _export("iree on a language model", "--workdir", "{tmp}/lm", "--format", "iree", setup=_LM_RUN),
  # edge.py
  _edge("no aarch64 runtime wheel"),
  _edge("language-model run", "--workdir", "{tmp}/lm", setup=_LM_RUN),
  _edge("out onto the run", "--out", "{run}"),
  _edge("no-emulate with a wheel", "--no-emulate"),
  _edge("negative dispatch batch", "--dispatch-batch", "-4"),
  # export_dataset.py
  _case("out is an existing file", "export_dataset.py", "--out", "{tmp}/f", setup=_FILE),
  _case("out is a directory", "export_dataset.py", "--out", "{tmp}/d", setup=files.directory("d")),
  _case("out under a file", "export_dataset.py", "--out", "{tmp}/f/d.npz", setup=_FILE),
  _case("language-model config", "export_dataset.py", "--config", _LM, "--out", "{tmp}/d.npz"),
  _case("unknown config key", "export_dataset.py", "--config.data.nmae=x", "--out", "{tmp}/d.npz"),
  _case("missing --out", "export_dataset.py"),
  _case("out is the npz it reads", "export_dataset.py", "--config.data.name=npz",
        "--config.data.path={tmp}/d.npz", "--out", "{tmp}/d.npz",
        setup=files.npz("d.npz", files.classes(200))),
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
  _bench("out is another run's bench", "--out", "{tmp}/r/bench", setup=_OTHER_RUN),
  # train_vs_infer.py
  _tvi("max batch 0", "--max-batch", "0"),
  _tvi("latency calls 0", "--latency-calls", "0"),
  _tvi("power negative", "--power-watts", "-5"),
  _tvi("price negative", "--price-per-hour", "-1"),
  _tvi("unknown hardware profile", "--profiles", "abacus"),
  _tvi("unknown engine", "--engines", "tensorrt"),
  _tvi("lm slots for a classifier", "--slots", "4", expect="language model"),
  _tvi("lm decode batches 0", "--config", _LM, "--decode-batches", "1,0", expect="decode"),
  _tvi("lm decode batches not integers", "--config", _LM, "--decode-batches", "1,x"),
  _tvi("lm slots 0", "--config", _LM, "--slots", "0", expect="--slots"),
  _tvi("lm requests 0", "--config", _LM, "--requests", "0", expect="--requests"),
  _tvi("lm engines", "--config", _LM, "--engines", "jax", expect="--engines"),
  _tvi("out is an existing file", "--out", "{tmp}/f", setup=_FILE),
  _tvi("optimizer rmsprop", "--config.optimizer.name=rmsprop"),
  _tvi("out is another run", "--out", "{tmp}/r", setup=_OTHER_RUN),
  # lm_costs.py
  _case("classifier run", "lm_costs.py", "--workdir", "{run}", "--out", "{tmp}/lm"),
  _lm("new tokens 1", "--new-tokens", "1"),
  _lm("batch sizes not integers", "--batch-sizes", "1,x"),
  _lm("batch size 0", "--batch-sizes", "0,8"),
  _lm("workdir missing", "--workdir", "{tmp}/none"),
  _lm("out is an existing file", "--out", "{tmp}/f", setup=_FILE),
  _lm("out is the run itself", "--out", "{tmp}/lm"),
  # scaling.py (each refusal comes before anything trains)
  _scaling("empty grid", "--sizes", ",", expect="the grid is empty"),
  _scaling("size too big for memory", "--sizes", "s0,48x8192", expect="smaller size"),
  _scaling("budget under one batch", "--budgets", "100,1e6", expect="smaller than one batch"),
  _scaling("corpus file not text", "--text", "{tmp}/b.txt",
           setup=files.binary("b.txt", bytes(range(128, 256)) * 8), expect="not valid UTF-8"),
  _scaling("one size only", "--sizes", "s1", expect="at least 2 of each"),
  _scaling("unknown preset", "--preset", "huge", expect="--preset"),
  _scaling("out is an existing file", "--out", "{tmp}/f", setup=_FILE),
  # serve_lm.py (a run holding only its config.json: each refusal comes before any restore)
  _case("classifier run", "serve_lm.py", "--workdir", "{run}", "--out", "{tmp}/o"),
  _serve("prompt plus outputs beyond the context", "--prompt-tokens", "4,100",
         "--output-tokens", "8,64", expect="n_ctx=128"),
  _serve("zero new tokens", "--output-tokens", "0,64", expect="--output-tokens"),
  _serve("outputs varying less than 4x", "--output-tokens", "16,32", expect="4x"),
  _serve("prompt token outside the vocabulary", "--prompts", "{tmp}/p.json",
         setup=files.text("p.json", "[[1, 2, 3], [4, 40]]"), expect="vocabulary"),
  _serve("prompts file not JSON", "--prompts", "{tmp}/p.json",
         setup=files.text("p.json", "1 2 3"), expect="--prompts"),
  _serve("more slots than the memory budget holds", "--slots", "64", "--memory-budget-mb", "1",
         expect="--memory-budget-mb"),
  _serve("out onto the run's checkpoints", "--out", "{tmp}/lm/checkpoints"),
  _serve("out is the run itself", "--out", "{tmp}/lm"),
  _serve("slots 0", "--slots", "0"),
  _serve("unknown bound tier", "--tier", "offline"),
  _case("bounds no load can meet", "serve_lm.py", "--workdir", "{tmp}/t", "--out", "{tmp}/o",
        "--quick", "--ttft-bound-ms", "0.000001", setup=files.trained_lm("t"),
        expect="no load can meet"),
  # compare_runs.py
  _case("directory without summary", "compare_runs.py", "{tmp}/e", setup=files.directory("e")),
  _case("path missing", "compare_runs.py", "{tmp}/none"),
  _case("out is a directory", "compare_runs.py", "{tmp}/r", "--out", "{tmp}/o",
        setup=files.all_of(files.text("r/summary.json", _SUMMARY), files.directory("o"))),
  _case("format xml", "compare_runs.py", "{tmp}/r", "--format", "xml"),
  _case("corrupt summary.json", "compare_runs.py", "{tmp}/r",
        setup=files.text("r/summary.json", '{"steps": ')),
  _case("out onto a run's config.json", "compare_runs.py", "{tmp}/r", "--out", "{tmp}/r/config",
        setup=files.all_of(_OTHER_RUN, files.text("r/summary.json", _SUMMARY))),
  # replot.py
  _case("file missing", "replot.py", "{tmp}/report.json"),
  _case("not JSON", "replot.py", "{tmp}/report.json", setup=files.text("report.json", "<html>")),
  _case("JSON of another kind", "replot.py", "{tmp}/x.json", setup=files.text("x.json", "[1, 2]")),
  _case("report without its fields", "replot.py", "{tmp}/report.json",
        setup=files.text("report.json", json.dumps(_REPORT))),
  _case("bench without latency samples", "replot.py", "{tmp}/bench.json",
        setup=files.text("bench.json", _BENCH)),
  _case("latency samples corrupt", "replot.py", "{tmp}/bench.json",
        setup=files.all_of(files.text("bench.json", _BENCH),
                           files.text("latency_samples.json", "{}"))),
  _case("out is an existing file", "replot.py", "{tmp}/report.json", "--out", "{tmp}/f",
        setup=files.all_of(files.text("report.json", _FULL_REPORT), _FILE)),
  _case("out onto another run's report figure", "replot.py", "{tmp}/report.json", "--out",
        "{tmp}/r", setup=files.all_of(files.text("report.json", _FULL_REPORT), _OTHER_RUN)),
  # bench_decode.py
  _case("batch sizes not integers", "bench_decode.py", "--config", _LM, "--batch-sizes", "a,b"),
  _case("batch size 0", "bench_decode.py", "--config", _LM, "--batch-sizes", "0"),
  _case("one new token", "bench_decode.py", "--config", _LM, "--new-tokens", "1"),
  _case("prompt beyond the context", "bench_decode.py", "--config", _LM, "--prompt-tokens", "999"),
  _case("classifier config", "bench_decode.py", "--config", _CNN),
  _case("out is a directory", "bench_decode.py", "--config", _LM, "--out", "{tmp}"),
  _case("out not json", "bench_decode.py", "--config", _LM, "--out", "{tmp}/decode.txt"),
  _case("figures is a file", "bench_decode.py", "--config", _LM, "--figures", "{tmp}/f",
        setup=_FILE),
  _case("unknown variant", "bench_decode.py", "--config", _LM, "--variant", "BHTD, fast"),
  # bench_lm_peers.py (each refused before torch is needed)
  _case("batch sizes not integers", "bench_lm_peers.py", "--out", "{tmp}/p", "--batch-sizes", "a"),
  _case("batch size 0", "bench_lm_peers.py", "--out", "{tmp}/p", "--batch-sizes", "0,8"),
  _case("one new token", "bench_lm_peers.py", "--out", "{tmp}/p", "--new-tokens", "1"),
  _case("repeats 0", "bench_lm_peers.py", "--out", "{tmp}/p", "--repeats", "0"),
  _case("unknown framework", "bench_lm_peers.py", "--out", "{tmp}/p", "--frameworks", "vllm"),
  _case("without jax", "bench_lm_peers.py", "--out", "{tmp}/p", "--frameworks", "hf,torch"),
  _case("prompt beyond the context", "bench_lm_peers.py", "--out", "{tmp}/p", "--prompt-tokens",
        "999"),
  _case("classifier config", "bench_lm_peers.py", "--out", "{tmp}/p", "--config", _CNN),
  _case("out is a directory", "bench_lm_peers.py", "--out", "{tmp}"),
  _case("out missing", "bench_lm_peers.py"),
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
  _profile("out onto a run's summary.json", "--out", "{tmp}/r/summary", setup=_OTHER_RUN),
  # reproduce_mnist1d.py
  _table("workers 0", "--workers", "0"),
  _table("workers 99", "--workers", "99"),
  _table("seeds 0", "--config.seeds=0"),
  _table("unknown model", "--config.models=('resnet',)"),
  _table("num_steps not a multiple of eval_every", "--config.num_steps=1001"),
  _table("out is a directory", "--out", "{tmp}/o", setup=files.directory("o")),
  _table("workdir is a file", "--workdir", "{tmp}/f", setup=_FILE),
  # the PyTorch peers (without torch installed, saying so is the one line)
  _case("unknown model", "bench_vs_torch.py", "--models", "resnet", "--out", "{tmp}/s"),
  _case("repeats 0", "bench_vs_torch.py", "--repeats", "0", "--out", "{tmp}/s"),
  _case("steps 0", "bench_torch_reference.py", "--steps", "0", "--out", "{tmp}/t.json"),
  _case("unknown model", "bench_torch_reference.py", "--models", "resnet", "--out", "{tmp}/t.json"),
  # last: should the refusal ever fail, this one would change the shared run
  _case("resume a finished run with another config", "train.py", "--config", RUN_CONFIG,
        "--workdir", "{run}", "--no-progress", "--config.batch_size=50",
        *(f"--config.{f}" for f in RUN_FLAGS)),
]
# fmt: on
