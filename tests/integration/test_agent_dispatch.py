"""LiveKit agent dispatch: ``serve`` registered as an agent worker with a real livekit-server,
dispatched by tokens (``RoomConfiguration.agents``) and ``CreateDispatch``, with the emulator and
SDK humans. No webhooks are configured here: every agent arrives through LiveKit's dispatcher
(or, where a test says so, through reconcile reading ``list_dispatch``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from livekit import api

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from tests.dispatch_harness import ServeProcess, agents_in, serve
from tests.room_harness import Human

pytestmark = pytest.mark.timeout(150)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def server_api(server: LiveKitServer) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
        yield lkapi


async def dispatch(
    server: LiveKitServer, room: str, agent: str, metadata: str = ""
) -> api.AgentDispatch:
    async with server_api(server) as lkapi:
        return await lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent, room=room, metadata=metadata)
        )


async def agent_status(bridge: ServeProcess) -> dict[str, Any]:
    status: dict[str, Any] = (await bridge.status())["agent_dispatch"]
    return status


async def registered(bridge: ServeProcess, times: int = 1) -> bool:
    status = await agent_status(bridge)
    return bool(status["state"] == "registered" and status["registrations"] >= times)


async def has_agent(server: LiveKitServer, room: str) -> bool:
    return bool(await agents_in(server, room))


async def served_by(bridge: ServeProcess) -> set[str]:
    return set((await bridge.status())["rooms"])


@contextlib.asynccontextmanager
async def dispatch_serve(
    server: LiveKitServer, emulator: EmulatorServer, agent: str, **settings: str
) -> AsyncIterator[ServeProcess]:
    """serve as an agent worker named ``agent``; webhooks and reconcile leave rooms alone unless
    a test says otherwise (``rooms = pattern`` that matches nothing)."""
    options: dict[str, Any] = {
        "agent_name": agent,
        "rooms": "pattern",
        "room_patterns": "never-*",
        "reconcile_interval": "600",
        **settings,
    }
    async with serve(server, emulator, **options) as bridge:
        await eventually(lambda: registered(bridge))
        yield bridge


@contextlib.asynccontextmanager
async def people(server: LiveKitServer, *rooms: str, agent: str = "") -> AsyncIterator[list[Human]]:
    """One human per room; with ``agent`` their tokens ask for it (token dispatch)."""
    joined = []
    try:
        for i, room in enumerate(rooms):
            person = Human(server, room, f"human-{i}")
            if agent:
                person.room_config = api.RoomConfiguration(
                    agents=[api.RoomAgentDispatch(agent_name=agent)]
                )
            await person.join()
            joined.append(person)
        yield joined
    finally:
        for person in joined:
            await person.leave()


async def test_token_dispatch_brings_the_agent_with_its_settings(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    agent = name("ai")
    room = name("tok")
    known = set(emulator.emulator.calls)
    async with dispatch_serve(livekit_server, emulator, agent) as bridge:
        alice = Human(livekit_server, room, "alice")
        metadata = json.dumps({"voice": "coral", "instructions": "Speak like a pirate."})
        alice.room_config = api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=agent, metadata=metadata)]
        )
        await alice.join()
        try:
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)

            async def call_up() -> bool:
                return bool(set(emulator.emulator.calls) - known)

            await eventually(call_up)
            (new,) = set(emulator.emulator.calls) - known
            session = emulator.emulator.calls[new].model.session
            assert session["audio"]["output"]["voice"] == "coral"
            assert session["instructions"] == "Speak like a pirate."
            status = await agent_status(bridge)
            assert status["offer_answer_ms"]["count"] == 1
            (job,) = status["jobs"].values()
            assert job == {"room": room, "running": True}
            participants = await _participants(livekit_server, room)
            ours = participants[f"room-bridge-{room}"]
            assert ours.attributes["lk.agent.name"] == agent
        finally:
            await alice.leave()
        # The agent leaves after the grace; the job ends with the room's life.
        await eventually(lambda: _no_jobs(bridge), timeout=20)
        metrics = (await bridge.get("/metrics")).text
        assert 'bridge_agent_offers_total{outcome="accepted"} 1.0' in metrics
        assert "bridge_agent_registered 1.0" in metrics


async def _participants(server: LiveKitServer, room: str) -> dict[str, api.ParticipantInfo]:
    async with server_api(server) as lkapi:
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    return {p.identity: p for p in listed.participants}


async def _no_jobs(bridge: ServeProcess) -> bool:
    return not (await agent_status(bridge))["jobs"]


async def test_create_dispatch_overrides_the_rooms_policy_and_repeats_give_one_agent(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    agent = name("ai")
    room = name("api")
    async with (
        dispatch_serve(livekit_server, emulator, agent) as bridge,
        people(livekit_server, room) as (alice,),
    ):
        await asyncio.sleep(1.0)
        assert await agents_in(livekit_server, room) == []  # the policy excludes this room
        for _ in range(3):
            await dispatch(livekit_server, room, agent)
        await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
        await eventually(lambda: _jobs_running(bridge, 3))
        assert await agents_in(livekit_server, room) == [f"room-bridge-{room}"]
        metrics = (await bridge.get("/metrics")).text
        assert 'bridge_agent_offers_total{outcome="accepted"} 1.0' in metrics
        assert 'bridge_agent_offers_total{outcome="already"} 2.0' in metrics
        assert len(alice.agent_tracks()) == 1


async def _jobs_running(bridge: ServeProcess, count: int) -> bool:
    jobs = (await agent_status(bridge))["jobs"].values()
    return sum(1 for j in jobs if j["running"]) == count


async def test_delete_dispatch_takes_the_agent_out_of_that_room_only(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    agent = name("ai")
    first, second = name("del"), name("keep")
    async with (
        dispatch_serve(livekit_server, emulator, agent, reconcile_interval="1") as bridge,
        people(livekit_server, first, second) as (alice, bob),
    ):
        gone = await dispatch(livekit_server, first, agent)
        await dispatch(livekit_server, second, agent)
        for person in (alice, bob):
            await person.wait_until(lambda p=person: bool(p.agent_tracks()), timeout=20)  # type: ignore[misc]
        async with server_api(livekit_server) as lkapi:
            await lkapi.agent_dispatch.delete_dispatch(gone.id, first)
        # The agent leaves by itself (LiveKit would remove it only after 3 s).
        await eventually(lambda: _absent(livekit_server, first), timeout=10)
        await asyncio.sleep(2.5)  # reconcile passes: the deleted dispatch does not bring it back
        assert await agents_in(livekit_server, first) == []
        assert await agents_in(livekit_server, second) == [f"room-bridge-{second}"]
        assert await served_by(bridge) == {second}
        metrics = (await bridge.get("/metrics")).text
        assert 'bridge_agent_terminations_total{outcome="left"} 1.0' in metrics


async def _absent(server: LiveKitServer, room: str) -> bool:
    return not await agents_in(server, room)
