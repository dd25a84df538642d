"""UplinkGate.room_time: a call's input clock (the ms its speech events count in) mapped back to
when the room heard that audio."""

from __future__ import annotations

import time
from typing import Any, cast

import numpy as np

from bridge.audio import FRAME_SAMPLES
from bridge.realtime.tracks import PcmAudioTrack
from bridge.room.uplink import UplinkGate
from tests.support.env import test_settings


class Sink:
    """The call's uplink track as the gate sees it: 20 ms a frame, sent at once."""

    def __init__(self, start_ms: int = 0) -> None:
        self.sent_ms = start_ms
        self.dropped_frames = 0

    def push(self, pcm: Any) -> None:
        self.sent_ms += 20


def test_speech_event_times_map_back_to_when_the_room_heard_them() -> None:
    gate = UplinkGate(test_settings())
    assert gate.room_time(0) is None
    gate.attach(cast(PcmAudioTrack, Sink(start_ms=1000)))  # the call had sent a second already
    quiet = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    heard = []
    for _ in range(50):
        heard.append(time.monotonic())
        gate.frame(quiet)
    first = gate.room_time(1020)
    assert first is not None and abs(first - heard[0]) < 0.005
    tenth = gate.room_time(1200)
    assert tenth is not None and abs(tenth - heard[9]) < 0.005
    # Past the last frame sent (silence fill): at real-time rate from it.
    later = gate.room_time(1000 + 50 * 20 + 500)
    assert later is not None and abs(later - (heard[-1] + 0.5)) < 0.005
    gate.attach(cast(PcmAudioTrack, Sink()))  # a new call: a new clock
    assert gate.room_time(1020) is None
