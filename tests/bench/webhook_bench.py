"""Webhook load: ``room-bridge serve`` (its own process, one worker) takes ``--deliveries``
webhooks on loopback from ``--senders`` concurrent senders, mixing valid, repeated, forged,
altered and oversized deliveries, and must answer every one without a 5xx, without crashing, and
end with exactly one agent in each eligible room (rooms with a human) and none elsewhere.

Reports the response status counts, response time p50/p99 (client side), and the RSS of the
serve process tree before and after. Everything stays on 127.0.0.1.

    python -m tests.bench.webhook_bench [--deliveries 2000] [--senders 16] [--rooms 8]

``--burst N``: instead, how long a human waits for the agent (their connect to the agent in the
room, LiveKit's own webhooks) right after N signed ``room_started`` events for empty rooms hit an
idle pod at once, against the same wait with no burst, alternating, ``--repeats`` times each.

    python -m tests.bench.webhook_bench --burst 50 [--repeats 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from tests.bench.realtime_bench import _pct
from tests.support.dispatch_harness import (
    ServeProcess,
    agents_in,
    listeners,
    livekit_with_webhooks,
    participant_joined,
    room_started,
    serve,
    signed_webhook,
)
from tests.support.env import EMULATOR_KEY, test_settings
from tests.support.room_harness import humans

KINDS = ("valid", "repeated", "forged", "altered", "oversized")


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its children (the serve HTTP process and its workers)."""
    total = 0.0
    pids = [pid]
    children = f"/proc/{pid}/task/{pid}/children"
    if os.path.exists(children):
        with open(children) as fh:
            pids += [int(p) for p in fh.read().split()]
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except FileNotFoundError:
            continue
    return round(total, 1)


def delivery(
    server: LiveKitServer, kind: str, rooms: list[str], n: int, seen: list[str]
) -> tuple[bytes, dict[str, str]]:
    """One delivery of ``kind``; valid ones name an eligible room (half) or a room nobody is in
    (half: eligible by name, but no human, so no join)."""
    room = rooms[(n // 2) % len(rooms)] if n % 2 else f"empty-{n % 50}"
    if kind == "repeated" and seen:
        event_id = random.choice(seen)
    else:
        event_id = f"EV_{uuid.uuid4().hex}"
        seen.append(event_id)
    event = participant_joined(room, f"human-{n}", event_id=event_id)
    if kind == "forged":
        return signed_webhook(server, event, secret="forged-secret-" * 3)
    body, headers = signed_webhook(server, event)
    if kind == "altered":
        return body.replace(b"human-", b"mallory-"), headers
    if kind == "oversized":
        return b'{"event": "participant_joined", "pad": "' + b"x" * 70_000 + b'"}', headers
    return body, headers


async def sender(
    client: httpx.AsyncClient,
    bridge: ServeProcess,
    jobs: list[tuple[bytes, dict[str, str]]],
    statuses: Counter[str],
    times: list[float],
) -> None:
    while jobs:
        body, headers = jobs.pop()
        started = time.perf_counter()
        try:
            response = await client.post(bridge.url + "/webhook", content=body, headers=headers)
            statuses[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1
        times.append(time.perf_counter() - started)


async def run(deliveries: int, senders: int, room_count: int) -> dict[str, Any]:
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
    async with (
        LiveKitServer(LiveKitServerConfig()) as server,
        EmulatorServer(test_settings(), options) as emulator,
        serve(
            server,
            emulator,
            reconcile_interval="600",
            max_sessions="64",
            empty_room_grace="600",
            log_level="WARNING",
        ) as bridge,
    ):
        rooms = [f"hook-{uuid.uuid4().hex[:6]}-{i}" for i in range(room_count)]
        people = [f"h{i}" for i in range(room_count)]
        # One human per eligible room, without a microphone (no model call needed to count
        # agents); joined one by one through the harness.
        async with one_human_each(server, rooms, people):
            rss_before = tree_rss_mb(bridge.proc.pid)
            seen: list[str] = []
            kinds = itertools.cycle(KINDS)
            jobs = [delivery(server, next(kinds), rooms, n, seen) for n in range(deliveries)]
            random.shuffle(jobs)
            statuses: Counter[str] = Counter()
            times: list[float] = []
            started = time.monotonic()
            limits = httpx.Limits(max_connections=senders)
            async with httpx.AsyncClient(timeout=10, limits=limits) as client:
                await asyncio.gather(
                    *(sender(client, bridge, jobs, statuses, times) for _ in range(senders))
                )
            elapsed = time.monotonic() - started
            # Joins run in the background: wait until every eligible room has its agent.
            agents: dict[str, list[str]] = {}

            async def all_joined() -> bool:
                for room in rooms:
                    agents[room] = await agents_in(server, room)
                return all(len(a) == 1 for a in agents.values())

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if await all_joined():
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)  # any late duplicate join would show by now
            await all_joined()
            empties = [await agents_in(server, f"empty-{i}") for i in range(50)]
            rss_after = tree_rss_mb(bridge.proc.pid)
            healthy = (await bridge.get("/healthz")).status_code
            alive = bridge.proc.returncode is None
    ms = [t * 1000 for t in times]
    return {
        "bench": "webhooks",
        "deliveries": deliveries,
        "senders": senders,
        "statuses": dict(statuses),
        "server_errors_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
        "per_second": round(deliveries / elapsed, 1),
        "response_ms": {"p50": _pct(ms, 0.5), "p99": _pct(ms, 0.99), "max": max(ms)},
        "eligible_rooms": room_count,
        "rooms_with_exactly_one_agent": sum(len(a) == 1 for a in agents.values()),
        "agents_in_rooms_without_humans": sum(len(a) for a in empties),
        "serve_rss_mb": {"before": rss_before, "after": rss_after},
        "serve_alive": alive,
        "healthz": healthy,
    }


@contextlib.asynccontextmanager
async def one_human_each(
    server: LiveKitServer, rooms: list[str], people: list[str]
) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for room, person in zip(rooms, people, strict=True):
            await stack.enter_async_context(humans(server, room, person, publish_mic=False))
        yield


async def agent_wait(server: LiveKitServer, room: str) -> float:
    """Seconds from a human's connect to the agent being in the room."""
    async with humans(server, room, "alice", publish_mic=False):
        started = time.perf_counter()
        while not await agents_in(server, room):
            if time.perf_counter() - started > 30:
                raise TimeoutError(f"no agent in {room}")
            await asyncio.sleep(0.01)
        return time.perf_counter() - started


async def run_burst(burst: int, repeats: int) -> dict[str, Any]:
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
    waits: dict[str, list[float]] = {"quiet": [], "after_burst": []}
    statuses: Counter[str] = Counter()
    async with (
        listeners() as (listener,),
        livekit_with_webhooks(listener) as server,
        EmulatorServer(test_settings(), options) as emulator,
        serve(
            server,
            emulator,
            listener=listener,
            reconcile_interval="600",
            max_sessions="8",
            empty_room_grace="0",
            log_level="WARNING",
        ) as bridge,
        httpx.AsyncClient(timeout=10) as client,
    ):
        for n in range(repeats * 2):
            tag = uuid.uuid4().hex[:6]
            kind = "after_burst" if n % 2 else "quiet"
            if kind == "after_burst":
                deliveries = [
                    signed_webhook(server, room_started(f"empty-{tag}-{i}", event_id=f"E{tag}{i}"))
                    for i in range(burst)
                ]
                answers = await asyncio.gather(
                    *(
                        client.post(bridge.url + "/webhook", content=b, headers=h)
                        for b, h in deliveries
                    )
                )
                statuses.update(str(r.status_code) for r in answers)
            waits[kind].append(await agent_wait(server, f"real-{tag}"))
            await asyncio.sleep(1.0)  # the agent leaves the empty room before the next trial
    ms = {k: [t * 1000 for t in v] for k, v in waits.items()}
    return {
        "bench": "webhook_burst",
        "burst": burst,
        "repeats": repeats,
        "burst_statuses": dict(statuses),
        "agent_wait_ms": {
            k: {"p50": round(_pct(v, 0.5), 1), "max": round(max(v), 1)} for k, v in ms.items()
        },
        "p50_ratio_after_burst": round(_pct(ms["after_burst"], 0.5) / _pct(ms["quiet"], 0.5), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    if args.burst:
        print(json.dumps(asyncio.run(run_burst(args.burst, args.repeats))))
        return
    print(json.dumps(asyncio.run(run(args.deliveries, args.senders, args.rooms))))


if __name__ == "__main__":
    main()
