"""Dropped model calls: how long until the human hears the next answer, and is the
conversation kept?

One human in a room (real livekit-server, the bridge and the emulator in this process, all on
loopback) takes turns: speak 0.8 s, hear the answer. Every other turn, the model call is dropped
(the emulator closes its peer connection, as a network failure would) just before the human
speaks. Measured from the drop: the new call up, and the first sound of the answer at the
human's ear. The turns without a drop are the baseline measured in the same run (speech start
-> answer heard). After each drop, the new call must hold the conversation so far.

    python -m tests.bench.drop_bench [--drops 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from pydantic import SecretStr

from bridge.audio import FRAME_MS
from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from bridge.room.session import ParticipantSession
from bridge.room.worker import RoomWorker
from tests.bench.realtime_bench import _pct
from tests.support.env import EMULATOR_KEY, test_settings
from tests.support.room_harness import Human, humans

SPEECH_S = 0.8
REPEAT_AFTER_S = 4.0
ANSWER_TIMEOUT_S = 30.0


async def until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def turn(
    human: Human, patience: float = ANSWER_TIMEOUT_S, repeats: list[int] | None = None
) -> float:
    """The human speaks, and again after ``patience`` seconds without an answer (as people do
    when their words went nowhere); returns when the answer's first loud frame arrived
    (monotonic)."""
    track = human.agent_tracks()[0]
    heard = len(track.loud)
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        await human.say(SPEECH_S, pause=0.1)
        try:
            await until(lambda: len(track.loud) > heard, patience)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
            if repeats is not None:
                repeats.append(1)
    first = track.loud[heard]
    # Let the answer play out before the next turn.
    last = -1
    while len(track.loud) != last:
        last = len(track.loud)
        await asyncio.sleep(0.4)
    return first


def shortfall(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any] | None:
    """None when the new call holds at least as many items with words as the dropped call
    had (an answer still being generated has none yet in the emulator); else what is missing
    (by text)."""
    said = [i for i in before if i["text"]]
    carried = [i for i in after if i["text"]]
    if len(carried) >= len(said):
        return None
    texts = {i["text"] for i in carried}
    return {
        "old_items": len(said),
        "new_items": len(carried),
        "missing": [f"{i['role']}: {i['text']!r}" for i in said if i["text"] not in texts],
    }


def summary(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    return {"p50": _pct(ms, 0.5), "p95": _pct(ms, 0.95), "max": max(ms) if ms else None}


async def run(drops: int) -> dict[str, Any]:
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY), chars_per_second=30.0)
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
            log_level="WARNING",
        )
        room = f"drops-{uuid.uuid4().hex[:6]}"
        bridge = RoomWorker(settings, room)
        await bridge.start()
        try:
            async with humans(server, room, "alice") as (alice,):
                await until(lambda: "alice" in bridge.sessions, 20)
                session: ParticipantSession = bridge.sessions["alice"]
                await until(lambda: session.call_id is not None and alice.agent_tracks(), 20)
                baseline: list[float] = []
                noticed: list[float] = []
                short: list[dict[str, Any]] = []
                call_up: list[float] = []
                heard: list[float] = []
                kept = 0
                repeated: list[int] = []
                stalls: list[dict[str, Any]] = []
                for _ in range(drops):
                    started = time.monotonic()
                    try:
                        baseline.append(await turn(alice) - started)
                    except TimeoutError:
                        # Not answered at all: record what the model side saw, go on.
                        call = emulator.emulator.calls.get(session.call_id or "")
                        stalls.append(
                            {
                                "call": call.snapshot()["events_out"] if call else None,
                                "failures": dict(session.stats.failures),
                                "ended": session.ended_reason,
                            }
                        )
                        if session.ended_reason is not None:
                            break
                        continue
                    old = session.call_id
                    assert old is not None
                    before = emulator.emulator.calls[old].snapshot()["items"]
                    dropped = time.monotonic()
                    await emulator.emulator.calls[old].end("dropped")
                    speaking = asyncio.create_task(turn(alice, REPEAT_AFTER_S, repeated))
                    await until(lambda old=old: session.call_id != old, ANSWER_TIMEOUT_S)
                    noticed.append(time.monotonic() - dropped)
                    await until(
                        lambda old=old: session.call_id not in (None, old), ANSWER_TIMEOUT_S
                    )
                    call_up.append(time.monotonic() - dropped)
                    heard.append(await speaking - dropped)
                    new = emulator.emulator.calls[session.call_id or ""]
                    # Carried over: every item of the old call, before this turn's own.
                    items = new.snapshot()["items"]
                    missing = shortfall(before, items)
                    kept += missing is None
                    if missing is not None:
                        short.append(missing)
                failures = dict(session.stats.failures)
                held_s = session.media.mic.gate.backlog.replayed * FRAME_MS / 1000
        finally:
            await bridge.aclose()
    return {
        "bench": "drops",
        "drops": drops,
        "drop_noticed_ms": summary(noticed),
        "new_call_up_ms": summary(call_up),
        "next_answer_heard_after_drop_ms": summary(heard),
        "baseline_answer_heard_after_speech_start_ms": summary(baseline),
        "conversation_kept": f"{kept}/{len(call_up)}",
        "conversation_short": short,
        "speech_held_while_no_call_s": held_s,
        "turns_repeated_after_a_drop": len(repeated),
        "session_failures": failures,
        "unanswered_turns": stalls,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drops", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.drops))))


if __name__ == "__main__":
    main()
