"""429/500 storms from the model: is the backoff honoured (no hot loop), and do sessions recover
when the storm ends?

A real livekit-server, the emulator and the bridge run in this process (loopback); humans join
rooms of their own. The emulator refuses ``POST /realtime/calls`` ``--refusals`` times in a row
(``fail_calls_status``/``fail_calls_count``) and records when each attempt arrived. Per storm:
attempts counted, the gaps between them against the configured backoff (initial x 2^n, +-20 %
jitter, capped), and the time from the first refusal to the call being up. A storm longer than
the retry budget ends the session after exactly ``retry_attempts`` + 1 attempts (one error line,
slot freed); the human rejoining after the storm gets a call at once.

    python -m tests.bench.storm_bench [--refusals 4]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import uuid
from typing import Any

from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from bridge.room.worker import RoomWorker
from bridge.settings.config import Settings
from tests.bench.drop_bench import until
from tests.support.env import EMULATOR_KEY, test_settings
from tests.support.room_harness import humans


def expected_delay(settings: Settings, attempt: int) -> float:
    delay: float = settings.retry_backoff_initial * 2 ** (attempt - 1)
    return min(settings.retry_backoff_max, delay)


async def storm(
    server: LiveKitServer, emulator: EmulatorServer, settings: Settings, status: int, count: int
) -> dict[str, Any]:
    emu = emulator.emulator
    emu.call_posts.clear()
    emu.options.fail_calls_status = status
    emu.options.fail_calls_count = count
    room = f"storm-{status}-{uuid.uuid4().hex[:6]}"
    bridge = RoomWorker(settings, room)
    await bridge.start()
    budget = settings.retry_attempts + 1
    try:
        async with humans(server, room, "alice"):
            await until(lambda: "alice" in bridge.sessions, 20)
            session = bridge.sessions["alice"]
            ends = time.monotonic() + sum(expected_delay(settings, n) for n in range(1, budget))
            await until(
                lambda: session.call_id is not None or session.ended_reason is not None,
                ends - time.monotonic() + 30,
            )
            up = time.monotonic() if session.call_id is not None else None
            gave_up = session.ended_reason
            posts = list(emu.call_posts)
            # Nothing more arrives after giving up (no hot loop): wait one more max backoff.
            if gave_up:
                await asyncio.sleep(settings.retry_backoff_max / 4)
                posts = list(emu.call_posts)
    finally:
        await bridge.aclose()
    refused = [t for t, s in posts if s is not None]
    times = [t for t, _ in posts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    ratios = [gap / expected_delay(settings, n) for n, gap in enumerate(gaps, start=1)]
    result: dict[str, Any] = {
        "status": status,
        "refusals_injected": count,
        "attempts": len(posts),
        "refused": len(refused),
        "gaps_s": [round(g, 2) for g in gaps],
        "gap_over_backoff_min": round(min(ratios), 2) if ratios else None,
        "recovered": up is not None,
    }
    if up is not None and times:
        result["first_refusal_to_call_up_s"] = round(up - times[0], 2)
    if gave_up:
        result["gave_up"] = gave_up
        result["attempts_budget"] = budget
        # The storm is over: the human comes back and is served at once.
        emu.options.fail_calls_count = 0
        again = RoomWorker(settings, room + "-back")
        await again.start()
        try:
            async with humans(server, room + "-back", "alice"):
                started = time.monotonic()
                await until(lambda: "alice" in again.sessions, 20)
                back = again.sessions["alice"]
                await until(lambda: back.call_id is not None, 20)
                result["rejoin_to_call_up_s"] = round(time.monotonic() - started, 2)
        finally:
            await again.aclose()
    return result


async def run(refusals: int) -> dict[str, Any]:
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
    async with (
        LiveKitServer(LiveKitServerConfig()) as server,
        EmulatorServer(test_settings(), options) as emulator,
    ):
        settings = test_settings(
            livekit_url=server.url,
            livekit_api_key=server.api_key,
            livekit_api_secret=SecretStr(server.api_secret),
            openai_base_url=emulator.base_url,
            video_enabled=False,
            # The service's own timeouts, not the tests' short ones: a loaded box is slow.
            connect_timeout=10.0,
            ice_timeout=15.0,
            datachannel_timeout=10.0,
            first_event_timeout=10.0,
            empty_room_grace=0.5,
            retry_backoff_max=4.0,
            log_level="WARNING",
        )
        storms = [
            await storm(server, emulator, settings, 429, refusals),
            await storm(server, emulator, settings, 500, refusals),
            await storm(server, emulator, settings, 503, settings.retry_attempts + 3),
        ]
    return {
        "bench": "storms",
        "retry_attempts": settings.retry_attempts,
        "retry_backoff_initial_s": settings.retry_backoff_initial,
        "retry_backoff_max_s": settings.retry_backoff_max,
        "storms": storms,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refusals", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.refusals))))


if __name__ == "__main__":
    main()
