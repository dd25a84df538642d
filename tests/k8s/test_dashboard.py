"""The Grafana dashboard (k8s/components/grafana-dashboard/room-bridge.json): every query names
only metrics the bridge exports, with the right suffix for its type, and it covers what an
operator watches (turn latency, sessions, calls, drops, cost per minute, capacity)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import bridge
from tests.k8s.tools import K8S, render

DASHBOARD = K8S / "components" / "grafana-dashboard" / "room-bridge.json"
METRIC = re.compile(r"\b(bridge_[a-z0-9_]+)\b")
# Series each metric type exposes (prometheus_client; `_created` is left out on purpose: it is
# no query's business).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
}
# What the dashboard must show (issue: turn latency, sessions, calls, drops, cost, capacity).
COVERED = {
    "bridge_turn_latency_seconds_bucket",
    "bridge_barge_in_seconds_bucket",
    "bridge_join_ready_seconds_bucket",
    "bridge_call_setup_seconds_bucket",
    "bridge_tool_seconds_bucket",
    "bridge_sessions_active",
    "bridge_calls_started_total",  # bridge_sessions_started_total until renamed
    "bridge_call_failures_total",  # bridge_sessions_failed_total until renamed
    "bridge_audio_frames_dropped_total",
    "bridge_cost_usd_total",
    "bridge_session_capacity",
}


def exported() -> dict[str, str]:
    """Every series name the bridge's modules export -> its metric type. All modules are
    imported, so a collector defined anywhere in bridge/ counts."""
    for module in pkgutil.walk_packages(bridge.__path__, "bridge."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    series: dict[str, str] = {}
    for family in REGISTRY.collect():
        if family.name.startswith("bridge_"):
            for suffix in SUFFIXES[family.type]:
                series[family.name + suffix] = family.type
    return series


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every templating query."""
    found = []
    for panel in walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []) if "targets" in panel else []:
            found.append((f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(
                (
                    f"variable {variable['name']}",
                    query["query"] if isinstance(query, dict) else query,
                )
            )
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_every_query_names_a_metric_the_bridge_exports(dashboard: dict[str, Any]) -> None:
    series = exported()
    problems = []
    all_queries = queries(dashboard)
    assert len(all_queries) >= 15
    for where, expr in all_queries:
        names = METRIC.findall(expr)
        if not names:
            problems.append(f"{where}: names no bridge metric: {expr}")
        problems.extend(f"{where}: {name} is not exported" for name in names if name not in series)
        if "histogram_quantile" in expr:
            problems.extend(
                f"{where}: histogram_quantile over {name}"
                for name in names
                if not name.endswith("_bucket")
            )
    assert not problems, "\n".join(problems)


def test_the_dashboard_covers_what_an_operator_watches(dashboard: dict[str, Any]) -> None:
    used = {name for _, expr in queries(dashboard) for name in METRIC.findall(expr)}
    assert used >= COVERED, sorted(COVERED - used)


def test_latency_panels_show_exemplars(dashboard: dict[str, Any]) -> None:
    for panel in walk(dashboard["panels"]):
        for target in panel.get("targets", []) if "targets" in panel else []:
            if "bridge_turn_latency_seconds_bucket" in target["expr"]:
                assert target.get("exemplar") is True, panel["title"]


def test_the_checker_catches_a_metric_the_bridge_does_not_export() -> None:
    series = exported()
    assert "bridge_turn_latency_seconds_bucket" in series
    assert "bridge_turn_latency_seconds" not in series  # a histogram is queried by its series
    assert "bridge_sessions_active_total" not in series
    assert "bridge_cost_usd_total" in series


def test_the_monitoring_overlay_ships_it_as_a_sidecar_config_map() -> None:
    objs = [o for o in yaml.safe_load_all(render("overlays/servicemonitor")) if o]
    (config_map,) = [
        o
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "room-bridge-dashboard"
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["room-bridge.json"]) == json.loads(DASHBOARD.read_text())
