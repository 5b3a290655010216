"""Edge devices on paper: a phone's big and little cores and a microcontroller, with the source of
every number, and what one prediction would cost on each.

Nothing here is measured on the device. Peaks are derived from the vendors' documented
floating-point issue rates times the clock a named product ships at; power is an assumption of
the right order for one busy core, stated as such. Projections from them are labelled
projections wherever they are shown, and are never mixed with measured times.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class EdgeDevice:
  name: str
  core: str
  clock_hz: float
  fp32_flops_per_cycle: int
  power_watts: float
  memory_bytes: int | None  # what holds the weights and the module on the device
  sources: dict[str, str]

  @property
  def peak_flops(self) -> float:
    return self.clock_hz * self.fp32_flops_per_cycle


EDGE_DEVICES: tuple[EdgeDevice, ...] = (
  EdgeDevice(
    "phone big core",
    "Arm Cortex-A76 at 2.84 GHz (Qualcomm Snapdragon 855's prime core)",
    2.84e9,
    16,
    1.5,
    None,
    {
      "clock": "Qualcomm's Snapdragon 855 specification (one Kryo 485 prime core at 2.84 GHz)",
      "flops_per_cycle": "Arm Cortex-A76 Software Optimization Guide: two ASIMD/FP pipes, each a "
      "128-bit FMLA per cycle (2 x 4 lanes x 2 FLOPs)",
      "power": "assumption: about 1.5 W for one big core at its top clock, the order public "
      "measurements of this SoC report; not a vendor figure",
    },
  ),
  EdgeDevice(
    "phone little core",
    "Arm Cortex-A55 at 1.78 GHz (Snapdragon 855's efficiency cores)",
    1.78e9,
    8,
    0.15,
    None,
    {
      "clock": "Qualcomm's Snapdragon 855 specification (four Kryo 485 efficiency cores at "
      "1.78 GHz)",
      "flops_per_cycle": "Arm Cortex-A55 Software Optimization Guide: one 128-bit FMLA per cycle "
      "(4 lanes x 2 FLOPs)",
      "power": "assumption: about 0.15 W for one little core, a tenth of the big core's; not a "
      "vendor figure",
    },
  ),
  EdgeDevice(
    "microcontroller",
    "Arm Cortex-M7 at 480 MHz (STMicroelectronics STM32H743)",
    480e6,
    2,
    0.3,
    2 * 2**20,
    {
      "clock": "STM32H743 datasheet (DS12110): Cortex-M7 up to 480 MHz",
      "flops_per_cycle": "Arm Cortex-M7 Technical Reference Manual: single-precision FPU, one "
      "VFMA per cycle (2 FLOPs); no SIMD for floats",
      "power": "assumption: about 0.3 W in run mode at 480 MHz, the order DS12110's run-mode "
      "supply current gives; check it for the board",
      "memory": "STM32H743 datasheet: 2 MiB of flash (and 1 MiB of SRAM) for module and weights",
    },
  ),
)


def projections(
  flops_per_prediction: float, host_fraction_of_peak: float | None, bytes_needed: int
) -> list[dict[str, Any]]:
  """Per device: latency and energy of one prediction, projected two ways.

  `at_peak`: the FLOPs at the device's peak, a floor no real kernel reaches. `at_host_fraction`:
  at the fraction of its own peak that this model's module reached on this host (measured), the
  plainer guess. Energy is the device's assumed power times the projected latency.
  """
  rows = []
  for d in EDGE_DEVICES:
    at_peak_s = flops_per_prediction / d.peak_flops
    row: dict[str, Any] = {
      "device": d.name,
      "core": d.core,
      "peak_gflops": d.peak_flops / 1e9,
      "power_watts": d.power_watts,
      "sources": d.sources,
      "projected": True,
      "latency_at_peak_us": at_peak_s * 1e6,
      "energy_at_peak_uj": at_peak_s * d.power_watts * 1e6,
      "fits_memory": None if d.memory_bytes is None else bytes_needed <= d.memory_bytes,
    }
    if host_fraction_of_peak:
      at_fraction_s = at_peak_s / host_fraction_of_peak
      row["latency_at_host_fraction_us"] = at_fraction_s * 1e6
      row["energy_at_host_fraction_uj"] = at_fraction_s * d.power_watts * 1e6
    rows.append(row)
  return rows
