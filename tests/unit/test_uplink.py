"""The uplink gate both microphone sources feed (bridge/room/uplink.py), without LiveKit."""

from __future__ import annotations

import numpy as np

from bridge.audio import FRAME_SAMPLES, Pcm, is_loud, loud_peak
from bridge.realtime.tracks import PcmAudioTrack
from bridge.room.uplink import UplinkGate
from tests.support.env import test_settings

QUIET = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def loud(n: int = 0) -> Pcm:
    return np.full(FRAME_SAMPLES, 1000 + n, dtype=np.int16)  # -30 dBFS, tagged by its value


def test_one_loud_peak_definition() -> None:
    peak = loud_peak(-35.0)  # the energy VAD's threshold at 0.5
    assert 580 < peak < 585
    assert is_loud(loud(), peak) and not is_loud(QUIET, peak)
    assert is_loud(-loud(), peak)  # a negative peak counts as much


async def test_speech_without_a_call_wakes_then_goes_first_to_the_next_call() -> None:
    gate = UplinkGate(test_settings(uplink_backlog_s=8.0))
    gate.attach(None)
    assert all(gate.frame(QUIET) is None for _ in range(20))
    for n in range(10):
        assert gate.frame(loud(n)) is None
    assert gate.woke.is_set()
    track = PcmAudioTrack(max_queued_frames=100)
    gate.attach(track)
    assert not gate.woke.is_set()
    sent = [gate.frame(loud(100 + n)) for n in range(40)]
    assert all(s is not None for s in sent)
    said = [s[1] for s in sent if s is not None]
    assert said == sorted(said)  # capture times in order, the held audio's first
    assert said[0] < said[-1]
    assert gate.backlog.replayed > 0
    assert gate.dropped == 0
    track.stop()


async def test_drops_of_the_calls_track_are_counted_once() -> None:
    gate = UplinkGate(test_settings())
    track = PcmAudioTrack(max_queued_frames=2)  # nothing reads it: it overflows
    gate.attach(track)
    for _ in range(5):
        gate.frame(QUIET)
    assert gate.dropped == track.dropped_frames == 3
    other = PcmAudioTrack(max_queued_frames=2)
    gate.attach(other)  # a new call's track counts from zero
    assert gate.attachments == 2
    for _ in range(3):
        gate.frame(QUIET)
    assert gate.dropped == 3 + 1
    track.stop()
    other.stop()


async def test_the_level_is_watched_only_while_asked() -> None:
    gate = UplinkGate(test_settings())
    track = PcmAudioTrack(max_queued_frames=100)
    gate.attach(track)
    gate.frame(loud())
    assert gate.last_loud_at == -float("inf")
    gate.watch_level = True
    gate.frame(QUIET)
    assert gate.last_loud_at == -float("inf")
    gate.frame(loud())
    assert gate.last_loud_at > 0
    track.stop()
