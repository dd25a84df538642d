"""Webhook deliveries (body and headers) against the service's HTTP face on loopback.

Whatever arrives: never a 5xx other than 503 (``unavailable``: deliver elsewhere), always the
JSON ``{"outcome", "detail"}`` with a one-line detail, no traceback in the log, no secret in the
answer or the log, and the service still answers ``/healthz`` afterwards. Rooms are recorded
instead of joined (worker processes and LiveKit are out of scope here; the real path is in
tests/integration/test_dispatch.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from livekit import api
from pydantic import SecretStr

from bridge.service.local_rooms import RoomInfo
from bridge.service.server import BridgeServer
from bridge.settings.config import SessionOverrides, Settings
from tests.fuzz.strategies import (
    DISPATCH_TOKEN,
    LIVEKIT_SECRET,
    OPENAI_KEY,
    hostile_text,
    json_values,
    no_secret,
)

API_KEY = "APIfuzzkey"


class RecordedRooms:
    """The ``Rooms`` shape, recording joins."""

    def __init__(self) -> None:
        self.joined: list[str] = []

    @property
    def sessions(self) -> int:
        return 0

    def rooms(self) -> dict[str, RoomInfo]:
        return {}

    def has_room(self, room: str) -> bool:
        return room in self.joined

    async def join(self, room: str, overrides: SessionOverrides | None) -> str | None:
        self.joined.append(room)
        return None

    def leave(self, room: str) -> bool:
        return False


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    """The service's app on 127.0.0.1 (port 0), on its own loop in a thread; yields its URL."""
    settings = Settings(
        livekit_url="ws://127.0.0.1:9",
        livekit_api_key=API_KEY,
        livekit_api_secret=SecretStr(LIVEKIT_SECRET),
        openai_api_key=SecretStr(OPENAI_KEY),
        dispatch_token=SecretStr(DISPATCH_TOKEN),
        rooms="metadata",
        webhook_max_bytes=64 * 1024,
        agent_dispatch=False,  # no registration loop (its jitter draws from `random`)
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-service", daemon=True)
    thread.start()
    server = BridgeServer(settings, RecordedRooms())
    runner = web.AppRunner(server.app(), access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server.start()
        return int(runner.addresses[0][1])

    async def stop() -> None:
        await server.aclose()
        await runner.cleanup()

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def service_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the service (and its HTTP server) logged: the process also holds what earlier tests
    left running (the LiveKit SDK's native threads, tasks collected late), which may log any
    time."""
    return [r for r in caplog.records if r.name.split(".")[0] in ("bridge", "aiohttp")]


def signed(body: bytes, secret: str = LIVEKIT_SECRET) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return api.AccessToken(API_KEY, secret).with_sha256(digest).to_jwt()


event_json = st.fixed_dictionaries(
    {
        "event": st.sampled_from(
            ["room_started", "participant_joined", "room_finished", "track_published", ""]
        ),
        "id": st.text(max_size=30),
        "room": st.fixed_dictionaries(
            {
                "name": hostile_text,
                "sid": st.text(max_size=20),
                "metadata": st.one_of(hostile_text, json_values(8).map(json.dumps)),
            }
        ),
        "participant": st.fixed_dictionaries(
            {"identity": hostile_text, "kind": st.sampled_from(["STANDARD", "AGENT", "SIP", 7])}
        ),
    },
    optional={"createdAt": st.one_of(st.integers(), st.text(max_size=10)), "extra": json_values(6)},
).map(lambda e: json.dumps(e).encode())

bodies = st.one_of(
    event_json, st.binary(max_size=300), json_values().map(lambda v: json.dumps(v).encode())
)


printable = st.characters(min_codepoint=33, max_codepoint=126)


def headers_for(body: bytes, auth: str, content_type: str, junk: str) -> dict[str, str]:
    """Signed here, in the test, not in a strategy (tokens read the clock)."""
    headers = {"Content-Type": content_type}
    if auth == "valid":
        headers["Authorization"] = signed(body)
    elif auth == "bearer-valid":
        headers["Authorization"] = "Bearer " + signed(body)
    elif auth == "wrong-secret":
        headers["Authorization"] = signed(body, "not-the-secret-" + "x" * 20)
    elif auth == "other-body":
        headers["Authorization"] = signed(body + b" ")
    elif auth == "junk":
        headers["Authorization"] = junk
    return headers


deliveries = st.tuples(
    bodies,
    st.sampled_from(["valid", "wrong-secret", "other-body", "junk", "none", "bearer-valid"]),
    st.sampled_from(["application/webhook+json", "application/json", "text/plain", ""]),
    st.text(alphabet=printable, max_size=300),
)


@hyp_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delivery=deliveries)
def test_any_delivery_gets_one_clear_answer(
    service: str, caplog: pytest.LogCaptureFixture, delivery: tuple[bytes, str, str, str]
) -> None:
    body = delivery[0]
    headers = headers_for(*delivery)
    caplog.clear()
    with caplog.at_level(logging.INFO), httpx.Client(base_url=service, timeout=30) as client:
        response = client.post("/webhook", content=body, headers=headers)
        assert response.status_code < 500 or response.status_code == 503, response.text
        answer = response.json()
        assert set(answer) == {"outcome", "detail"}
        assert "\n" not in answer["detail"]
        assert no_secret(response.text)
        assert client.get("/healthz").status_code == 200
    for record in service_records(caplog):
        assert record.exc_info is None, record.getMessage()
        assert no_secret(record.getMessage())


def test_dispatch_bodies_nested_too_deep_are_a_400(
    service: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": f"Bearer {DISPATCH_TOKEN}", "Content-Type": "application/json"}
    with caplog.at_level(logging.INFO), httpx.Client(base_url=service, timeout=30) as client:
        for body in (b"[" * 60_000, b'{"room": ' + b"[" * 60_000):
            response = client.post("/dispatch", content=body, headers=headers)
            assert response.status_code == 400, response.text
        assert client.get("/healthz").status_code == 200
    assert all(record.exc_info is None for record in service_records(caplog))
