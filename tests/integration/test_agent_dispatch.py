"""LiveKit agent dispatch: ``serve`` registered as an agent worker with a real livekit-server,
dispatched by tokens (``RoomConfiguration.agents``) and ``CreateDispatch``, with the emulator and
SDK humans. No webhooks are configured here: every agent arrives through LiveKit's dispatcher
(or, where a test says so, through reconcile reading ``list_dispatch``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from livekit import api

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from tests.support.dispatch_harness import ServeProcess, agents_in, serve
from tests.support.room_harness import Human
from tests.support.tcp_proxy import TcpProxy

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


async def test_token_dispatch_brings_the_agent_with_its_settings_and_bad_input_is_survived(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    agent = name("ai")
    room, hostile, nobody = name("tok"), name("hostile"), name("nobody")
    known = set(emulator.emulator.calls)
    async with dispatch_serve(livekit_server, emulator, agent) as bridge:
        alice = Human(livekit_server, room, "alice")
        metadata = json.dumps({"voice": "coral", "instructions": "Speak like a pirate."})
        alice.room_config = api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=agent, metadata=metadata)]
        )
        await alice.join()
        try:
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=60)

            async def call_up() -> bool:
                return bool(set(emulator.emulator.calls) - known)

            await eventually(call_up, timeout=60)
            (new,) = set(emulator.emulator.calls) - known
            session = emulator.emulator.calls[new].model.session
            assert session["audio"]["output"]["voice"] == "coral"
            assert session["instructions"].startswith("Speak like a pirate.")
            status = await agent_status(bridge)
            assert status["offer_answer_ms"]["count"] == 1
            (job,) = status["jobs"].values()
            assert job == {"room": room, "running": True}
            ours = (await _participants(livekit_server, room))[f"room-bridge-{room}"]
            assert ours.attributes["lk.agent.name"] == agent

            # Hostile and oversized metadata: logged and ignored, the dispatch still stands.
            # A dispatch to a name nobody registered: LiveKit offers it to no one.
            async with people(livekit_server, hostile, nobody) as (mallory, _):
                bad = [
                    '{"openai_base_url": "http://198.51.100.7/v1", "voice": "coral"}',
                    "[" * 10_000,
                    json.dumps({"instructions": "x" * 70_000}),
                ]
                for metadata in bad:
                    await dispatch(livekit_server, hostile, agent, metadata)
                await dispatch(livekit_server, nobody, name("unknown-agent"))
                await mallory.wait_until(lambda: bool(mallory.agent_tracks()), timeout=60)
                await eventually(lambda: _jobs_running(bridge, 4))
                await asyncio.sleep(1.0)
                assert await agents_in(livekit_server, nobody) == []
                assert await agents_in(livekit_server, room) == [f"room-bridge-{room}"]
            log = bridge.output()
            assert "dispatch metadata ignored: openai_base_url: Extra inputs" in log
            assert "dispatch metadata ignored: not usable JSON" in log
            assert "dispatch metadata ignored: over 65536 characters" in log
        finally:
            await alice.leave()
        # The agent leaves after the grace; its jobs end with the room's life.
        await eventually(lambda: _jobs_in(bridge, {hostile}), timeout=20)
        metrics = (await bridge.get("/metrics")).text
        assert 'bridge_agent_offers_total{outcome="accepted"} 2.0' in metrics
        assert 'bridge_agent_offers_total{outcome="already"} 2.0' in metrics
        assert "bridge_agent_registered 1.0" in metrics
        assert (await bridge.get("/healthz")).status_code == 200


async def _participants(server: LiveKitServer, room: str) -> dict[str, api.ParticipantInfo]:
    async with server_api(server) as lkapi:
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    return {p.identity: p for p in listed.participants}


async def _jobs_in(bridge: ServeProcess, rooms: set[str]) -> bool:
    return {j["room"] for j in (await agent_status(bridge))["jobs"].values()} <= rooms


async def _jobs_running(bridge: ServeProcess, count: int) -> bool:
    jobs = (await agent_status(bridge))["jobs"].values()
    return sum(1 for j in jobs if j["running"]) == count


async def test_create_dispatch_overrides_the_policy_repeats_give_one_agent_delete_leaves(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    agent = name("ai")
    first, second = name("api"), name("keep")
    async with (
        dispatch_serve(livekit_server, emulator, agent, reconcile_interval="1") as bridge,
        people(livekit_server, first, second) as (alice, bob),
    ):
        await asyncio.sleep(1.5)  # reconcile passes: the policy excludes these rooms
        assert await agents_in(livekit_server, first) == []
        made = [await dispatch(livekit_server, first, agent) for _ in range(3)]
        await dispatch(livekit_server, second, agent)
        for person in (alice, bob):
            await person.wait_until(lambda p=person: bool(p.agent_tracks()), timeout=60)  # type: ignore[misc]
        await eventually(lambda: _jobs_running(bridge, 4))
        assert await agents_in(livekit_server, first) == [f"room-bridge-{first}"]
        assert len(alice.agent_tracks()) == 1
        # Deleting the dispatches takes the agent out of that room only, and reconcile does
        # not bring it back (no dispatch is listed any more).
        async with server_api(livekit_server) as lkapi:
            for made_one in made:
                await lkapi.agent_dispatch.delete_dispatch(made_one.id, first)
        await eventually(lambda: _absent(livekit_server, first), timeout=10)
        await asyncio.sleep(2.5)
        assert await agents_in(livekit_server, first) == []
        assert await agents_in(livekit_server, second) == [f"room-bridge-{second}"]
        await eventually(lambda: _served_is(bridge, {second}))
        metrics = (await bridge.get("/metrics")).text
        # One termination per job: LiveKit may end the acknowledged duplicate jobs too.
        left = re.search(r'bridge_agent_terminations_total\{outcome="left"\} ([0-9.]+)', metrics)
        assert left is not None and 1 <= float(left.group(1)) <= len(made)
        assert "terminated; leaving the room" in bridge.output()


async def _served_is(bridge: ServeProcess, rooms: set[str]) -> bool:
    return await served_by(bridge) == rooms


async def _absent(server: LiveKitServer, room: str) -> bool:
    return not await agents_in(server, room)


async def test_two_workers_share_rooms_by_load_heal_the_fifth_and_a_killed_ones(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    agent = name("ai")
    rooms = [name(f"r{i}") for i in range(5)]
    settings = {"max_sessions": "2", "reconcile_interval": "1"}
    async with (
        dispatch_serve(livekit_server, emulator, agent, **settings) as first,
        dispatch_serve(livekit_server, emulator, agent, **settings) as second,
        people(livekit_server, *rooms) as humans_,
    ):
        by_room = dict(zip(rooms, humans_, strict=True))
        for room in rooms[:4]:
            await dispatch(livekit_server, room, agent)
        for room in rooms[:4]:
            await eventually(functools.partial(has_agent, livekit_server, room))
        served = [await served_by(first), await served_by(second)]
        assert [len(s) for s in served] == [2, 2], served
        assert served[0] | served[1] == set(rooms[:4])

        # Both full: LiveKit drops the fifth job (nothing is queued). It offers none to a worker
        # that reported WS_FULL, so neither worker even saw an offer for it (an at_capacity
        # refusal only happens when an offer races our status update)...
        offered = [await _offers(first), await _offers(second)]
        assert [o["accepted"] for o in offered] == [2.0, 2.0], offered
        fifth = rooms[4]
        await dispatch(livekit_server, fifth, agent)
        await asyncio.sleep(2.0)
        assert await agents_in(livekit_server, fifth) == []
        assert [await _offers(first), await _offers(second)] == offered
        # ...and when a slot frees, reconcile finds the dispatch (list_dispatch) and joins.
        await _leave(humans_, by_room[sorted(served[0])[0]])
        await eventually(lambda: _serves(first, fifth), timeout=60)
        await eventually(functools.partial(has_agent, livekit_server, fifth))

        # The second worker's humans leave; then the first worker dies with SIGKILL. Its
        # dispatched rooms get their AI back from the second worker's reconcile.
        for room in served[1]:
            await _leave(humans_, by_room[room])
        await eventually(lambda: _serves_nothing(second), timeout=60)
        orphans = await served_by(first)
        children = [w["pid"] for w in (await first.status())["workers"]]
        first.proc.send_signal(signal.SIGKILL)
        for room in orphans:
            await eventually(lambda r=room: _serves(second, r), timeout=60)  # type: ignore[misc]
            await eventually(functools.partial(has_agent, livekit_server, room))
        # The killed parent's worker processes see their control pipe close and exit.
        await eventually(lambda: _gone(children), timeout=30)
    log = second.output()
    assert "LiveKit lists a dispatch to us" in log


async def _offers(bridge: ServeProcess) -> dict[str, float]:
    """The worker's job-offer counters: by outcome, and refusals by reason."""
    metrics = (await bridge.get("/metrics")).text
    found = re.findall(
        r'^bridge_agent_offers(?:_refused)?_total\{(?:outcome|reason)="(\w+)"\} ([0-9.]+)$',
        metrics,
        re.MULTILINE,
    )
    return {label: float(value) for label, value in found}


async def _leave(joined: list[Human], person: Human) -> None:
    joined.remove(person)
    await person.leave()


async def _serves(bridge: ServeProcess, room: str) -> bool:
    return room in await served_by(bridge)


async def _serves_nothing(bridge: ServeProcess) -> bool:
    return not await served_by(bridge)


async def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


async def test_workers_register_again_after_a_dropped_socket_and_a_livekit_restart(
    emulator: EmulatorServer,
) -> None:
    """serve reaches LiveKit through a proxy that can cut its /agent socket alone. After a drop
    LiveKit no longer knows which worker runs the old registration's job, so deleting its
    dispatch sends no termination: the bridge notices the dispatch is gone and leaves."""
    agent = name("ai")
    async with (
        LiveKitServer(LiveKitServerConfig()) as server,
        TcpProxy(server.config.port) as proxy,
        dispatch_serve(
            server, emulator, agent, livekit_url=proxy.url, reconcile_interval="1"
        ) as bridge,
    ):
        room = name("before")
        async with people(server, room, agent=agent) as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=60)
            async with server_api(server) as lkapi:
                listed = await lkapi.agent_dispatch.list_dispatch(room)
            (ours,) = [d for d in listed if d.agent_name == agent]
            assert proxy.cut("/agent") == 1
            await eventually(lambda: registered(bridge, times=2), timeout=30)
            assert await agents_in(server, room) == [f"room-bridge-{room}"]  # the room goes on
            async with server_api(server) as lkapi:
                await lkapi.agent_dispatch.delete_dispatch(ours.id, room)
            await eventually(lambda: _absent(server, room), timeout=15)
        assert "from an earlier registration" in bridge.output()
        metrics = (await bridge.get("/metrics")).text
        assert 'bridge_agent_terminations_total{outcome="orphan_left"} 1.0' in metrics

        await server.aclose()
        await eventually(lambda: _state_is(bridge, "disconnected"), timeout=10)
        await server.start()  # same ports, same keys
        await eventually(lambda: registered(bridge, times=3), timeout=30)
        room = name("after")
        async with people(server, room, agent=agent) as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=60)
        metrics = (await bridge.get("/metrics")).text
        assert 'bridge_agent_registrations_total{result="ok"} 3.0' in metrics


async def _state_is(bridge: ServeProcess, state: str) -> bool:
    return bool((await agent_status(bridge))["state"] == state)
