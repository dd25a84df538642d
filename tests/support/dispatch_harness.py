"""``room-bridge serve`` as a real subprocess, with a livekit-server whose webhooks point at it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from google.protobuf.json_format import MessageToJson
from livekit import api
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from bridge.local.ports import loopback_listener
from bridge.processes import stop_process
from tests.support.env import EMULATOR_KEY, LOOPBACK_ENV


class ServeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._output = ""

    def output(self) -> str:
        if self.log.exists():
            self._output = self.log.read_text(errors="replace")
        return self._output

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.get(self.url + path)

    async def status(self) -> dict[str, Any]:
        response = await self.get("/status")
        data: dict[str, Any] = response.json()
        return data

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.get("/healthz")).status_code == 200:
                    status = await self.status()
                    if all(w["alive"] for w in status["workers"]):
                        return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"serve did not become healthy:\n{self.output()}")

    async def stop(self, timeout: float = 30.0) -> int:
        code, _ = await stop_process(self.proc, timeout=timeout)
        return code


def serve_env(
    server: LiveKitServer, emulator: EmulatorServer | str, **settings: str
) -> dict[str, str]:
    """``settings`` become ``BRIDGE_*`` variables; ``livekit_url`` (e.g. a proxy in front of
    ``server``) replaces the server's own URL. ``emulator``: in this process, or the base URL of
    one in another."""
    env = {
        **os.environ,
        **LOOPBACK_ENV,
        "LIVEKIT_URL": settings.pop("livekit_url", server.url),
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "OPENAI_API_KEY": EMULATOR_KEY,
        "OPENAI_BASE_URL": emulator if isinstance(emulator, str) else emulator.base_url,
        "BRIDGE_EMPTY_ROOM_GRACE": "1",
        "BRIDGE_RECONCILE_INTERVAL": "30",
        "BRIDGE_DRAIN_TIMEOUT": "5",
        "BRIDGE_VIDEO_ENABLED": "false",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({f"BRIDGE_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.asynccontextmanager
async def serve(
    server: LiveKitServer,
    emulator: EmulatorServer | str,
    *,
    listener: socket.socket | None = None,
    workers: int = 1,
    healthy: bool = True,
    extra_env: dict[str, str] | None = None,
    **settings: str,
) -> AsyncIterator[ServeProcess]:
    """``room-bridge serve`` on ``listener`` (a ``loopback_listener()`` whose port the caller
    already gave livekit-server for its webhooks), else on a fresh one: the socket is bound here
    and inherited (``--fd``), so no other process can take the port in between. ``healthy``:
    wait until it answers and its workers are up (else hand it over right after its start)."""
    own = listener is None
    sock = loopback_listener() if listener is None else listener
    port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="serve-") as tmp:
        log = Path(tmp) / "serve.log"
        try:
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bridge",
                    "serve",
                    "--fd",
                    str(sock.fileno()),
                    "--workers",
                    str(workers),
                    env={**serve_env(server, emulator, **settings), **(extra_env or {})},
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    pass_fds=(sock.fileno(),),
                )
        finally:
            if own:
                sock.close()
        process = ServeProcess(proc, port, log)
        try:
            if healthy:
                await process.wait_healthy()
            yield process
        finally:
            await process.stop()
            process.output()  # keep it after the directory goes


@contextlib.asynccontextmanager
async def livekit_with_webhooks(*listeners: socket.socket) -> AsyncIterator[LiveKitServer]:
    """A livekit-server whose webhooks go to the ``serve`` processes that will get these
    listeners."""
    urls = [f"http://127.0.0.1:{sock.getsockname()[1]}/webhook" for sock in listeners]
    async with LiveKitServer(LiveKitServerConfig(webhook_urls=urls)) as server:
        yield server


@contextlib.asynccontextmanager
async def listeners(count: int = 1) -> AsyncIterator[list[socket.socket]]:
    """``count`` loopback listeners for ``serve`` processes, closed on exit (async only to sit in
    one ``async with`` with the servers)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(loopback_listener()) for _ in range(count)]


def signed_webhook(
    server: LiveKitServer, event: WebhookEvent, *, secret: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A webhook delivery as LiveKit makes it: JSON body, JWT with the body's sha256."""
    body = MessageToJson(event).encode()
    token = sign(server, body, secret=secret)
    return body, {"Authorization": token, "Content-Type": "application/webhook+json"}


def sign(server: LiveKitServer, body: bytes, *, secret: str | None = None) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return api.AccessToken(server.api_key, secret or server.api_secret).with_sha256(digest).to_jwt()


def participant_joined(room: str, identity: str, *, event_id: str = "EV_test") -> WebhookEvent:
    event = WebhookEvent(event="participant_joined", id=event_id, created_at=int(time.time()))
    event.room.name = room
    event.participant.identity = identity
    event.participant.kind = models.ParticipantInfo.Kind.STANDARD
    return event


def room_started(room: str, *, participants: int = 0, event_id: str = "EV_started") -> WebhookEvent:
    event = WebhookEvent(event="room_started", id=event_id, created_at=int(time.time()))
    event.room.name = room
    event.room.sid = f"RM_{event_id}"
    event.room.num_participants = participants
    return event


async def agents_in(server: LiveKitServer, room: str) -> list[str]:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    return [p.identity for p in listed.participants if p.identity.startswith("room-bridge-")]
