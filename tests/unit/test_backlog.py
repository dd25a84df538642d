"""What a human says while no call is up: held, then sent first to the next call."""

from __future__ import annotations

import numpy as np

from bridge.audio import FRAME_SAMPLES, Pcm
from bridge.room.backlog import KEEP_QUIET_FRAMES, Backlog
from bridge.vad import VadConfig


def loud(n: int) -> Pcm:
    return np.full(FRAME_SAMPLES, 1000 + n, dtype=np.int16)  # -30 dBFS, tagged by its value


QUIET = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def backlog(seconds: float = 8.0) -> Backlog:
    return Backlog(VadConfig(threshold=0.5), seconds)


def test_silence_alone_is_not_kept() -> None:
    held = backlog()
    held.attach(False)
    assert not any(held.hold(QUIET, 0.0) for _ in range(50))
    held.attach(True)
    assert held.queued == 0
    frame = loud(0)
    assert held.feed(frame, 1.0)[0] is frame


def test_speech_goes_to_the_next_call_first_at_the_real_time_rate() -> None:
    held = backlog()
    held.attach(False)
    for _ in range(50):  # 1 s of quiet: only the detector's 300 ms prefix padding is kept
        held.hold(QUIET, 0.0)
    woke = [held.hold(loud(i), float(i)) for i in range(20)]
    assert woke.count(True) == 1  # the session wakes once
    held.attach(True)
    assert held.queued == 15 + 20
    sent = [held.feed(loud(100 + i), 50.0 + i) for i in range(5)]
    assert all(int(p[0]) == 0 for p, _ in sent)  # the padding first, one frame per live frame
    assert held.queued == 15 + 20  # live frames queued behind
    rest = [held.feed(loud(200 + i), 60.0 + i) for i in range(30)]
    said = [int(p[0]) - 1000 for p, _ in rest[10:30]]
    assert said == list(range(20))  # the held speech in order, with when it was said
    assert [t for _, t in rest[10:30]] == [float(i) for i in range(20)]


def test_a_pause_takes_the_delay_back() -> None:
    held = backlog()
    held.attach(False)
    for i in range(10):
        held.hold(loud(i), 0.0)
    held.attach(True)
    queued = held.queued
    for _ in range(KEEP_QUIET_FRAMES):  # a short gap is kept as it was
        held.feed(QUIET, 0.0)
    assert held.queued == queued
    while held.queued:  # longer pauses are skipped until caught up
        held.feed(QUIET, 0.0)
    frame = loud(0)
    assert held.feed(frame, 0.0)[0] is frame


def test_bounded_and_off() -> None:
    held = backlog(1.0)  # 50 frames
    held.attach(False)
    for i in range(200):
        held.hold(loud(i), 0.0)
    held.attach(True)
    assert held.queued == 50 and held.dropped > 0
    off = backlog(0.0)
    off.attach(False)
    assert any([off.hold(loud(i), 0.0) for i in range(10)])  # still wakes the session
    off.attach(True)
    assert off.queued == 0


def test_a_detach_mid_sentence_is_a_new_start() -> None:
    held = backlog()
    held.attach(False)
    for i in range(10):
        held.hold(loud(i), 0.0)
    held.attach(True)
    held.attach(False)  # that call dropped before the held speech went out: it waits
    queued = held.queued
    assert any([held.hold(loud(i), 0.0) for i in range(10)])  # speaking on: a new start
    held.attach(True)
    assert held.queued == queued + 10
