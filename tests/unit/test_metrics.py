"""Metric names: a renamed counter counts under both names for one release."""

from __future__ import annotations

from prometheus_client import REGISTRY

from bridge.metrics import CALL_FAILURES, CALLS_STARTED


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_renamed_counter_counts_under_its_old_name_too() -> None:
    started = _sample("bridge_calls_started_total"), _sample("bridge_sessions_started_total")
    CALLS_STARTED.inc()
    assert _sample("bridge_calls_started_total") == started[0] + 1
    assert _sample("bridge_sessions_started_total") == started[1] + 1
    failed = (
        _sample("bridge_call_failures_total", reason="http_503"),
        _sample("bridge_sessions_failed_total", reason="http_503"),
    )
    CALL_FAILURES.labels("http_503").inc()
    assert _sample("bridge_call_failures_total", reason="http_503") == failed[0] + 1
    assert _sample("bridge_sessions_failed_total", reason="http_503") == failed[1] + 1
