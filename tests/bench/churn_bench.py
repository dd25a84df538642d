"""Churn: ``--cycles`` humans join one room, get their model call and leave, ``--parallel`` at a
time, while another human keeps talking in the same room.

The bridge runs in a process of its own (tests/bench/churn_bridge.py), so what it holds is
measured alone: asyncio tasks, file descriptors, threads, live peer connections and RSS, after
``--warmup`` cycles and again at the end (once the churners' sessions are gone). The steady
human's session must keep its one call, no failure, and every turn answered. A real
livekit-server and the emulator (a process of its own too: in this one its WebRTC work starved
the SDK humans) on loopback.

A human's ``room.disconnect()`` that takes over 10 s is counted (``slow_disconnects``), the
human is removed from the room through the server API so the room and the bridge see them go,
and the run goes on; the disconnect is awaited at the end. More than ``--max-slow`` of them end
the run with an error.

    python -m tests.bench.churn_bench [--cycles 300] [--parallel 3] [--warmup 20] [--max-slow 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from functools import partial
from typing import Any

from livekit import api

from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from bridge.processes import stop_process
from tests.support.emulator_process import EmulatorProcess, emulator_process
from tests.support.env import EMULATOR_KEY, LOOPBACK_ENV
from tests.support.room_harness import Human

STEADY = "steady"


class BridgeProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._asking = asyncio.Lock()  # one question on the pipe at a time

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not raw:
            raise RuntimeError("bridge process ended")
        data: dict[str, Any] = json.loads(raw)
        return data

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        async with self._asking:
            self.proc.stdin.write(b"stats\n")
            await self.proc.stdin.drain()
            return await self.line()


async def start_bridge(
    server: LiveKitServer, emulator: EmulatorProcess, room: str
) -> BridgeProcess:
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
    return human.answer_track() is not None


class Churn:
    """The churners' shared state: cycles left, and what went wrong along the way."""

    def __init__(self, server: LiveKitServer, room: str, max_slow: int) -> None:
        self.server = server
        self.room = room
        self.max_slow = max_slow
        self.todo: list[int] = []
        self.not_served: list[int] = []
        self.join_failed: list[str] = []  # the SDK's join (connect, publish) failed: why
        self.slow: list[Human] = []  # their disconnect took over 10 s (still running)
        self.done = 0

    async def churner(self) -> None:
        """Join, wait until the agent answers with a track for us (our call is up), leave."""
        while self.todo:
            n = self.todo.pop()
            human = Human(self.server, self.room, f"churn-{n}", listen=False)
            try:
                await human.join()
            except Exception as exc:  # the SDK's ConnectError, PublishTrackError, a timeout
                self.join_failed.append(f"{type(exc).__name__}: {exc}"[:200])
                if len(self.join_failed) > self.max_slow:
                    raise RuntimeError(f"more than {self.max_slow} failed joins") from exc
            else:
                try:
                    await human.wait_until(partial(answered, human), timeout=20)
                except TimeoutError:
                    self.not_served.append(n)
            finally:
                await self.leave(human)
                self.done += 1

    async def leave(self, human: Human) -> None:
        try:
            await human.leave()
        except TimeoutError:
            self.slow.append(human)
            if len(self.slow) > self.max_slow:
                raise RuntimeError(f"more than {self.max_slow} slow disconnects") from None
            server = self.server
            async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
                with contextlib.suppress(api.TwirpError):  # gone meanwhile
                    await lk.room.remove_participant(
                        api.RoomParticipantIdentity(room=self.room, identity=human.identity)
                    )

    async def run(self, cycles: range, parallel: int) -> None:
        self.todo = list(cycles)
        await asyncio.gather(*(self.churner() for _ in range(parallel)))

    async def stragglers(self, timeout: float = 60.0) -> int:
        """Wait (bounded) for the slow disconnects; how many are still not done."""
        pending = {h.disconnecting for h in self.slow if h.disconnecting is not None}
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(still)


async def talk(human: Human, stop: asyncio.Event) -> int:
    turns = 0
    while not stop.is_set():
        await human.say(1.0, freq=330, pause=3.0)
        turns += 1
    return turns


async def settle(bridge: BridgeProcess, timeout: float = 60) -> dict[str, Any]:
    """Stats once only the steady human's session is left and the ended sessions' calls are
    closed (aiortc closes a peer connection a moment after its session ended)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await bridge.stats()
        settled = list(stats["sessions"]) == [STEADY] and stats["peer_connections"] <= 1
        if settled or time.monotonic() > deadline:
            return {**stats, "settled": settled}
        await asyncio.sleep(1.0)


async def sample(bridge: BridgeProcess, churn: Churn, into: list[dict[str, Any]]) -> None:
    """The bridge's counts every 30 s while the churn runs (a trend, not only two points)."""
    while True:
        await asyncio.sleep(30)
        stats = await bridge.stats()
        into.append(
            {
                "cycles_done": churn.done,
                "sessions": len(stats["sessions"]),
                **{k: stats[k] for k in ("tasks", "fds", "threads", "peer_connections", "rss_mb")},
                "load": round(os.getloadavg()[0], 1),
                "threads_by_name": stats["threads_by_name"],
            }
        )
        print(json.dumps(into[-1]), file=sys.stderr, flush=True)


async def run(cycles: int, parallel: int, warmup: int, max_slow: int) -> dict[str, Any]:
    room = f"churn-{uuid.uuid4().hex[:6]}"
    load_before = os.getloadavg()
    final: dict[str, Any] | None = None
    unfinished = -1
    teardown_error = None
    try:
        async with (
            LiveKitServer(LiveKitServerConfig()) as server,
            emulator_process(
                EMULATOR_KEY, {"chars_per_second": 30.0}, log_level="ERROR"
            ) as emulator,
        ):
            bridge = await start_bridge(server, emulator, room)
            steady = Human(server, room, STEADY, listen=False)
            churn = Churn(server, room, max_slow)
            try:
                await steady.join()
                await steady.wait_until(lambda: bool(steady.agent_tracks()), timeout=30)
                stop = asyncio.Event()
                talking = asyncio.create_task(talk(steady, stop))
                samples: list[dict[str, Any]] = []
                sampling = asyncio.create_task(sample(bridge, churn, samples))
                try:
                    await churn.run(range(warmup), parallel)
                    before = await settle(bridge)
                    started = time.monotonic()
                    await churn.run(range(warmup, cycles), parallel)
                    elapsed = time.monotonic() - started
                finally:
                    sampling.cancel()
                    await asyncio.gather(sampling, return_exceptions=True)
                after = await settle(bridge)
                stop.set()
                turns = await talking
                await asyncio.sleep(3.0)  # the last answer
                answers = len(steady.final_transcripts(f"room-bridge-{room}"))
                final = await bridge.stats()
            finally:
                try:
                    unfinished = await churn.stragglers()
                    await steady.leave()
                finally:
                    assert bridge.proc.stdin is not None
                    bridge.proc.stdin.write(b"quit\n")
                    await stop_process(bridge.proc, timeout=30)
    except Exception as exc:  # a loaded machine can fail the teardown; keep what was measured
        if final is None:
            raise
        teardown_error = f"{type(exc).__name__}: {exc}"[:200]
    steady_session = final["sessions"].get(STEADY, {})
    growth = (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"] * 100
    return {
        "bench": "churn",
        "cycles": cycles,
        "parallel": parallel,
        "warmup_cycles": warmup,
        "load_average_at_start": [round(x, 1) for x in load_before],
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "cycles_per_minute": round((cycles - warmup) / elapsed * 60, 1),
        "churners_not_served_in_20s": len(churn.not_served),
        "joins_failed": churn.join_failed,
        "slow_disconnects": len(churn.slow),
        "slow_disconnects_unfinished_after_60s": unfinished,
        "teardown_error": teardown_error,
        "after_warmup": {k: v for k, v in before.items() if k != "sessions"},
        "at_end": {k: v for k, v in after.items() if k != "sessions"},
        "rss_growth_pct": round(growth, 1),
        "samples": samples,
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
    parser.add_argument("--max-slow", type=int, default=15)
    args = parser.parse_args()
    result = asyncio.run(run(args.cycles, args.parallel, args.warmup, args.max_slow))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
