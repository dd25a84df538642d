"""Meeting benchmark: the same scripted 3-person meeting in both modes, side by side.

Alice, Bob and Carol join one room and take turns: each speaks 2 s, then leaves room for the
answer (4.5 s), round after round, for ``--seconds`` (default 300: a 5-minute meeting). The
meeting is tests/bench/scripted_meeting.py's (shared with cost_bench): the bridge runs in a
process of its own (tests/bench/bridge_process.py) against the emulator in another, once with
``mode = per_participant`` (meeting context on: the baseline) and once with ``mode = shared``,
in the same run.

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
import json
import time
from typing import Any

from bridge.local.livekit_server import LiveKitServer
from tests.bench.scripted_meeting import (
    KEY,
    BridgeProcess,
    bridge_env,
    cpu_seconds,
    hold,
    joined,
    script,
)
from tests.support.emulator_process import emulator_process

SPEAK_S = 2.0
ANSWER_S = 4.5
SETTLE_S = 4.0


async def run_mode(server: LiveKitServer, base: str, mode: str, seconds: float) -> dict[str, Any]:
    room = f"meeting-{mode}-{int(time.time())}"
    turns = script(
        seed=0,
        people=3,
        shortest=SPEAK_S,
        longest=SPEAK_S,
        pause=ANSWER_S,
        address_every=0,
        shared=mode == "shared",
    )
    env = bridge_env(server, base, mode=mode)
    async with BridgeProcess.start(env, room) as bridge, joined(server, room) as people:
        await asyncio.sleep(SETTLE_S)
        cpu_before = cpu_seconds(bridge.pid)
        tally = await hold(people, turns, seconds)
        cpu = cpu_seconds(bridge.pid) - cpu_before
        heard = sum(sum(len(t.loud) for t in p.agent_tracks()) for p in people)
        inside = await bridge.stop()
    tokens = inside["tokens"]
    return {
        "mode": mode,
        "meeting_seconds": round(tally.seconds, 1),
        "turns": tally.turns,
        "model_calls": inside["model_calls"],
        "responses": inside["responses"],
        "tokens": tokens,
        # The model's tokens by price kind (cached ones a kind of their own): transcription apart.
        "tokens_total": sum(v for k, v in tokens.items() if not k.startswith("transcription_")),
        "context_items_added": inside["context_items_added"],
        "context_items_trimmed": inside["context_items_trimmed"],
        "cpu_cores": round(cpu / tally.seconds, 4),
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
