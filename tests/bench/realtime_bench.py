"""Model-side benchmark: RealtimeCall against the emulator (a separate process).

Prints JSON:
- connect: offer -> session.created, median and p95 over ``--calls`` sequential calls;
- cpu: client-process CPU seconds per call-second with ``--concurrent`` calls exchanging audio
  both ways for ``--seconds`` (the client speaks 1 s, pauses 1 s; the emulator answers), plus the
  emulator's own CPU for reference.

    python -m tests.bench.realtime_bench [--calls 20] [--concurrent 5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from pydantic import SecretStr

from bridge.realtime import RealtimeCall, build_session
from bridge.realtime.tracks import PcmAudioTrack
from tests.support.emulator_process import emulator_process
from tests.support.env import test_settings
from tests.support.signals import silence, tone
from tests.support.speaker import play

KEY = "sk-bench-0123456789"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_connect(base: str, calls: int) -> dict[str, Any]:
    settings = test_settings(openai_base_url=base, openai_api_key=SecretStr(KEY))
    times = []
    for _ in range(calls):
        async with RealtimeCall(settings, session=build_session(settings)) as call:
            assert call.connect_seconds is not None
            times.append(call.connect_seconds * 1000)
    return {
        "calls": calls,
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(_pct(times, 0.95), 1),
        "max_ms": round(max(times), 1),
    }


async def _talk(settings: Any, seconds: float, counters: dict[str, int]) -> None:
    track = PcmAudioTrack()
    async with RealtimeCall(settings, session=build_session(settings), audio=track) as call:

        async def drain() -> None:
            async for _ in call.audio_out.frames():
                counters["frames_in"] += 1

        async def events() -> None:
            async for event in call.events():
                if event.type == "response.done":
                    counters["responses"] += 1

        readers = [asyncio.create_task(drain()), asyncio.create_task(events())]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await play(track.push, tone(440, 1.0))
            await play(track.push, silence(1.0))
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    track.stop()


async def bench_cpu(
    base: str, emulator_pid: int, concurrent: int, seconds: float
) -> dict[str, Any]:
    settings = test_settings(openai_base_url=base, openai_api_key=SecretStr(KEY))
    counters = {"frames_in": 0, "responses": 0}
    own_before, emu_before = time.process_time(), _cpu_seconds(emulator_pid)
    wall = time.monotonic()
    await asyncio.gather(*(_talk(settings, seconds, counters) for _ in range(concurrent)))
    wall = time.monotonic() - wall
    own, emu = time.process_time() - own_before, _cpu_seconds(emulator_pid) - emu_before
    call_seconds = concurrent * wall
    return {
        "concurrent_calls": concurrent,
        "wall_s": round(wall, 1),
        "client_cpu_s_per_call_s": round(own / call_seconds, 4),
        "emulator_cpu_s_per_call_s": round(emu / call_seconds, 4),
        "model_frames_received": counters["frames_in"],
        "responses": counters["responses"],
    }


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    async with emulator_process(KEY) as emulator:
        result = {
            "connect": await bench_connect(emulator.base_url, args.calls),
            "cpu": await bench_cpu(emulator.base_url, emulator.pid, args.concurrent, args.seconds),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
