"""Settings for tests: every aiortc peer offers loopback host candidates only and no ICE server.

This is the one way tests configure ICE (see bridge/realtime/ice.py):
``BRIDGE_ICE_HOST_ADDRESSES`` for subprocesses, ``test_settings()`` in-process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from bridge.settings.config import Settings

EMULATOR_KEY = "sk-emulator-test-key-0123456789"
LOOPBACK_ENV = {"BRIDGE_ICE_HOST_ADDRESSES": "127.0.0.1", "BRIDGE_ICE_SERVERS": "[]"}


def test_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "ice_host_addresses": ["127.0.0.1"],
        "ice_servers": [],
        "openai_api_key": SecretStr(EMULATOR_KEY),
        "connect_timeout": 5.0,
        "ice_timeout": 5.0,
        "datachannel_timeout": 5.0,
        "first_event_timeout": 5.0,
    }
    return Settings.model_validate({**base, **overrides})


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# The ``bridge_settings`` fixture's type: settings pointing at the test stack, with overrides.
BridgeSettings = Callable[..., Settings]
