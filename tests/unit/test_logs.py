"""Log lines never carry an access token, whoever writes them (the livekit SDK included)."""

from __future__ import annotations

import logging

import pytest

from bridge.logs import network_reason, redact_tokens, setup_logging

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def test_tokens_are_masked_in_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("INFO", "text")
        logging.getLogger("livekit").warning("401 Unauthorized - invalid token: %s, error", TOKEN)
        logging.getLogger("bridge.x").info("could not join: invalid token: " + TOKEN)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert TOKEN not in err and err.count("<token>") == 2
    assert redact_tokens("no token here") == "no token here"


def test_network_reasons_are_short() -> None:
    refused = OSError(111, "Connect call failed ('127.0.0.1', 9)")
    assert network_reason(refused) == "connection refused"
    try:
        raise RuntimeError("wrapped") from refused
    except RuntimeError as exc:
        assert network_reason(exc) == "connection refused"
    assert network_reason(ValueError("x")) is None
