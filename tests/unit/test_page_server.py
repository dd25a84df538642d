"""The dev page's server: the page, and tokens for visitors (bad input gets a one-line error)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from livekit import api

from bridge.local.page_server import PageServer, Room

SECRET = "s" * 40


@pytest_asyncio.fixture
async def page() -> AsyncIterator[PageServer]:
    room = Room(
        livekit_url="ws://127.0.0.1:7880",
        api_key="APIkey",
        api_secret=SECRET,
        name="demo",
        agent_identity="room-bridge-demo",
        model="emulator",
        model_label="local emulator",
        audience="room",
        agent_name="helper",
    )
    async with PageServer(room, port=0) as server:
        yield server


async def test_serves_the_page_and_its_assets(page: PageServer) -> None:
    async with httpx.AsyncClient(base_url=page.url, timeout=5) as client:
        index = await client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert 'src="page.js"' in index.text
        script = await client.get("/page.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/page.css")).status_code == 200
        assert (await client.get("/secret.txt")).status_code == 404


async def test_a_token_for_a_fresh_identity_in_the_dev_room(page: PageServer) -> None:
    async with httpx.AsyncClient(base_url=page.url, timeout=5) as client:
        first = (await client.post("/token", json={"name": "  Ada   Lovelace "})).json()
        second = (await client.post("/token", json={"name": "Ada Lovelace"})).json()
    assert first["identity"] != second["identity"]
    assert first["identity"].startswith("ada-lovelace-")
    assert (first["url"], first["room"], first["model"]) == (
        "ws://127.0.0.1:7880",
        "demo",
        "emulator",
    )
    claims = api.TokenVerifier("APIkey", SECRET).verify(first["token"])
    assert claims.identity == first["identity"]
    assert claims.name == "Ada Lovelace"
    assert claims.video is not None
    assert (claims.video.room, claims.video.room_join) == ("demo", True)
    # Joining asks LiveKit to dispatch the agent by name (the path production uses).
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == ["helper"]
    assert SECRET not in str(first)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": ""}, 400, "type a name first"),
        ({"name": "x" * 41}, 400, "at most 40 characters"),
        ({"name": "a\u0000b"}, 400, "printable"),
        ({"name": 3}, 400, "must be a string"),
        ([1, 2], 400, "JSON object"),
    ],
)
async def test_bad_names_get_one_line_errors(
    page: PageServer, body: object, status: int, message: str
) -> None:
    async with httpx.AsyncClient(base_url=page.url, timeout=5) as client:
        response = await client.post("/token", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


async def test_not_json_and_foreign_hosts_are_refused(page: PageServer) -> None:
    async with httpx.AsyncClient(base_url=page.url, timeout=5) as client:
        assert (await client.post("/token", content=b"name=x")).status_code == 415
        broken = await client.post(
            "/token", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 400
        assert "not JSON" in broken.json()["error"]
        huge = await client.post(
            "/token", content=b" " * 10_000, headers={"Content-Type": "application/json"}
        )
        assert huge.status_code == 413
        # DNS rebinding: a page of another site that resolves to 127.0.0.1 gets nothing.
        rebound = await client.post(
            "/token", json={"name": "x"}, headers={"Host": f"evil.example:{page.port}"}
        )
        assert rebound.status_code == 421


async def test_a_taken_port_falls_back_to_a_free_one(page: PageServer) -> None:
    room = Room(
        "ws://127.0.0.1:1", "k", SECRET, "demo", "room-bridge-demo", "emulator", "x", "room"
    )
    async with PageServer(room, port=page.port) as second:
        assert second.port not in (0, page.port)
        async with httpx.AsyncClient(base_url=second.url, timeout=5) as client:
            assert (await client.get("/")).status_code == 200
