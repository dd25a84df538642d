"""Churn: ``--cycles`` humans join one room, get their model call and leave, ``--parallel`` at a
time, while another human keeps talking in the same room.

The bridge runs in a process of its own (tests/bench/churn_bridge.py), so what it holds is
measured alone: asyncio tasks, file descriptors, threads, live peer connections and RSS, after
``--warmup`` cycles and again at the end (once the churners' sessions are gone). The steady
human's session must keep its one call, no failure, and every turn answered. A real
livekit-server and the emulator (in this process) on loopback.

    python -m tests.bench.churn_bench [--cycles 300] [--parallel 3] [--warmup 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from functools import partial
from typing import Any

from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from bridge.processes import stop_process
from tests.env import EMULATOR_KEY, LOOPBACK_ENV, test_settings
from tests.room_harness import Human

STEADY = "steady"


class BridgeProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not raw:
            raise RuntimeError("bridge process ended")
        data: dict[str, Any] = json.loads(raw)
        return data

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return await self.line()


async def start_bridge(server: LiveKitServer, emulator: EmulatorServer, room: str) -> BridgeProcess:
    env = {
        **os.environ,
        **LOOPBACK_ENV,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "OPENAI_API_KEY": EMULATOR_KEY,
        "OPENAI_BASE_URL": emulator.base_url,
        "BRIDGE_EMPTY_ROOM_GRACE": "600",
        "BRIDGE_VIDEO_ENABLED": "false",
        "BRIDGE_MAX_SESSIONS": "16",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.churn_bridge",
        "--room",
        room,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    bridge = BridgeProcess(proc)
    await bridge.line()  # ready
    return bridge


def answered(human: Human) -> bool:
    return any(t.name == human.identity for t in human.agent_tracks())


async def churner(server: LiveKitServer, room: str, cycles: list[int], failed: list[int]) -> None:
    """Join, wait until the agent answers with a track for us (our call is up), leave."""
    while cycles:
        n = cycles.pop()
        human = Human(server, room, f"churn-{n}")
        try:
            await human.join()
            await human.wait_until(partial(answered, human), timeout=20)
        except TimeoutError:
            failed.append(n)
        finally:
            await human.leave()


async def talk(human: Human, stop: asyncio.Event) -> int:
    turns = 0
    while not stop.is_set():
        await human.say(1.0, freq=330, pause=3.0)
        turns += 1
    return turns


async def settle(bridge: BridgeProcess, timeout: float = 60) -> dict[str, Any]:
    """Stats once only the steady human's session is left."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await bridge.stats()
        if list(stats["sessions"]) == [STEADY] or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(1.0)


async def run(cycles: int, parallel: int, warmup: int) -> dict[str, Any]:
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY), chars_per_second=30.0)
    room = f"churn-{uuid.uuid4().hex[:6]}"
    async with (
        LiveKitServer(LiveKitServerConfig()) as server,
        EmulatorServer(test_settings(), options) as emulator,
    ):
        bridge = await start_bridge(server, emulator, room)
        steady = Human(server, room, STEADY)
        try:
            await steady.join()
            await steady.wait_until(lambda: bool(steady.agent_tracks()), timeout=30)
            stop = asyncio.Event()
            talking = asyncio.create_task(talk(steady, stop))
            failed: list[int] = []
            todo = list(range(warmup))
            await asyncio.gather(*(churner(server, room, todo, failed) for _ in range(parallel)))
            before = await settle(bridge)
            started = time.monotonic()
            todo = list(range(warmup, cycles))
            await asyncio.gather(*(churner(server, room, todo, failed) for _ in range(parallel)))
            elapsed = time.monotonic() - started
            after = await settle(bridge)
            stop.set()
            turns = await talking
            await asyncio.sleep(3.0)  # the last answer
            answers = len(steady.final_transcripts(f"room-bridge-{room}"))
            final = await bridge.stats()
        finally:
            await steady.leave()
            assert bridge.proc.stdin is not None
            bridge.proc.stdin.write(b"quit\n")
            await stop_process(bridge.proc, timeout=30)
    steady_session = final["sessions"].get(STEADY, {})
    growth = (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"] * 100
    return {
        "bench": "churn",
        "cycles": cycles,
        "parallel": parallel,
        "warmup_cycles": warmup,
        "cycles_per_minute": round((cycles - warmup) / elapsed * 60, 1),
        "churners_not_served_in_20s": len(failed),
        "after_warmup": {k: v for k, v in before.items() if k != "sessions"},
        "at_end": {k: v for k, v in after.items() if k != "sessions"},
        "rss_growth_pct": round(growth, 1),
        "steady_human": {
            "turns": turns,
            "answers": answers,
            "calls": steady_session.get("calls"),
            "failures": steady_session.get("failures"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.cycles, args.parallel, args.warmup))))


if __name__ == "__main__":
    main()
