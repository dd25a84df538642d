"""Rejected requests: one log line per second per reason, saying how many came meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong

from bridge.service import http_guard
from bridge.service.http_guard import (
    MAX_HEADER_LINE,
    MAX_REQUEST_LINE,
    GuardedAppRunner,
    Rejections,
    classify,
)


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


class _Recorded(Rejections):
    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str] = []

    def reject(self, reason: str, status: int, detail: str, peer: str | None = None) -> None:
        self.reasons.append(reason)


CHUNKED = (
    b"POST /body HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"zz\r\nhello\r\n0\r\n\r\n",
)


@contextlib.asynccontextmanager
async def _guarded(reading: asyncio.Event) -> AsyncIterator[tuple[int, _Recorded]]:
    async def body(request: web.Request) -> web.Response:
        reading.set()
        return web.Response(text=f"{len(await request.read())}")

    async def early(request: web.Request) -> web.Response:
        reading.set()
        return web.Response(status=401)  # answered before its body was read

    app = web.Application()
    app.router.add_post("/body", body)
    app.router.add_post("/early", early)
    rejections = _Recorded()
    runner = GuardedAppRunner(app, rejections, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1], rejections  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    return (await asyncio.wait_for(reader.read(), 5)).split(b"\r\n", 1)[0]


@pytest.mark.parametrize("split", [False, True], ids=["one read", "after the handler reads"])
async def test_a_broken_chunk_gets_400_however_the_reads_fall(
    split: bool, caplog: pytest.LogCaptureFixture
) -> None:
    reading = asyncio.Event()
    async with _guarded(reading) as (port, rejections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if split:
            writer.write(CHUNKED[0])
            await asyncio.wait_for(reading.wait(), 5)
            writer.write(CHUNKED[1])
        else:
            writer.write(b"".join(CHUNKED))
        status = await _answer(reader)
        writer.close()
    assert status.startswith(b"HTTP/1.1 400") or status.startswith(b"HTTP/1.0 400")
    assert rejections.reasons == ["malformed"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_good_body_then_a_bad_request_each_get_their_answer() -> None:
    reading = asyncio.Event()
    async with _guarded(reading) as (port, rejections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(CHUNKED[0] + b"0\r\n\r\n")
        await asyncio.wait_for(reading.wait(), 5)
        writer.write(b"GET / HTTP/9.9\r\nHost: b\r\n\r\n")
        answers = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answers.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 400" in answers or b"HTTP/1.0 400" in answers
    assert rejections.reasons == ["malformed"]


async def test_a_broken_chunk_after_the_answer_ends_the_connection_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The body was not read (the answer went first) and aiohttp is draining it: its error is
    answered and counted after that answer, and ends the connection; no traceback."""
    reading = asyncio.Event()
    async with _guarded(reading) as (port, rejections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(CHUNKED[0].replace(b"/body", b"/early"))
        await asyncio.wait_for(reading.wait(), 5)
        await asyncio.sleep(0.1)  # the answer is out; the body is being drained
        writer.write(CHUNKED[1])
        answers = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answers.startswith(b"HTTP/1.1 401 Unauthorized")
    assert b"HTTP/1.1 400" in answers or b"HTTP/1.0 400" in answers
    assert rejections.reasons == ["malformed"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
