"""Rejected requests: one log line per second per reason, saying how many came meanwhile."""

from __future__ import annotations

import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong

from bridge.service import http_guard
from bridge.service.http_guard import MAX_HEADER_LINE, MAX_REQUEST_LINE, Rejections, classify


def test_each_parser_refusal_has_its_status() -> None:
    assert classify(LineTooLong(b"x", MAX_REQUEST_LINE))[:2] == ("request_line_too_long", 414)
    assert classify(LineTooLong(b"x", MAX_HEADER_LINE))[:2] == ("header_too_long", 431)
    assert classify(BadHttpMessage("Too many headers received"))[:2] == ("too_many_headers", 431)
    assert classify(BadHttpMethod("\x16\x03"))[:2] == ("not_http", 400)
    reason, status, detail = classify(BadHttpMessage("Invalid header token:\n\n  b'A B'\n   ^"))
    assert (reason, status, detail) == ("malformed", 400, "Invalid header token")


def test_one_line_per_second_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    rejections = Rejections(interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=http_guard.__name__):
        for _ in range(10):
            rejections.reject("header_too_long", 431, "header line over 8190 bytes", "10.0.0.1")
            rejections.reject("not_http", 400, "not an HTTP request")
            now[0] += 0.05
        now[0] += 1.0
        rejections.reject("header_too_long", 431, "header line over 8190 bytes", "10.0.0.1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rejected a request: 431 header_too_long (header line over 8190 bytes) from 10.0.0.1",
        "rejected a request: 400 not_http (not an HTTP request)",
        "rejected a request: 431 header_too_long (header line over 8190 bytes) from 10.0.0.1; "
        "9 more like it in the last 1 s",
    ]
