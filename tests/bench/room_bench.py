"""Room benchmark: N humans speaking through a real livekit-server, the bridge and the emulator.

Each human is in a room of their own (the support-call shape), speaks 1.5 s, pauses 2.5 s, and
hears the emulator's echo answer. The bridge runs in a process of its own (tests/bench/
bridge_process.py) so only its CPU and memory are counted; the emulator is another process.

Prints one JSON object per N:
- cpu_cores_per_session: bridge CPU seconds per session-second over the steady window;
- rss_mb_per_session: (bridge RSS with N sessions - RSS with the rooms joined and empty) / N;
- join_to_ready_ms: human join (their connect returned) -> the model call ready in the bridge;
- uplink_ms / downlink_ms: time each audio frame spends inside the bridge, per direction
  (uplink: LiveKit frame in -> handed to the model's encoder; downlink: model frame decoded ->
  handed to LiveKit's source), p50/p99;
- cpu_vs_stock_aiortc_endpoint: cpu_cores_per_session / the CPU of one endpoint of a stock
  aiortc peer pair exchanging 48 kHz audio both ways, measured in the same run
  (tests/bench/aiortc_pair.py; a bridge session has two legs, four codec operations).

With ``--traces`` each N runs twice, tracing off then on (every span exported over OTLP to a
local Jaeger, sampler always on), and ``tracing_cpu_ratio`` is on / off CPU per session.

    python -m tests.bench.room_bench [--humans 1,5,10] [--seconds 30] [--traces]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from bridge.local.jaeger import Jaeger
from bridge.local.livekit_server import LiveKitServer
from tests.bench.realtime_bench import KEY, _cpu_seconds, _pct
from tests.support.emulator_process import emulator_process
from tests.support.env import LOOPBACK_ENV
from tests.support.room_harness import Human


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def talk(human: Human, freq: float, until: float) -> None:
    while time.monotonic() < until:
        await human.say(1.5, freq=freq, pause=2.5)


async def run_one(
    server: LiveKitServer,
    base: str,
    n: int,
    seconds: float,
    *,
    traces_to: str | None = None,
    tag: str = "",
) -> dict[str, Any]:
    rooms = [f"bench-{n}{tag}-{i}" for i in range(n)]
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": traces_to, "OTEL_TRACES_SAMPLER": "always_on"}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        **(traced if traces_to else {}),
        **LOOPBACK_ENV,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": base,
        "BRIDGE_EMPTY_ROOM_GRACE": "600",
        "BRIDGE_VIDEO_ENABLED": "false",
    }
    settle = 4.0
    total = settle + seconds + 3.0
    bridge = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.bridge_process",
        "--rooms",
        ",".join(rooms),
        "--seconds",
        str(total + n * 0.5),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert bridge.stdout is not None
    await asyncio.wait_for(bridge.stdout.readline(), 60)  # {"ready": true}
    await asyncio.sleep(1.0)
    rss_empty = _rss_mb(bridge.pid)
    people = [Human(server, room, f"human-{i}") for i, room in enumerate(rooms)]
    joined_at: dict[str, float] = {}
    try:
        for person in people:
            await person.join()
            joined_at[person.identity] = time.time()
        await asyncio.sleep(settle)
        until = time.monotonic() + seconds
        talking = [asyncio.create_task(talk(p, 300 + 60 * i, until)) for i, p in enumerate(people)]
        cpu_before, wall_before = _cpu_seconds(bridge.pid), time.monotonic()
        await asyncio.gather(*talking)
        cpu = _cpu_seconds(bridge.pid) - cpu_before
        wall = time.monotonic() - wall_before
        rss_loaded = _rss_mb(bridge.pid)
        heard = sum(sum(len(t.loud) for t in p.agent_tracks()) for p in people)
        line = await asyncio.wait_for(bridge.stdout.readline(), total + n + 60)
        inside = json.loads(line)
    finally:
        for person in people:
            await person.leave()
        with contextlib.suppress(ProcessLookupError):
            bridge.terminate()
        await bridge.wait()
    ready_ms = [
        (inside["ready_wall"][who] - joined_at[who]) * 1000
        for who in joined_at
        if who in inside["ready_wall"]
    ]
    return {
        "humans": n,
        "sessions_ready": len(ready_ms),
        "cpu_cores_per_session": round(cpu / (wall * n), 4),
        "rss_mb_per_session": round((rss_loaded - rss_empty) / n, 1),
        "rss_mb_total": round(rss_loaded, 1),
        "join_to_ready_ms": {
            "p50": round(_pct(ready_ms, 0.5), 1) if ready_ms else None,
            "p95": round(_pct(ready_ms, 0.95), 1) if ready_ms else None,
        },
        "uplink_ms": inside["uplink_ms"],
        "downlink_ms": inside["downlink_ms"],
        "frames_dropped": inside["frames_dropped"],
        "answer_frames_heard": heard,
    }


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--humans", default="1,5,10")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--traces", action="store_true", help="each N also with tracing on (to a local Jaeger)"
    )
    args = parser.parse_args(argv)
    results = []
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(LiveKitServer())
        emulator = await stack.enter_async_context(emulator_process(KEY, {"voice_mode": "echo"}))
        jaeger = await stack.enter_async_context(Jaeger()) if args.traces else None
        for n in [int(x) for x in args.humans.split(",")]:
            result = await run_one(server, emulator.base_url, n, args.seconds)
            print(json.dumps(result), flush=True)
            if jaeger is not None:
                on = await run_one(
                    server,
                    emulator.base_url,
                    n,
                    args.seconds,
                    traces_to=jaeger.otlp_endpoint,
                    tag="t",
                )
                on["spans_in_jaeger"] = await _spans(jaeger)
                result["tracing_on"] = on
                result["tracing_cpu_ratio"] = round(
                    on["cpu_cores_per_session"] / result["cpu_cores_per_session"], 3
                )
                print(json.dumps(on), flush=True)
            results.append(result)
    stock = await stock_aiortc(args.seconds)
    for result in results:
        result["cpu_vs_stock_aiortc_endpoint"] = round(
            result["cpu_cores_per_session"] / stock["endpoint_cores"], 2
        )
    print(json.dumps({"results": results, "stock_aiortc": stock}, indent=2))


async def _spans(jaeger: Jaeger) -> int:
    """Spans Jaeger holds for the bench's rooms (so a run with tracing on did export)."""
    traces = await jaeger.query.traces("realtime-room-bridge", limit=1000)
    return sum(len(t["spans"]) for t in traces)


async def stock_aiortc(seconds: float) -> dict[str, Any]:
    """The yardstick, same run: a stock aiortc peer pair (tests/bench/aiortc_pair.py)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.aiortc_pair",
        "--seconds",
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    asyncio.run(main())
