"""MLPerf LoadGen scenarios around a `Predictor`: the standard way to put numbers on serving.

  scenarios.py  a run's settings (`ScenarioSettings`) and one run of a scenario (`run_scenario`);
                what the scenarios measure and when a run is VALID.
  server_search.py  the Server QPS search (`find_server_qps`, walked as `ServerSearch` says).
  suts.py       the system under test: the in-memory sample library and the synchronous and
                Server SUTs that answer LoadGen's queries with the predictor.
  logs.py       reading LoadGen's summary, detail and accuracy logs into a record.
  binding.py    the late import of mlperf_loadgen and `LoadGenRunError`, which all three share.

The names callers use are re-exported here (`loadgen.run_scenario`, ...). To replace
`run_scenario` inside `find_server_qps`, patch `scenarios.run_scenario`, where it is looked up.
"""

from __future__ import annotations

from research.bench.loadgen.binding import LoadGenRunError
from research.bench.loadgen.logs import (
  read_accuracy_log,
  read_detail_log,
  read_summary_validity,
  summarize_logs,
)
from research.bench.loadgen.scenarios import (
  DEFAULT_DURATION_MS,
  DEFAULT_PERFORMANCE_COUNT,
  DEFAULT_SERVER_LOAD,
  EARLY_STOPPING_MIN_QUERIES,
  MODES,
  SCENARIOS,
  ScenarioSettings,
  estimate_server_capacity_qps,
  make_test_settings,
  measure_call_seconds,
  run_scenario,
)
from research.bench.loadgen.server_search import ServerSearch, find_server_qps
from research.bench.loadgen.suts import SERVER_WORKER_NAME, WORKER_JOIN_TIMEOUT_S

__all__ = [
  "DEFAULT_DURATION_MS",
  "DEFAULT_PERFORMANCE_COUNT",
  "DEFAULT_SERVER_LOAD",
  "EARLY_STOPPING_MIN_QUERIES",
  "MODES",
  "SCENARIOS",
  "SERVER_WORKER_NAME",
  "WORKER_JOIN_TIMEOUT_S",
  "LoadGenRunError",
  "ScenarioSettings",
  "ServerSearch",
  "estimate_server_capacity_qps",
  "find_server_qps",
  "make_test_settings",
  "measure_call_seconds",
  "read_accuracy_log",
  "read_detail_log",
  "read_summary_validity",
  "run_scenario",
  "summarize_logs",
]
