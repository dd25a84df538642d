"""``room-bridge serve`` under faults: a worker process SIGKILLed with live rooms, and the
LiveKit server restarted under it.

Worker kill: ``serve --workers 2`` (its own process tree) bridges ``--rooms`` rooms, each with
one talking-ready human (microphone published). ``--kills`` times, the worker holding the most
rooms is SIGKILLed; measured is the time until every room it held has its agent back *and* a
new live model call for its human (target <= 5 s).

Each kill is broken down into phases (seconds after the SIGKILL): every room of the dead worker
assigned to another worker, a new agent in each room (the ghost gone), a new call for each, and
the dead worker restarted and ready.

LiveKit restart: with the rooms bridged, livekit-server is stopped and started again on the same
ports and keys. Meanwhile ``/healthz`` and ``/readyz`` are polled: every probe must be answered
(``/readyz`` may say 503 while LiveKit is away). Then the humans come back, and measured is the
time until every room has its agent and a call again.

Everything on 127.0.0.1; the emulator runs in this process.

    python -m tests.bench.serve_bench [--rooms 4] [--kills 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
from livekit import api
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from tests.bench.realtime_bench import _pct
from tests.support.dispatch_harness import ServeProcess, agents_in, serve
from tests.support.env import EMULATOR_KEY, test_settings
from tests.support.room_harness import Human


@contextlib.asynccontextmanager
async def one_human_each(server: LiveKitServer, rooms: list[str]) -> AsyncIterator[list[Human]]:
    people = [Human(server, room, f"human-{i}") for i, room in enumerate(rooms)]
    try:
        for person in people:
            await person.join()
        yield people
    finally:
        for person in people:
            with contextlib.suppress(Exception):
                await person.leave()


def live_calls(emulator: EmulatorServer) -> set[str]:
    return {c.id for c in emulator.emulator.calls.values() if c.state == "active"}


async def served(
    server: LiveKitServer, emulator: EmulatorServer, rooms: list[str], before: set[str]
) -> bool:
    """Every room has exactly its agent, and there are as many new live calls as rooms."""
    for room in rooms:
        if len(await agents_in(server, room)) != 1:
            return False
    return len(live_calls(emulator) - before) >= len(rooms)


async def wait_served(
    server: LiveKitServer,
    emulator: EmulatorServer,
    rooms: list[str],
    before: set[str],
    timeout: float = 60.0,
) -> float:
    started = time.monotonic()
    while not await served(server, emulator, rooms, before):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"rooms not served again within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def agent_sids(server: LiveKitServer, room: str) -> list[str]:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    return [p.sid for p in listed.participants if p.identity.startswith("room-bridge-")]


async def phases_after_kill(
    server: LiveKitServer,
    emulator: EmulatorServer,
    bridge: ServeProcess,
    *,
    victim: dict[str, Any],
    ghosts: dict[str, list[str]],
    before: set[str],
    killed: float,
    timeout: float = 60.0,
) -> dict[str, float]:
    """Seconds from the SIGKILL until: the service re-assigned every room of the dead worker to
    another worker (``rehomed``), LiveKit lists exactly one agent in each, a new participant
    (the ghost gone: ``agent_in_room``), each has a new live call (``call_up``), and the dead
    worker is running again and ready (``worker_restarted``)."""
    rooms = list(ghosts)
    seen: dict[str, float] = {}
    while len(seen) < 4:
        if time.monotonic() - killed > timeout:
            raise TimeoutError(f"rooms not served again within {timeout} s: {seen}")
        # Each phase is timed when it was seen (the checks take a while on a loaded machine).
        if "call_up" not in seen and len(live_calls(emulator) - before) >= len(rooms):
            seen["call_up"] = time.monotonic() - killed
        try:
            workers = (await bridge.status())["workers"]
        except httpx.HTTPError:  # a loaded machine: ask again
            continue
        now = time.monotonic() - killed
        others = [w for w in workers if w["index"] != victim["index"]]
        (again,) = [w for w in workers if w["index"] == victim["index"]]
        # Another worker, or the dead one's replacement (a new process), took every room.
        homes = others if again["pid"] == victim["pid"] else [*others, again]
        if "rehomed" not in seen and all(
            any(r in w["rooms"] or r in w["joining"] for w in homes) for r in rooms
        ):
            seen["rehomed"] = now
        if "worker_restarted" not in seen and again["pid"] != victim["pid"] and again["ready"]:
            seen["worker_restarted"] = now
        if "agent_in_room" not in seen:
            sids = {r: await agent_sids(server, r) for r in rooms}
            if all(len(s) == 1 and s != ghosts[r] for r, s in sids.items()):
                seen["agent_in_room"] = time.monotonic() - killed
        await asyncio.sleep(0.02)
    return seen


async def settled(server: LiveKitServer, emulator: EmulatorServer, rooms: list[str]) -> None:
    """Every room has exactly one agent and there is a live call per room (a killed worker's
    calls linger in the emulator), for 1 s."""
    calm_since: float | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ok = len(live_calls(emulator)) >= len(rooms)
        for room in rooms:
            ok = ok and len(await agent_sids(server, room)) == 1
        if not ok:
            calm_since = None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= 1.0:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("rooms did not settle")


async def kill_workers(
    server: LiveKitServer,
    emulator: EmulatorServer,
    bridge: ServeProcess,
    kills: int,
    all_rooms: list[str],
) -> dict[str, Any]:
    recoveries: list[float] = []
    phases: list[dict[str, float]] = []
    for _ in range(kills):
        await settled(server, emulator, all_rooms)
        workers = (await bridge.status())["workers"]
        victim = max(workers, key=lambda w: len(w["rooms"]))
        rooms = list(victim["rooms"])
        ghosts = {room: await agent_sids(server, room) for room in rooms}
        before = live_calls(emulator)
        killed = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        seen = await phases_after_kill(
            server, emulator, bridge, victim=victim, ghosts=ghosts, before=before, killed=killed
        )
        phases.append({k: round(v, 2) for k, v in seen.items()})
        recoveries.append(max(seen["agent_in_room"], seen["call_up"]))
        await bridge.wait_healthy()  # both workers up before the next kill
    return {
        "kills": kills,
        "rooms_per_kill": len(rooms),
        "agent_and_call_back_s": {
            "p50": _pct(recoveries, 0.5),
            "max": max(recoveries),
            "all": [round(r, 2) for r in recoveries],
        },
        "phases_s": phases,
        "target_s": 5.0,
    }


async def probe(bridge: ServeProcess, stop: asyncio.Event, seen: Counter[str]) -> None:
    async with httpx.AsyncClient(timeout=2.0) as client:
        while not stop.is_set():
            for path in ("/healthz", "/readyz"):
                try:
                    response = await client.get(bridge.url + path)
                    seen[f"{path} {response.status_code}"] += 1
                except httpx.HTTPError as exc:
                    seen[f"{path} {type(exc).__name__}"] += 1
            await asyncio.sleep(0.1)


async def run(room_count: int, kills: int) -> dict[str, Any]:
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
    config = LiveKitServerConfig(empty_timeout=2, departure_timeout=1)
    server = LiveKitServer(config)
    await server.start()
    try:
        async with EmulatorServer(test_settings(), options) as emulator:
            rooms = [f"serve-{uuid.uuid4().hex[:6]}-{i}" for i in range(room_count)]
            async with serve(
                server,
                emulator,
                workers=2,
                reconcile_interval="2",
                max_sessions=str(2 * room_count),
                empty_room_grace="30",
                log_level="WARNING",
            ) as bridge:
                result: dict[str, Any] = {"bench": "serve_faults", "rooms": room_count}
                async with one_human_each(server, rooms):
                    first = await wait_served(server, emulator, rooms, set())
                    result["first_served_s"] = round(first, 2)
                    result["worker_kill"] = await kill_workers(
                        server, emulator, bridge, kills, rooms
                    )
                # LiveKit goes away under the running service and comes back.
                seen: Counter[str] = Counter()
                stop = asyncio.Event()
                probing = asyncio.create_task(probe(bridge, stop, seen))
                try:
                    await server.aclose()
                    down = time.monotonic()
                    await asyncio.sleep(3.0)
                    server = LiveKitServer(config)  # same ports and keys
                    await server.start()
                    restart = time.monotonic() - down
                    before = live_calls(emulator)
                    async with one_human_each(server, rooms):
                        back = await wait_served(server, emulator, rooms, before, timeout=90)
                finally:
                    stop.set()
                    await probing
                result["livekit_restart"] = {
                    "down_s": round(restart, 2),
                    "probes": dict(seen),
                    "probes_unanswered": sum(v for k, v in seen.items() if "Error" in k),
                    "humans_back_to_agent_and_call_s": round(back, 2),
                    "reconcile_interval_s": 2.0,
                }
                result["serve_alive"] = bridge.proc.returncode is None
    finally:
        await server.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rooms, args.kills))))


if __name__ == "__main__":
    main()
