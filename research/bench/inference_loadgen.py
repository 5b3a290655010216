"""MLPerf LoadGen in the inference benchmark: one engine's four scenarios, Server searched batched
and batch-1, as bench.json records (`research.bench.inference` calls it per engine)."""

from __future__ import annotations

import os
from typing import Any, Callable

from research.bench import loadgen
from research.bench.inference_settings import BenchSettings
from research.data import Dataset
from research.serving.engine import Engine


def loadgen_records(
  predictor: Engine,
  data: Dataset,
  base: dict,
  out_dir: str,
  settings: BenchSettings,
  log: Callable[[str], None],
) -> list[dict[str, Any]]:
  """One engine's LoadGen records: SingleStream, MultiStream and Offline once each, the Server
  QPS search batched and batch-1 at the same p99 bound, and what batching buys; logs under
  `out_dir/loadgen/<engine>/<backend>/<scenario>`."""
  root = os.path.join(out_dir, "loadgen", base["engine"], base["backend"])
  x = data.x_test
  run = loadgen.ScenarioSettings(
    full_length=settings.full_length,
    duration_ms=None if settings.full_length else settings.loadgen_duration_ms,
  )
  out = []
  for scenario in ("SingleStream", "MultiStream", "Offline"):
    r = loadgen.run_scenario(predictor, x, scenario, os.path.join(root, scenario), run)
    out.append({**base, "kind": "loadgen", "scenario": scenario, **_slim(r)})
    log(
      f"[{base['engine']} {base['backend']} LoadGen {scenario}] {r['result']}: "
      f"{r['headline']['name']} {r['headline']['value']:.4g}"
    )
  searches = {}
  for batching in (True, False):
    name = "Server_batched" if batching else "Server_batch1"
    s = loadgen.find_server_qps(
      predictor,
      x,
      os.path.join(root, name),
      loadgen.ScenarioSettings(
        latency_bound_ms=settings.latency_bound_ms,
        batching=batching,
        duration_ms=settings.loadgen_duration_ms,
      ),
      loadgen.ServerSearch(max_runs=settings.server_max_runs),
    )
    best = s["best"] or {}
    searches[name] = s["qps"]
    out.append(
      {
        **base,
        "kind": "loadgen",
        "scenario": name,
        "batching": batching,
        "latency_bound_ms": settings.latency_bound_ms,
        "qps": s["qps"],
        "valid": bool(best.get("valid")),
        "trials": s["trials"],
        **({"best": _slim(best)} if best else {}),
      }
    )
    p99 = (best.get("latency_ms") or {}).get("p99")
    log(
      f"[{base['engine']} {base['backend']} LoadGen {name}] highest VALID QPS "
      f"{s['qps']:,.0f} at p99 {p99 if p99 is None else round(p99, 2)} ms "
      f"(bound {settings.latency_bound_ms} ms)"
    )
  ratio = (
    searches["Server_batched"] / searches["Server_batch1"]
    if searches.get("Server_batch1")
    else None
  )
  out.append(
    {
      **base,
      "kind": "loadgen_server_ratio",
      "batched_over_batch1_qps": ratio,
      "latency_bound_ms": settings.latency_bound_ms,
    }
  )
  return out


def _slim(record: dict[str, Any]) -> dict[str, Any]:
  """A LoadGen record without its bulky fields (they stay in the run's log directory)."""
  return {k: v for k, v in record.items() if k not in ("loadgen_warnings", "responses")}
