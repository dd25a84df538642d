"""The agent worker's connection to LiveKit: the WebSocket at ``<LIVEKIT_URL>/agent``, the
registration on it, and registering again when it drops (bridge/service/agent_worker.py).

What arrives is handed to a ``SocketHandler`` (the job book, bridge/service/agent_jobs.py); the
answer to an offer is sent straight back (LiveKit waits for it), everything else through a
bounded outbox. A failed connection is retried with exponential backoff and jitter; each failure
is one line naming the URL and what went wrong (refused key or secret, connection refused, ...).
While LiveKit refuses our key or secret, attempts are at least ``REFUSED_RETRY`` apart: no quick
retry cures that. Quick retries of the same failure (under ``QUIET_BELOW`` seconds apart) are
logged at debug level, so a dropped connection costs a line, not a burst of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from datetime import timedelta
from typing import Any, Protocol

import aiohttp
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent as lkagent

from bridge import __version__
from bridge.aio import TaskSet, cancel_and_wait, wait_in_loop
from bridge.logs import network_reason, one_line
from bridge.metrics import AGENT_OFFER_SECONDS, AGENT_REGISTERED, AGENT_REGISTRATIONS
from bridge.service.livekit_api import refused
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)

AGENT_PATH = "/agent"
TOKEN_TTL = timedelta(minutes=10)
BACKOFF_INITIAL = 0.5
# A registration that lasted this long resets the backoff.
STABLE_SECONDS = 30.0
# While LiveKit refuses our key or secret, attempts are at least this far apart.
REFUSED_RETRY = 30.0
# A repeated failure retried sooner than this is logged at debug level.
QUIET_BELOW = 5.0
HEARTBEAT = 15.0
MAX_MESSAGE_BYTES = 1 << 20
OUTBOX_SIZE = 1024
ANSWER_SAMPLES = 2048


class ProtocolError(Exception):
    """The server broke the protocol (e.g. no register answer): reconnect."""


class SocketHandler(Protocol):
    """What the connection tells the job book."""

    def handle_frame(self, data: bytes) -> lkagent.WorkerMessage | None: ...

    def registered(self) -> None: ...

    def disconnected(self) -> None: ...


def agent_socket_url(settings: Settings) -> str:
    url = settings.livekit_url
    if url.startswith("http://"):
        url = "ws://" + url.removeprefix("http://")
    elif url.startswith("https://"):
        url = "wss://" + url.removeprefix("https://")
    return url + AGENT_PATH


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def failure(settings: Settings, exc: BaseException) -> tuple[str, bool]:
    """(one line saying why a connection or registration failed, LiveKit refused who we are)."""
    url = agent_socket_url(settings)
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status in (401, 403):
        return refused(url, settings.livekit_api_key or "", f"HTTP {exc.status}"), True
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"LiveKit at {url} answered HTTP {exc.status} instead of a WebSocket", False
    if isinstance(exc, TimeoutError):
        seconds = settings.agent_dispatch_timeout
        return f"LiveKit at {url}: no answer in {seconds:g} s", False
    if isinstance(exc, ProtocolError):
        return f"LiveKit at {url}: {exc}", False
    reason = network_reason(exc) or one_line(str(exc) or type(exc).__name__, 160)
    return f"LiveKit at {url} unreachable: {reason} (LIVEKIT_URL)", False


class AgentSocket:
    """One registration with LiveKit at a time, for this ``serve`` instance (its parent)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handler: SocketHandler | None = None
        self._tasks = TaskSet("agent-socket")
        self._outbox: asyncio.Queue[lkagent.WorkerMessage] = asyncio.Queue(OUTBOX_SIZE)
        self._answer_seconds: deque[float] = deque(maxlen=ANSWER_SAMPLES)
        self.connected = False
        # Set by the handler when LiveKit asks us to go away: this connection ends after it.
        self.go_away = False
        self.state = "stopped"
        self.worker_id = ""
        self.last_error: str | None = None
        self.registrations = 0

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self, handler: SocketHandler) -> None:
        self._handler = handler
        self.state = "connecting"
        self._tasks.create_task(self._run(), name="connection")

    async def aclose(self) -> None:
        await self._tasks.aclose()
        self.state = "stopped"

    def describe(self) -> dict[str, Any]:
        """For /status (no secrets)."""
        answers = list(self._answer_seconds)
        return {
            "state": self.state,
            "worker_id": self.worker_id,
            "registrations": self.registrations,
            "last_error": self.last_error,
            "offer_answer_ms": {
                "count": len(answers),
                "p50": round(percentile(answers, 0.5) * 1000, 3) if answers else None,
                "p99": round(percentile(answers, 0.99) * 1000, 3) if answers else None,
            },
        }

    def send(self, message: lkagent.WorkerMessage) -> None:
        """Queue ``message`` for LiveKit (dropped while not registered)."""
        if not self.connected:
            return
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            logger.error("agent dispatch: outgoing queue full; a message to LiveKit was dropped")

    # ---- the connection loop --------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        previous: str | None = None
        async with aiohttp.ClientSession() as http:
            while True:
                began = time.monotonic()
                refusal = False
                try:
                    await self._session(http)
                    reason = f"LiveKit at {agent_socket_url(self.settings)} closed the connection"
                except (aiohttp.ClientError, TimeoutError, OSError, ProtocolError) as exc:
                    reason, refusal = failure(self.settings, exc)
                finally:
                    self._disconnected()
                if self.state == "registered" and time.monotonic() - began > STABLE_SECONDS:
                    attempt = 0
                self.state = "disconnected"
                self.last_error = reason
                ceiling = min(self.settings.agent_reconnect_max, BACKOFF_INITIAL * 2**attempt)
                delay = random.uniform(ceiling / 2, ceiling)  # jitter: replicas spread out
                if refusal:
                    delay = max(delay, REFUSED_RETRY * random.uniform(1.0, 1.2))
                attempt = min(attempt + 1, 16)
                quiet = reason == previous and delay < QUIET_BELOW
                logger.log(
                    logging.DEBUG if quiet else logging.WARNING,
                    "agent dispatch: not registered: %s; retrying in %.1f s",
                    reason,
                    delay,
                )
                previous = reason
                await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """The backoff's wait (the reconnect test replaces it to see the delays)."""
        await asyncio.sleep(seconds)

    def _token(self) -> str:
        settings = self.settings
        assert settings.livekit_api_key and settings.livekit_api_secret
        return (
            api.AccessToken(
                settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()
            )
            .with_grants(api.VideoGrants(agent=True))
            .with_ttl(TOKEN_TTL)
            .to_jwt()
        )

    async def _session(self, http: aiohttp.ClientSession) -> None:
        """One connection: register, then serve messages until it ends."""
        assert self._handler is not None
        timeout = self.settings.agent_dispatch_timeout
        self.state = "connecting"
        try:
            ws = await asyncio.wait_for(
                http.ws_connect(
                    agent_socket_url(self.settings),
                    headers={"Authorization": f"Bearer {self._token()}"},
                    heartbeat=HEARTBEAT,
                    max_msg_size=MAX_MESSAGE_BYTES,
                ),
                timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError):
            AGENT_REGISTRATIONS.labels("failed").inc()
            raise
        sender: asyncio.Task[None] | None = None
        try:
            await self._register(ws, timeout)
            self.connected = True
            self.go_away = False
            sender = asyncio.get_running_loop().create_task(self._send_loop(ws), name="sender")
            self._handler.registered()
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    received = time.perf_counter()
                    answer = self._handler.handle_frame(message.data)
                    if answer is not None:
                        # Straight from here (no queue hop): LiveKit waits for it.
                        await wait_in_loop(ws.send_bytes(answer.SerializeToString()), timeout)
                        self._answered(time.perf_counter() - received)
                    if self.go_away:
                        break
                elif message.type == aiohttp.WSMsgType.TEXT:
                    logger.warning("agent dispatch: ignoring a text frame from LiveKit")
                else:  # closing or error: the iterator ends
                    break
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                raise ProtocolError(f"sending failed: {sender.exception()}")
        finally:
            await cancel_and_wait(sender)
            await ws.close()

    async def _register(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> None:
        request = lkagent.WorkerMessage(
            register=lkagent.RegisterWorkerRequest(
                type=lkagent.JT_ROOM,
                agent_name=self.settings.agent_name,
                version=__version__,
            )
        )
        try:
            async with asyncio.timeout(timeout):
                await ws.send_bytes(request.SerializeToString())
                answer = await self._register_answer(ws)
        except (ProtocolError, aiohttp.ClientError, TimeoutError, OSError):
            AGENT_REGISTRATIONS.labels("failed").inc()
            raise
        self.worker_id = answer.worker_id
        self.state = "registered"
        self.last_error = None
        self.registrations += 1
        AGENT_REGISTERED.set(1)
        AGENT_REGISTRATIONS.labels("ok").inc()
        logger.info(
            "agent dispatch: registered with LiveKit as worker %s for agent %r",
            self.worker_id,
            self.settings.agent_name,
        )

    async def _register_answer(
        self, ws: aiohttp.ClientWebSocketResponse
    ) -> lkagent.RegisterWorkerResponse:
        """The server's answer to our register request (only pongs may come before it)."""
        while True:
            frame = await ws.receive()
            if frame.type != aiohttp.WSMsgType.BINARY:
                raise ProtocolError(f"registration answered with a {frame.type.name} frame")
            try:
                answer = lkagent.ServerMessage.FromString(frame.data)
            except DecodeError:
                raise ProtocolError("registration answer is not a ServerMessage") from None
            kind = answer.WhichOneof("message")
            if kind == "register":
                return answer.register
            if kind != "pong":
                raise ProtocolError(f"registration answered with a {kind or 'empty'} message")

    def _disconnected(self) -> None:
        if self.connected:
            AGENT_REGISTERED.set(0)
        self.connected = False
        if self._handler is not None:
            self._handler.disconnected()
        while not self._outbox.empty():
            self._outbox.get_nowait()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        timeout = self.settings.agent_dispatch_timeout
        while True:
            message = await self._outbox.get()
            await wait_in_loop(ws.send_bytes(message.SerializeToString()), timeout)

    def _answered(self, seconds: float) -> None:
        self._answer_seconds.append(seconds)
        AGENT_OFFER_SECONDS.observe(seconds)


__all__ = ["AgentSocket", "ProtocolError", "SocketHandler", "agent_socket_url", "failure"]
