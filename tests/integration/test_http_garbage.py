"""Anyone who can reach ``serve``'s port: protocol-level garbage and refused requests each get
their 4xx, are counted, and cost the log at most one short line per second per reason — never a
traceback."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter

import pytest

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from tests.support.dispatch_harness import ServeProcess, participant_joined, serve, signed_webhook
from tests.support.waits import metric

pytestmark = pytest.mark.timeout(90)

HEAD = b"POST /webhook HTTP/1.1\r\nHost: bridge\r\n"


def _cases(server: LiveKitServer) -> dict[str, tuple[list[bytes], int | None, str]]:
    """name -> (what is sent, in parts; the status expected, None: no answer possible; reason)."""
    body, headers = signed_webhook(server, participant_joined("garbage-room", "mallory"))
    forged_body, forged = signed_webhook(
        server, participant_joined("garbage-room", "mallory"), secret="not-the-secret" * 3
    )

    def post(payload: bytes, hdrs: dict[str, str]) -> bytes:
        lines = "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        return HEAD + f"{lines}Content-Length: {len(payload)}\r\n\r\n".encode() + payload

    chunked = HEAD + b"Authorization: x\r\nContent-Type: application/json\r\n"
    chunked += b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    return {
        "100 KB header line": (
            [b"GET /healthz HTTP/1.1\r\nHost: b\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"],
            431,
            "header_too_long",
        ),
        "100 KB URL": (
            [b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: b\r\n\r\n"],
            414,
            "request_line_too_long",
        ),
        "too many headers": (
            [b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n"],
            431,
            "too_many_headers",
        ),
        "TLS on the HTTP port": (
            [bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64],
            400,
            "not_http",
        ),
        "binary garbage": ([b"\x00\x01\x02\xff hello\r\n\r\n"], 400, "not_http"),
        "bad header name": ([b"GET / HTTP/1.1\r\nBad Header: y\r\n\r\n"], 400, "malformed"),
        "HTTP/9.9": ([b"GET / HTTP/9.9\r\nHost: b\r\n\r\n"], 400, "malformed"),
        "length and chunked": (
            [HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
            400,
            "malformed",
        ),
        # The bad size comes in a later read than the headers, unless the server is too busy
        # to read before both arrived: the answer is the same either way.
        "bad chunk size": ([chunked, b"zz\r\nhello\r\n0\r\n\r\n"], 400, "malformed"),
        "body cut short": (
            [
                HEAD + b"Authorization: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 50\r\n\r\n{"
            ],
            None,
            "incomplete",
        ),
        "unsigned webhook": (
            [post(body, {"Content-Type": "application/webhook+json"})],
            401,
            "webhook_unauthorized",
        ),
        "forged webhook": ([post(forged_body, forged)], 401, "webhook_unauthorized"),
        "wrong bearer token": (
            [b"DELETE /dispatch/r HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer nope\r\n\r\n"],
            401,
            "api_unauthorized",
        ),
        "oversized webhook": (
            [post(b"{" + b" " * 70_000 + b"}", {**headers, "Content-Type": "application/json"})],
            413,
            "webhook_too_large",
        ),
    }


async def _send(bridge: ServeProcess, parts: list[bytes], expect: int | None) -> int | None:
    """Send ``parts``; the status of the answer (None: none came). With ``expect`` None the
    client gives up after the parts (half-closes its side)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
    try:
        with contextlib.suppress(ConnectionError):  # the server may answer and close mid-send
            for part in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.05)
            if expect is None:
                writer.write_eof()
        try:
            head = await asyncio.wait_for(reader.read(64), 10)
        except ConnectionError:
            return None
    finally:
        writer.close()
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    return int(match.group(1)) if match else None


async def test_fifty_bad_requests_get_their_4xx_are_counted_and_logged_sparingly(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    async with serve(
        livekit_server, emulator, reconcile_interval="600", dispatch_token="t" * 32
    ) as bridge:
        cases = _cases(livekit_server)
        names = [name for _, name in zip(range(50), _cycle(list(cases)), strict=False)]
        began = time.monotonic()
        # Ten at a time, as a client hammering the port would.
        statuses: list[int | None] = []
        for start in range(0, len(names), 10):
            batch = names[start : start + 10]
            statuses += await asyncio.gather(*(_send(bridge, *cases[n][:2]) for n in batch))
        took = time.monotonic() - began
        assert (await bridge.get("/healthz")).status_code == 200
        text = (await bridge.get("/metrics")).text
        log = bridge.output()

    wrong = {
        name: (got, cases[name][1])
        for name, got in zip(names, statuses, strict=True)
        if cases[name][1] is not None and got != cases[name][1]
    }
    assert wrong == {}
    expected = Counter(cases[name][2] for name in names)
    counted = {
        reason: metric(text, "bridge_http_rejected_total", reason=reason) for reason in expected
    }
    assert counted == {reason: float(n) for reason, n in expected.items()}
    assert "Traceback" not in log and "Error handling request" not in log
    lines = Counter(m.group(1) for m in re.finditer(r"rejected a request: \d{3} (\w+) ", log))
    # The first line of each reason at once, then at most one a second.
    allowed = int(took) + 2
    assert lines.keys() == expected.keys()
    assert all(n <= allowed for n in lines.values()), (lines, took)
    assert sum(lines.values()) < len(names)
    assert all(len(line) < 300 for line in log.splitlines() if "rejected a request" in line)


def _cycle(items: list[str]) -> list[str]:
    return items * (50 // len(items) + 1)
