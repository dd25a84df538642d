"""What ``serve``'s HTTP port does with requests it will not take.

Anyone who can reach the port can send protocol-level garbage: a 100 KB header line, a request
line longer than any of our URLs, a TLS handshake, a broken chunked body. aiohttp answers these
with a 400 and logs a full traceback at ERROR for each one, so a client could fill the logs and
page an operator. Here each such request gets its own 4xx (414 for an over-long request line, 431
for an over-long header line or too many headers, 400 for the rest), a short body that echoes
nothing back, and is counted in ``bridge_http_rejected_total{reason}``; the log gets at most one
short line per second per reason, saying how many were rejected since the last one.

A body that breaks its framing (a bad chunk size) is answered the same way whenever its bytes
arrive. aiohttp's C parser, when the bad bytes come in a later read than the headers, queues the
error as a new request and leaves the request being read waiting for a body that never ends: the
client would get no answer until it gave up, and the same bytes would be counted as
``malformed`` or ``incomplete`` depending on how the reads fell. ``GuardedRequestHandler`` hands
such an error to the body it belongs to instead.

The endpoints' own refusals (a webhook with a bad signature, a wrong bearer token) go through
the same ``Rejections`` so they cannot flood the log either.

    runner = GuardedAppRunner(app, Rejections(), access_log=None)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from bridge.metrics import HTTP_REJECTED

logger = logging.getLogger(__name__)

# Our URLs are short (/webhook, /dispatch/<room name up to 256 characters>); header lines carry
# at most a webhook's JWT. The two limits differ so an over-long line says which it was.
MAX_REQUEST_LINE = 4096
MAX_HEADER_LINE = 8190
LOG_INTERVAL = 1.0


class Rejections:
    """Counts rejected requests by reason and logs at most one line per ``interval`` per reason
    (the first at once, then how many more came since)."""

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def reject(self, reason: str, status: int, detail: str, peer: str | None = None) -> None:
        HTTP_REJECTED.labels(reason).inc()
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        more = self._unlogged.pop(reason, 0)
        self._last[reason] = now
        logger.warning(
            "rejected a request: %d %s (%s)%s%s",
            status,
            reason,
            detail,
            f" from {peer}" if peer else "",
            f"; {more} more like it in the last {now - last:.0f} s" if more and last else "",
        )


def classify(exc: HttpProcessingError) -> tuple[str, int, str]:
    """(reason, status, detail) for a request aiohttp's parser refused."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_REQUEST_LINE:
            return "request_line_too_long", 414, f"request line over {MAX_REQUEST_LINE} bytes"
        return "header_too_long", 431, f"header line over {MAX_HEADER_LINE} bytes"
    message = str(getattr(exc, "message", "") or "")
    if message.startswith("Too many headers"):
        return "too_many_headers", 431, "too many header lines"
    if isinstance(exc, BadHttpMethod):
        # A TLS handshake, or anything else that is not HTTP, on the plain HTTP port.
        return "not_http", 400, "not an HTTP request"
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return "malformed", 400, first.rstrip(":")[:80]


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering unparseable requests as described above."""

    rejections: Rejections
    # The body of the last request parsed, while it may still be receiving bytes.
    _open_body: StreamReader | None = None

    def data_received(self, data: bytes) -> None:
        # Relies on aiohttp's queue of parsed messages (pinned by the lock; the integration test
        # sending a bad chunk size in a later read fails if this stops holding).
        idle = self._waiter is not None and not self._waiter.done()
        queued = len(self._messages)
        super().data_received(data)
        index = queued
        while index < len(self._messages):
            message, body = self._messages[index]
            if not isinstance(message, _ErrInfo):
                self._open_body = None if body is EMPTY_PAYLOAD else body
            elif not idle and self._open_body is not None and not self._open_body.is_eof():
                # The error is in the open body, not a request of its own.
                open_body, self._open_body = self._open_body, None
                if self._reading(open_body):
                    del self._messages[index]
                    open_body.set_exception(message.exc)  # its handler answers it
                    open_body.feed_eof()
                    continue
                # Its answer went first and aiohttp is draining it: the drain ends here, and
                # the error is answered (and counted) after that answer, closing the connection.
                open_body.feed_eof()
            index += 1

    def _reading(self, body: StreamReader) -> bool:
        """Whether a handler is reading ``body`` now."""
        request = self._current_request
        return request is not None and request.content is body

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError) and request.writer.output_size == 0:
            # The client closed the connection while we were reading its body: nothing to
            # answer, nothing of ours broke.
            detail = "connection closed mid-request"
            self.rejections.reject("incomplete", 400, detail, request.remote)
            response = web.Response(status=400)
            response.force_close()
            return response
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        reason, code, detail = classify(exc)
        self.rejections.reject(reason, code, detail, request.remote)
        phrase = HTTPStatus(code).phrase
        response = web.Response(status=code, text=f"{code} {phrase}: {detail}\n")
        response.force_close()
        return response


class _GuardedServer(web.Server):
    def __init__(self, *args: Any, rejections: Rejections, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rejections = rejections

    def __call__(self) -> RequestHandler:
        handler = GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.rejections = self._rejections
        return handler


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use ``GuardedRequestHandler`` and our line limits."""

    def __init__(self, app: web.Application, rejections: Rejections, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE)
        kwargs.setdefault("max_field_size", MAX_HEADER_LINE)
        super().__init__(app, **kwargs)
        self.rejections = rejections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _GuardedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            rejections=self.rejections,
            **self._kwargs,
        )


__all__ = ["GuardedAppRunner", "Rejections", "classify"]
