"""Meeting benchmark: the same scripted 3-person meeting in both modes, side by side.

Alice, Bob and Carol join one room and take turns: each speaks 2 s, then leaves room for the
answer (4.5 s), round after round, for ``--seconds`` (default 300: a 5-minute meeting). The
bridge runs in a process of its own (tests/bench/bridge_process.py) against the emulator in
another, once with ``mode = per_participant`` (meeting context on: the baseline) and once with
``mode = shared``, in the same run.

Prints one JSON object per mode, then both with the shared/per-participant ratios:
- model_calls: calls opened (one per human, or one for the room);
- responses, tokens by kind (input_audio, input_text, output_audio, ...) as the emulator billed
  them (its accounting: every response re-bills the whole conversation as input);
- context_items_added / _trimmed: meeting lines added to calls and deleted by the bound;
- cpu_cores: bridge CPU seconds per second of meeting;
- answer_frames_heard: loud answer frames the three humans received (all tracks).

    python -m tests.bench.meeting_bench [--seconds 300] [--modes per_participant,shared]
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

from bridge.local.livekit_server import LiveKitServer
from tests.bench.realtime_bench import KEY, _cpu_seconds
from tests.emulator_process import emulator_process
from tests.env import LOOPBACK_ENV
from tests.room_harness import Human

PEOPLE = [("alice", "Alice", 300.0), ("bob", "Bob", 420.0), ("carol", "Carol", 540.0)]
SPEAK_S = 2.0
ANSWER_S = 4.5


async def meeting(people: list[Human], seconds: float) -> int:
    """Turns in order until the time is up; returns how many turns were taken."""
    until = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < until:
        person = people[turns % len(people)]
        await person.say(SPEAK_S, freq=PEOPLE[turns % len(PEOPLE)][2], pause=ANSWER_S)
        turns += 1
    return turns


async def run_mode(server: LiveKitServer, base: str, mode: str, seconds: float) -> dict[str, Any]:
    room = f"meeting-{mode}-{int(time.time())}"
    env = {
        **os.environ,
        **LOOPBACK_ENV,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": base,
        "BRIDGE_EMPTY_ROOM_GRACE": "600",
        "BRIDGE_VIDEO_ENABLED": "false",
        "BRIDGE_MODE": mode,
    }
    settle = 4.0
    total = settle + seconds + 60.0  # it runs until told on stdin; this bounds the wait
    bridge = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.bridge_process",
        "--rooms",
        room,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert bridge.stdout is not None and bridge.stdin is not None
    await asyncio.wait_for(bridge.stdout.readline(), 60)  # {"ready": true}
    people = [Human(server, room, identity, name=name) for identity, name, _ in PEOPLE]
    try:
        for person in people:
            await person.join()
        await asyncio.sleep(settle)
        cpu_before, wall_before = _cpu_seconds(bridge.pid), time.monotonic()
        turns = await meeting(people, seconds)
        cpu = _cpu_seconds(bridge.pid) - cpu_before
        wall = time.monotonic() - wall_before
        heard = sum(sum(len(t.loud) for t in p.agent_tracks()) for p in people)
        bridge.stdin.write(b"stop\n")
        await bridge.stdin.drain()
        line = await asyncio.wait_for(bridge.stdout.readline(), total + 60)
        inside = json.loads(line)
    finally:
        for person in people:
            await person.leave()
        with contextlib.suppress(ProcessLookupError):
            bridge.terminate()
        await bridge.wait()
    tokens = inside["tokens"]
    return {
        "mode": mode,
        "meeting_seconds": round(wall, 1),
        "turns": turns,
        "model_calls": inside["model_calls"],
        "responses": inside["responses"],
        "tokens": tokens,
        "tokens_total": sum(v for k, v in tokens.items() if k != "input_cached"),
        "context_items_added": inside["context_items_added"],
        "context_items_trimmed": inside["context_items_trimmed"],
        "cpu_cores": round(cpu / wall, 4),
        "answer_frames_heard": heard,
        "frames_dropped": inside["frames_dropped"],
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--modes", default="per_participant,shared")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    async with (
        LiveKitServer() as server,
        emulator_process(KEY, {}) as emulator,
    ):
        for mode in args.modes.split(","):
            result = await run_mode(server, emulator.base_url, mode, args.seconds)
            print(json.dumps(result), flush=True)
            results[mode] = result
    summary: dict[str, Any] = {"results": list(results.values())}
    if {"per_participant", "shared"} <= results.keys():
        base, shared = results["per_participant"], results["shared"]
        summary["shared_vs_per_participant"] = {
            "model_calls": _ratio(shared["model_calls"], base["model_calls"]),
            "tokens_total": _ratio(shared["tokens_total"], base["tokens_total"]),
            "cpu_cores": _ratio(shared["cpu_cores"], base["cpu_cores"]),
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
