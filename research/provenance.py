"""Provenance for everything written to results/: command, commit, machine, versions, threads.

The files themselves are written through research/outputs.py (atomic writers, markdown tables)."""

from __future__ import annotations

import datetime
import platform
import shlex
import subprocess
from typing import Any, Sequence

from research.runtime import thread_settings


def git_commit(root: str | None = None) -> str:
  """Short commit of the checkout at `root`, '+dirty' when code or configs have uncommitted
  changes; 'unknown' outside a git checkout. The default is the working directory: the scripts
  run from the repository's root, and an installed package cannot know where its checkout is."""
  try:
    commit = subprocess.run(
      ["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()
    # Outputs under results/ do not change what made them: only code and configs count as dirty.
    # The pathspecs name the whole checkout (":/"), wherever in it `root` is.
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results"],
      cwd=root,
      capture_output=True,
      text=True,
    ).stdout.strip()
    return commit + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def cpu_model() -> str:
  """The CPU's name and its widest vector instructions, e.g. 'AMD EPYC, AVX-512 with VNNI'.

  The instruction set is part of the name because training numbers differ by kind of CPU: the
  same code, versions and seed end the MNIST-1D CNN at 95.1 % on an AVX-512 EPYC and at 93.0 %
  on an AVX2 one, each bitwise repeatable on its own kind (XLA's `--xla_cpu_max_isa=AVX2` does
  not turn the first into the second, so the difference lies below that flag).
  """
  name, flags = "", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and not name:
          name = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
          flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  name = name or platform.processor() or platform.machine()
  return f"{name}, {vector_isa(flags)}" if flags else name


def vector_isa(flags: set[str]) -> str:
  """The widest x86 vector extension in a /proc/cpuinfo flag set, and whether it has VNNI
  (the int8 dot products ONNX Runtime's quantized kernels use)."""
  if "avx512f" in flags:
    isa = "AVX-512"
  elif "avx2" in flags:
    isa = "AVX2"
  elif "avx" in flags:
    isa = "AVX"
  else:
    return "no AVX"
  vnni = "avx512_vnni" in flags or "avx_vnni" in flags
  return f"{isa} with VNNI" if vnni else f"{isa}, no VNNI"


def versions() -> dict[str, str]:
  import importlib.metadata as md

  out = {"python": platform.python_version()}
  for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  return out


def provenance(argv: Sequence[str], jax_device: bool = True, **extra: Any) -> dict[str, Any]:
  """Everything a reader needs to re-make a figure: command, commit, machine, versions, threads.

  `jax_device=False` leaves out JAX's device, so a process that never uses JAX (the PyTorch
  reference, whose whole wall time is reported) does not pay for starting it.
  """
  machine = {"cpu": cpu_model(), "platform": platform.platform()}
  if jax_device:
    import jax

    devices = jax.devices()
    machine.update(
      {"device": f"{devices[0].platform}:{devices[0].device_kind}", "device_count": len(devices)}
    )
  meta = {
    "command": "python " + shlex.join(list(argv)),
    "commit": git_commit(),
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "machine": machine,
    "threads": thread_settings(),
    "versions": versions(),
    **extra,
  }
  t = meta["threads"]
  device = f"; JAX device {machine['device']}" if jax_device else ""
  meta["markdown"] = "\n".join(
    [
      f"- command: `{meta['command']}`",
      f"- commit: `{meta['commit']}`, {meta['date']}",
      f"- machine: {meta['machine']['cpu']} ({t['cpu_count']} cores, process pinned to "
      f"cores {t['cpu_affinity']}){device}",
      f"- XLA_FLAGS: `{t['xla_flags'] or '(none)'}`",
      "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    ]
  )
  return meta
