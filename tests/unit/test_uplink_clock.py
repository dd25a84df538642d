"""UplinkGate: a call's input clock (the ms its speech events count in) mapped back to when the
room heard that audio, and speech events to the loud frames they describe."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import pytest

from bridge.audio import FRAME_SAMPLES
from bridge.realtime.tracks import PcmAudioTrack
from bridge.room import uplink
from bridge.room.uplink import UplinkGate
from tests.support.env import test_settings

QUIET = np.zeros(FRAME_SAMPLES, dtype=np.int16)
LOUD = np.full(FRAME_SAMPLES, 8000, dtype=np.int16)


class Sink:
    """The call's uplink track as the gate sees it: a pushed frame is sent (and counted in the
    far end's input clock) when the next one is pushed, 20 ms later."""

    def __init__(self, start_ms: int = 0) -> None:
        self.sent_ms = start_ms
        self.dropped_frames = 0
        self._queued = 0

    def push(self, pcm: Any) -> None:
        self.sent_ms += self._queued
        self._queued = 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(uplink, "time", type("T", (), {"monotonic": staticmethod(fake)}))
    yield fake


def feed(gate: UplinkGate, clock: Clock, frames: list[Any]) -> list[float]:
    """Each frame as it arrives, 20 ms apart; returns their arrival times."""
    heard = []
    for pcm in frames:
        clock.now += 0.020
        heard.append(clock.now)
        gate.frame(pcm)
    return heard


def test_the_input_clock_maps_back_to_when_the_room_heard_it(clock: Clock) -> None:
    gate = UplinkGate(test_settings())
    assert gate.room_time(0) is None
    gate.attach(cast(PcmAudioTrack, Sink(start_ms=1000)))  # the call had sent a second already
    heard = feed(gate, clock, [QUIET] * 50)
    assert gate.room_time(1000) == pytest.approx(heard[0])
    assert gate.room_time(1180) == pytest.approx(heard[9])
    # Past the last frame sent (silence fill): at real-time rate from it.
    assert gate.room_time(1000 + 49 * 20 + 500) == pytest.approx(heard[-1] + 0.5)
    gate.attach(cast(PcmAudioTrack, Sink()))  # a new call: a new clock
    assert gate.room_time(1020) is None


def test_speech_starts_and_ends_at_its_loud_frames_whatever_the_models_padding(
    clock: Clock,
) -> None:
    gate = UplinkGate(test_settings())
    gate.attach(cast(PcmAudioTrack, Sink()))
    # 0.4 s quiet, 0.6 s speech, 0.3 s quiet: speech from the input clock's 400 ms to 1000 ms.
    heard = feed(gate, clock, [QUIET] * 20 + [LOUD] * 30 + [QUIET] * 15)
    # The model's start includes its 300 ms prefix padding; its end is where speech ended.
    onset, end = gate.speech_onset(400 - 300), gate.speech_end(1000)
    assert onset == pytest.approx(heard[20])  # the first loud frame arrived
    assert end == pytest.approx(heard[49] + 0.020)  # the last one's end
    assert onset is not None and end is not None and end - onset == pytest.approx(0.6)
    # Clamped at the clock's start (speech right after the call came up): the same onset.
    assert gate.speech_onset(0) == onset
