"""A module compiled for another instruction set, run here under QEMU's user-mode emulation.

Proof that the artifact runs on that CPU's instruction set and answers as the host does: the
target's own `iree-run-module` (from IREE's runtime wheel for that platform, the same release
as the compiler) runs under `qemu-<arch>` with the target's C library. An emulated run is never
a latency: nothing here is timed.

Only aarch64 has a runtime build on the package registry; riscv64 modules are compiled but have
no published runtime to run them with (`EMULATORS` has no entry for it).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Sequence

import numpy as np

from research.errors import UserError

RUNTIME_RELEASE = "3.13.0"  # the iree-base-runtime wheel whose target build runs the modules
TOOL = "iree/_runtime_libs/iree-run-module"
RUN_TIMEOUT_S = 300


class EmulationError(UserError, RuntimeError):
  """A missing emulator, target runtime or library, or a run that failed; the message says what
  to install or change."""


@dataclasses.dataclass(frozen=True)
class Emulator:
  target: str
  qemu: str  # the user-mode emulator binary
  sysroot: str  # the target's C and C++ libraries (Debian's cross packages)
  debian_packages: tuple[str, ...]
  wheel_platform: str  # the runtime wheel's platform tag on the registry

  def install_hint(self) -> str:
    return f"apt-get install {' '.join(self.debian_packages)}"

  def fetch_command(self, dest: str) -> str:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (
      f"pip download --no-deps --only-binary=:all: --platform {self.wheel_platform} "
      f"--python-version {python} iree-base-runtime=={RUNTIME_RELEASE} -d {dest}"
    )


EMULATORS = {
  "aarch64": Emulator(
    "aarch64",
    "qemu-aarch64",
    "/usr/aarch64-linux-gnu",
    ("qemu-user", "libc6-arm64-cross", "libstdc++6-arm64-cross"),
    "manylinux_2_28_aarch64",
  ),
}
NOT_EMULATED = {
  "riscv64": "IREE publishes no riscv64 build of its runtime on the package registry, so the "
  "riscv64 module is compiled and its manifest written, but it is not run here",
}


def emulator_for(target: str) -> Emulator:
  """The target's emulator, checked: QEMU on the PATH and the target's libraries installed."""
  if target not in EMULATORS:
    why = NOT_EMULATED.get(target, f"no emulator is set up for target {target!r}")
    raise EmulationError(f"cannot emulate {target}: {why}")
  emu = EMULATORS[target]
  if shutil.which(emu.qemu) is None:
    raise EmulationError(
      f"{emu.qemu} is not installed; emulating {target} needs QEMU's user mode and the "
      f"target's libraries: {emu.install_hint()} (or pass --no-emulate)"
    )
  if not glob.glob(os.path.join(emu.sysroot, "lib", "libstdc++.so.6*")):
    raise EmulationError(
      f"{target}'s C++ library is missing under {emu.sysroot}; {emu.install_hint()} "
      f"(or pass --no-emulate)"
    )
  return emu


def find_runtime_wheel(emu: Emulator, where: str) -> str:
  """The target's runtime wheel: `where` itself (a .whl) or the one inside the folder `where`."""
  if where.endswith(".whl") and os.path.isfile(where):
    wheels = [where]
  else:
    wheels = sorted(glob.glob(os.path.join(where, "iree_base_runtime-*.whl")))
    wheels = [w for w in wheels if emu.target in os.path.basename(w)]
  if not wheels:
    raise EmulationError(
      f"no {emu.target} build of IREE's runtime at {where}; fetch it from the registry with: "
      f"{emu.fetch_command(where)} (or pass --no-emulate)"
    )
  wheel = wheels[-1]
  release = os.path.basename(wheel).split("-")[1]
  if release != RUNTIME_RELEASE:
    raise EmulationError(
      f"{wheel} is IREE runtime {release}; the modules need {RUNTIME_RELEASE}: "
      f"{emu.fetch_command(os.path.dirname(wheel) or '.')}"
    )
  return wheel


def run_under_emulation(
  vmfb: bytes, inputs: Sequence[np.ndarray], target: str, runtime_wheel: str
) -> list[np.ndarray]:
  """`main` of the module on each input, run by the target's `iree-run-module` under QEMU.

  One emulated process per input; everything lives in a temporary folder removed on return.
  """
  emu = emulator_for(target)
  wheel = find_runtime_wheel(emu, runtime_wheel)
  with tempfile.TemporaryDirectory(prefix=f"emulate-{target}-") as tmp:
    try:
      with zipfile.ZipFile(wheel) as z:
        tool = z.extract(TOOL, tmp)
    except (zipfile.BadZipFile, KeyError) as e:
      raise EmulationError(f"{wheel} holds no {TOOL} ({e}); fetch it again") from None
    os.chmod(tool, 0o755)
    module = os.path.join(tmp, "module.vmfb")
    with open(module, "wb") as f:
      f.write(vmfb)
    outputs = []
    for i, x in enumerate(inputs):
      x_path, y_path = os.path.join(tmp, f"x{i}.npy"), os.path.join(tmp, f"y{i}.npy")
      np.save(x_path, np.ascontiguousarray(x, np.float32))
      command = [emu.qemu, "-L", emu.sysroot, tool, "--device=local-sync", f"--module={module}",
                 "--function=main", f"--input=@{x_path}", f"--output=@{y_path}"]  # fmt: skip
      try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
      except subprocess.TimeoutExpired:
        raise EmulationError(
          f"the emulated {target} run took over {RUN_TIMEOUT_S} s; give it fewer examples"
        ) from None
      if done.returncode != 0 or not os.path.isfile(y_path):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmulationError(
          f"the {target} module failed under {emu.qemu} (exit {done.returncode}): {last}"
        )
      outputs.append(np.load(y_path))
  return outputs


def qemu_version(target: str) -> str:
  """`qemu-aarch64 --version`'s first line, for the record."""
  emu = EMULATORS[target]
  done = subprocess.run([emu.qemu, "--version"], capture_output=True, text=True, timeout=30)
  return (done.stdout.strip().splitlines() or ["unknown"])[0]
