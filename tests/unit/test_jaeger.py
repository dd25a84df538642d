"""The local Jaeger's config: loopback only, in memory, OTLP/HTTP in, nothing else opened; the
UI archive unpacks to what the query extension serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.local import jaeger


def endpoints(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [str(v) for k, v in node.items() if k == "endpoint"]
        return found + [e for v in node.values() for e in endpoints(v)]
    if isinstance(node, list):
        return [e for v in node for e in endpoints(v)]
    return []


def test_every_port_is_on_loopback_and_storage_is_memory(tmp_path: Path) -> None:
    config = jaeger.render_config(otlp_port=4318, ui_port=16686, grpc_port=16685, assets=tmp_path)
    assert sorted(endpoints(config)) == ["127.0.0.1:16685", "127.0.0.1:16686", "127.0.0.1:4318"]
    assert config["service"]["telemetry"]["metrics"] == {"level": "none"}  # no :8888
    assert set(config["receivers"]) == {"otlp"}
    assert set(config["receivers"]["otlp"]["protocols"]) == {"http"}
    assert "memory" in config["extensions"]["jaeger_storage"]["backends"]["memory"]
    assert config["extensions"]["jaeger_query"]["ui"] == {"assets_path": str(tmp_path)}
    assert (
        "ui"
        not in jaeger.render_config(otlp_port=1, ui_port=2, grpc_port=3)["extensions"][
            "jaeger_query"
        ]
    )


def test_the_ui_archive_unpacks_once_into_the_tools_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jaeger, "tools_dir", lambda: tmp_path)
    assets = jaeger.ui_assets()
    assert assets is not None and assets.parent == tmp_path
    assert (assets / "index.html").read_text().lower().startswith("<!doctype html>")
    assert "Apache License" in (assets / "LICENSE").read_text()
    assert jaeger.ui_assets() == assets  # the second time: already there
    assert [p.name for p in tmp_path.iterdir()] == [assets.name]  # no temporary leftovers


def test_an_explicit_binary_must_be_executable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAEGER_BIN", str(tmp_path / "nope"))
    with pytest.raises(jaeger.JaegerError, match="JAEGER_BIN"):
        jaeger.find_binary()
