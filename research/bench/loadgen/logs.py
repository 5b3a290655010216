"""Reading LoadGen's logs: validity from the summary, the numbers from the detail log, and the
logits an accuracy run logged. LoadGen, not us, decides VALID; we only read what it wrote.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from research.bench.loadgen.binding import LoadGenRunError

_SUMMARY_RESULT = re.compile(r"^Result is\s*:\s*(\w+)", re.MULTILINE)
_MLLOG_PREFIX = ":::MLLOG"


def read_detail_log(path: str) -> dict[str, Any]:
  """The `:::MLLOG` JSON entries of mlperf_log_detail.txt as {key: value}; errors and warnings
  (keys that repeat) are collected under 'errors' and 'warnings'."""
  entries: dict[str, Any] = {"errors": [], "warnings": []}
  with open(path) as f:
    for line in f:
      if not line.startswith(_MLLOG_PREFIX):
        continue
      try:
        entry = json.loads(line[len(_MLLOG_PREFIX) :])
      except json.JSONDecodeError:
        continue
      meta = entry.get("metadata") or {}
      if meta.get("is_error"):
        entries["errors"].append(f"{entry['key']}: {entry['value']}")
      elif meta.get("is_warning"):
        entries["warnings"].append(f"{entry['key']}: {entry['value']}")
      entries[entry["key"]] = entry["value"]
  return entries


def read_summary_validity(path: str) -> str:
  """'VALID' or 'INVALID', from the "Result is : ..." line of mlperf_log_summary.txt."""
  with open(path) as f:
    match = _SUMMARY_RESULT.search(f.read())
  if not match:
    raise LoadGenRunError(f"{path} has no 'Result is :' line; LoadGen did not finish the run")
  return match.group(1)


def _ns_to_ms(value: Any) -> float | None:
  return None if value is None else float(value) / 1e6


def _latency_percentiles_ms(detail: dict[str, Any], per_query: bool = False) -> dict[str, float]:
  infix = "per_query_latency" if per_query else "latency"
  out = {}
  for name, key in (
    ("p50", "50.00"),
    ("p90", "90.00"),
    ("p95", "95.00"),
    ("p97", "97.00"),
    ("p99", "99.00"),
    ("p99.9", "99.90"),
  ):
    value = detail.get(f"result_{key}_percentile_{infix}_ns")
    if value is not None:
      out[name] = _ns_to_ms(value)
  prefix = "result_{}_query_latency_ns" if per_query else "result_{}_latency_ns"
  for name in ("min", "max", "mean"):
    value = detail.get(prefix.format(name))
    if value is not None:
      out[name] = _ns_to_ms(value)
  return out


def summarize_logs(log_dir: str, scenario: str) -> dict[str, Any]:
  """What a run measured, from the summary (validity) and the detail log (numbers)."""
  summary_path = os.path.join(log_dir, "mlperf_log_summary.txt")
  detail_path = os.path.join(log_dir, "mlperf_log_detail.txt")
  for path in (summary_path, detail_path):
    if not os.path.isfile(path):
      raise LoadGenRunError(f"LoadGen wrote no {os.path.basename(path)} into {log_dir}")
  result = read_summary_validity(summary_path)
  detail = read_detail_log(detail_path)
  latency_ms = _latency_percentiles_ms(detail)
  record: dict[str, Any] = {
    "result": result,
    "valid": result == "VALID",
    "latency_ms": latency_ms,
    "query_count": detail.get("result_query_count"),
    "constraints": {
      "min_duration_met": detail.get("result_min_duration_met"),
      "min_queries_met": detail.get("result_min_queries_met"),
      "early_stopping_met": detail.get("early_stopping_met"),
      "perf_constraints_met": detail.get("result_perf_constraints_met"),
    },
    "invalid_reason": (detail.get("result_invalid_reason") or "").strip() or None,
    "early_stopping": " ".join((detail.get("early_stopping_result") or "").split()) or None,
    "generated_query_count": detail.get("generated_query_count"),
    "loadgen_errors": detail["errors"],
    "loadgen_warnings": detail["warnings"],
    "loadgen_version": detail.get("loadgen_version"),
  }
  if detail.get("result_validity") not in (None, result):
    raise LoadGenRunError(
      f"{log_dir}: summary says {result} but detail log says {detail.get('result_validity')}"
    )
  if scenario == "SingleStream":
    record["headline"] = {"name": "p90_latency_ms", "value": latency_ms.get("p90")}
    record["samples_per_s"] = detail.get("result_qps_with_loadgen_overhead")
    record["samples_per_s_without_loadgen"] = detail.get("result_qps_without_loadgen_overhead")
    record["early_stopping_p90_ms"] = _ns_to_ms(detail.get("early_stopping_latency_ss"))
  elif scenario == "MultiStream":
    query_ms = _latency_percentiles_ms(detail, per_query=True)
    record["query_latency_ms"] = query_ms
    record["headline"] = {"name": "p99_query_latency_ms", "value": query_ms.get("p99")}
    record["early_stopping_p99_ms"] = _ns_to_ms(detail.get("early_stopping_latency_ms"))
  elif scenario == "Offline":
    record["samples_per_s"] = detail.get("result_samples_per_second")
    record["headline"] = {"name": "samples_per_s", "value": record["samples_per_s"]}
  elif scenario == "Server":
    record["samples_per_s"] = detail.get("result_completed_samples_per_sec")
    record["scheduled_qps"] = detail.get("result_scheduled_samples_per_sec")
    record["overlatency_query_count"] = detail.get("result_overlatency_query_count")
    record["headline"] = {"name": "completed_samples_per_s", "value": record["samples_per_s"]}
  return record


def read_accuracy_log(log_dir: str, num_classes: int) -> dict[int, np.ndarray]:
  """{QSL index: logits} from mlperf_log_accuracy.json (AccuracyOnly runs log every response)."""
  with open(os.path.join(log_dir, "mlperf_log_accuracy.json")) as f:
    entries = json.load(f)
  out = {}
  for entry in entries:
    row = np.frombuffer(bytes.fromhex(entry["data"]), dtype=np.float32)
    if row.size != num_classes:
      raise LoadGenRunError(
        f"accuracy log entry for sample {entry['qsl_idx']} holds {row.size} "
        f"values, expected {num_classes} logits"
      )
    out[int(entry["qsl_idx"])] = row
  return out
