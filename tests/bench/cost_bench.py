"""Cost benchmark: what a meeting costs on the emulator, with and without `retention_ratio`.

Three people talk in turns (seeded: 3-12 s each, 1 s apart); every third turn addresses the
agent, which answers (about 10 s of speech). The emulator's fake model (bridge/emulator/model.py:
energy VAD, conversation, transcription, answers, and its bill) is driven in simulated time, frame
by frame, so a 10-minute meeting takes seconds; every ``response.done`` and transcription usage
it emits is priced with the bridge's own Pricer and the default price table.

The client side does what the bridge does in each mode:
- ``per_participant``: one call per human, hearing only that human (``addressed`` policy: the
  answer is asked for with ``response.create`` after the addressing transcript);
- ``per_participant_context``: the same, and every call also gets the others' words and the
  agent's answers to them as labelled text items (meeting context, bounded to the last 40);
- ``shared``: one call hearing everyone, turns labelled by speaker.
The last two model the client behaviour of issue 10 (meetings) as DESIGN.md describes it.

Each mode runs twice: ``truncation: auto`` (the baseline, same run) and ``retention_ratio``.
Prints one JSON object per run and a summary:

    python -m tests.bench.cost_bench [--minutes 10] [--people 3] [--retention-ratio 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.config import Settings
from bridge.cost import Pricer, Spend
from bridge.emulator.model import FakeModel, session_from_request
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.voice import VoiceTrack, tone
from bridge.realtime import build_session
from bridge.realtime.tracks import FRAME_MS, FRAME_SAMPLES

MODES = ("per_participant", "per_participant_context", "shared")
CONTEXT_ITEMS = 40
ANSWER = (
    "Sure. Here is a short summary of where we are, what was decided so far, and what the "
    "next step for the team should be before the end of this week."
)  # ~150 characters: 10 s at the emulator's 15 characters per second
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


@dataclass
class Call:
    """One emulated call and what its client has seen."""

    model: FakeModel = field(init=False)
    voice: VoiceTrack = field(init=False)
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    context: list[str] = field(default_factory=list)  # ids of meeting-context items

    def audio_started(self, response_id: str) -> None:
        self.model.audio_started(response_id)

    def audio_stopped(self, response_id: str) -> None:
        self.model.audio_stopped(response_id)

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, kind: str, count: int) -> dict[str, Any]:
        while True:
            seen = [e for e in self.events if e["type"] == kind]
            if len(seen) >= count:
                return seen[count - 1]
            self.changed.clear()
            await self.changed.wait()


def _error(
    error_type: str,
    message: str,
    param: str | None,
    event_id: str | None,
    *,
    code: str | None = None,
) -> None:
    raise RuntimeError(f"emulator error {code or error_type}: {message}")


def new_call(settings: Settings, options: EmulatorOptions) -> Call:
    session = session_from_request(
        build_session(settings, create_response=False, interrupt_response=True)
    )
    call = Call()
    call.voice = VoiceTrack(call.audio_started, call.audio_stopped)
    call.model = FakeModel(
        options=options, session=session, emit=call.emit, error=_error, voice=call.voice
    )
    return call


class Meeting:
    def __init__(self, mode: str, settings: Settings, people: int) -> None:
        self.mode = mode
        self.settings = settings
        self.names = [f"person{i + 1}" for i in range(people)]
        self.options = EmulatorOptions(
            answers=[ANSWER],
            answer_delay_ms=0,
            transcription_delay_ms=0,
            generation_speed=1e6,
        )
        count = 1 if mode == "shared" else people
        self.calls = [new_call(settings, self.options) for _ in range(count)]
        self.pricer = Pricer(settings.prices, settings.model, settings.transcription_model)
        self.spend = Spend()
        self.seconds = 0.0

    def call_of(self, speaker: int) -> Call:
        return self.calls[0 if self.mode == "shared" else speaker]

    async def frames(self, call: Call | None, pcm: np.ndarray) -> None:
        """Feed ``pcm`` to ``call`` 20 ms at a time, advancing every call's voice in step."""
        for start in range(0, len(pcm), FRAME_SAMPLES):
            frame = pcm[start : start + FRAME_SAMPLES]
            if len(frame) < FRAME_SAMPLES:
                frame = np.concatenate([frame, SILENCE[: FRAME_SAMPLES - len(frame)]])
            if call is not None:
                await call.model.on_audio(frame)
            for each in self.calls:
                each.voice.advance()
            self.seconds += FRAME_MS / 1000
            await asyncio.sleep(0)

    def add_context(self, call: Call, text: str, role: str) -> None:
        kind = "input_text" if role == "user" else "output_text"
        item_id = f"item_ctx{len(call.events)}_{len(call.context)}"
        call.model.create_item(
            {
                "id": item_id,
                "type": "message",
                "role": role,
                "content": [{"type": kind, "text": text}],
            },
            None,
            None,
        )
        call.context.append(item_id)
        while len(call.context) > CONTEXT_ITEMS:
            call.model.delete_item(call.context.pop(0), None)

    async def turn(self, speaker: int, seconds: float, addressed: bool) -> None:
        call = self.call_of(speaker)
        transcripts = len([e for e in call.events if e["type"].endswith("transcription.completed")])
        await self.frames(call, tone(300.0 + 40 * speaker, seconds, amplitude=0.3))
        await self.frames(call, np.zeros(int(1.0 * 24_000), dtype=np.int16))  # 1 s apart
        done = await call.wait_for(
            "conversation.item.input_audio_transcription.completed", transcripts + 1
        )
        said = f"[{self.names[speaker]}] {done['transcript']}"
        if self.mode == "per_participant_context":
            for other, each in enumerate(self.calls):
                if other != speaker:
                    self.add_context(each, said, "user")
        if not addressed:
            return
        answers = len([e for e in call.events if e["type"] == "response.done"])
        call.model.create_response(None, None)
        answer = await call.wait_for("response.done", answers + 1)
        while call.voice.playing:  # the room hears it; nobody talks over it
            await self.frames(None, SILENCE)
        if self.mode == "per_participant_context":
            text = f"[assistant, answering {self.names[speaker]}] {ANSWER}"
            for other, each in enumerate(self.calls):
                if other != speaker:
                    self.add_context(each, text, "assistant")
        assert answer["response"]["status"] == "completed"

    def bill(self) -> None:
        for call in self.calls:
            for event in call.events:
                if event["type"] == "response.done":
                    self.pricer.response(event["response"]["usage"], self.spend)
                elif event["type"].endswith("input_audio_transcription.completed"):
                    self.pricer.transcription(event["usage"], self.spend)

    async def aclose(self) -> None:
        for call in self.calls:
            await call.model.aclose()


async def run(mode: str, minutes: float, people: int, ratio: float | None) -> dict[str, Any]:
    settings = Settings(
        response_policy="addressed",
        retention_ratio=ratio,
        video_enabled=False,
        model="gpt-realtime",
    )
    meeting = Meeting(mode, settings, people)
    rng = random.Random(17)
    started = time.perf_counter()
    turns = 0
    try:
        while meeting.seconds < minutes * 60:
            await meeting.turn(turns % people, rng.uniform(3.0, 12.0), addressed=turns % 3 == 2)
            turns += 1
        meeting.bill()
    finally:
        await meeting.aclose()
    spend = meeting.spend
    cost = spend.cost_usd or 0.0
    cached = spend.tokens["audio_in_cached"] + spend.tokens["text_in_cached"]
    uncached = spend.tokens["audio_in"] + spend.tokens["text_in"]
    return {
        "mode": mode,
        "truncation": f"retention_ratio {ratio}" if ratio is not None else "auto",
        "meeting_minutes": round(meeting.seconds / 60, 2),
        "people": people,
        "turns": turns,
        "responses": spend.responses,
        "cost_usd": round(cost, 4),
        "cost_per_minute_usd": round(cost / (meeting.seconds / 60), 4),
        "cost_per_response_usd": round(cost / max(1, spend.responses), 4),
        "cached_input_share": round(cached / max(1, cached + uncached), 3),
        "tokens": dict(spend.tokens),
        "wall_s": round(time.perf_counter() - started, 1),
    }


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--retention-ratio", type=float, default=0.5)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    summary = []
    for mode in args.modes.split(","):
        baseline = await run(mode, args.minutes, args.people, None)
        print(json.dumps(baseline), flush=True)
        retained = await run(mode, args.minutes, args.people, args.retention_ratio)
        print(json.dumps(retained), flush=True)
        summary.append(
            {
                "mode": mode,
                "cost_usd_auto": baseline["cost_usd"],
                "cost_usd_retention": retained["cost_usd"],
                "saving": round(1 - retained["cost_usd"] / baseline["cost_usd"], 3)
                if baseline["cost_usd"]
                else None,
            }
        )
    print(
        json.dumps({"minutes": args.minutes, "people": args.people, "summary": summary}, indent=2)
    )


if __name__ == "__main__":
    asyncio.run(main())
