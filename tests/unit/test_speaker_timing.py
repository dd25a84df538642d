"""SpeakerPump's timing of answer audio as the room hears it (the turn's "first answer audio"
and "answer end"): by samples while LiveKit's source has audio queued, moved on by the silence
the room heard when the source ran dry (the model's audio came late)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import numpy as np
import pytest
from livekit import rtc

from bridge.audio import SAMPLE_RATE
from bridge.realtime.tracks import AudioReceiver
from bridge.room.media import QUIET_FRAMES_BEFORE_SKIP, SpeakerPump

FRAME = SAMPLE_RATE // 50  # 20 ms


class RealTimeSource:
    """An ``rtc.AudioSource`` stand-in that plays what it is given in real time."""

    def __init__(self) -> None:
        self.plays_until = 0.0

    @property
    def queued_duration(self) -> float:
        return max(0.0, self.plays_until - time.monotonic())

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        start = max(time.monotonic(), self.plays_until)
        self.plays_until = start + frame.samples_per_channel / frame.sample_rate

    def clear_queue(self) -> None:
        self.plays_until = 0.0


def tone(frames: int) -> list[np.ndarray[Any, np.dtype[np.int16]]]:
    t = np.arange(FRAME * frames) / SAMPLE_RATE
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return list(pcm.reshape(frames, FRAME))


def silence(frames: int) -> list[np.ndarray[Any, np.dtype[np.int16]]]:
    return [np.zeros(FRAME, dtype=np.int16) for _ in range(frames)]


@pytest.mark.parametrize("late", [0.0, 0.3], ids=["on time", "the model's audio 300 ms late"])
async def test_an_answer_ends_when_the_room_heard_it_end(late: float) -> None:
    sounds: list[float] = []
    quiets: list[float] = []
    pump = SpeakerPump(
        cast(rtc.AudioSource, RealTimeSource()), on_sound=sounds.append, on_quiet=quiets.append
    )
    receiver = AudioReceiver(None)
    running = asyncio.create_task(pump.run(receiver))
    try:
        for pcm in tone(10):  # 200 ms at once, as a burst from the network
            receiver.feed(pcm, time.perf_counter())
        await asyncio.sleep(0.2 + late)
        for pcm in tone(10) + silence(QUIET_FRAMES_BEFORE_SKIP + 2):
            receiver.feed(pcm, time.perf_counter())
        await asyncio.sleep(0.05)
    finally:
        receiver.end()
        await running
    (start,), (end,) = sounds, quiets
    # Sample-exact by the tone; the sleep itself overshoots by a few ms.
    assert end - start == pytest.approx(0.4 + late, abs=0.015)
