"""The orchestrator load test itself (a real orchestrator process on loopback), at a size fit for the suite;
`freeflow bench --orchestrator` runs it at 100 hosts x 100 endpoints. No timing is asserted here."""

import math

from freeflow.bench.orchestrator_load import run_orchestrator_load


def test_every_watcher_sees_the_change_and_every_number_is_reported() -> None:
    result = run_orchestrator_load(hosts=10, per_host=20, lookups=50)
    assert result["endpoints"] == 200 and result["hosts"] == 10
    assert result["watchers_notified"] == 10, "a watcher missed the change"
    for key in ("register_s", "lookup_p50_ms", "lookup_p99_ms", "notify_max_ms", "notify_p99_ms"):
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
