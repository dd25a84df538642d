"""Shared mode's attribution (bridge/room/mixer.py): whose turn a span of the mixed input was.

The measurements a microphone keeps while mixing (one time and mean power per 20 ms frame) are
filled in directly, so overlapping speech can be set up frame by frame.
"""

from __future__ import annotations

import time
from typing import cast

from livekit import rtc

from bridge.room.mixer import SLACK_SECONDS, MixedMicrophones, _Mic
from tests.support.env import test_settings

T0 = time.monotonic() - 60  # wall clock of the first frame (a minute ago)
FRAME_S = 0.02
FRAMES = 50  # one second


def microphones(**levels: list[float]) -> MixedMicrophones:
    """Microphones whose frame ``n`` (at ``T0 + n * 20 ms``) had mean power ``levels[who][n]``,
    in multiples of the speech threshold (above 1: a speech frame)."""
    mics = MixedMicrophones(test_settings())
    for identity, powers in levels.items():
        mic = _Mic(identity, cast(rtc.AudioStream, None), mics._speech_power)
        for n, level in enumerate(powers):
            mic.times.append(T0 + n * FRAME_S)
            mic.powers.append(level * mic.speech_power)
        mics._mics[identity] = mic
    return mics


def span(speech: range, level: float, quiet: float = 0.01) -> list[float]:
    """One second of frames: ``level`` during ``speech`` (frame numbers), ``quiet`` elsewhere."""
    return [level if n in speech else quiet for n in range(FRAMES)]


END = T0 + FRAMES * FRAME_S


def test_overlapping_speech_goes_to_whoever_spoke_most() -> None:
    # Both spoke at once; Bob was far louder, but Alice spoke for more frames.
    mics = microphones(alice=span(range(0, 30), 2.0), bob=span(range(20, 40), 50.0))
    assert mics.loudest(T0, END) == "alice"
    # Only the overlap and Bob's tail: now Bob has the most speech frames.
    assert mics.loudest(T0 + 25 * FRAME_S, END) == "bob"


def test_a_tie_in_speech_goes_to_the_higher_energy() -> None:
    mics = microphones(alice=span(range(0, 25), 2.0), bob=span(range(25, 50), 3.0))
    assert mics.loudest(T0, END) == "bob"
    mics = microphones(alice=span(range(0, 25), 3.0), bob=span(range(25, 50), 2.0))
    assert mics.loudest(T0, END) == "alice"


def test_a_full_tie_goes_to_whoever_started_first() -> None:
    mics = microphones(alice=span(range(30, 40), 2.0), bob=span(range(10, 20), 2.0))
    assert mics.loudest(T0, END) == "bob"


def test_no_speech_goes_to_the_most_energy_and_silence_to_nobody() -> None:
    mics = microphones(alice=span(range(0), 0.0, quiet=0.2), bob=span(range(0), 0.0, quiet=0.5))
    assert mics.loudest(T0, END) == "bob"
    muted = microphones(alice=[0.0] * FRAMES, bob=[0.0] * FRAMES)
    assert muted.loudest(T0, END) is None
    assert microphones().loudest(T0, END) is None


def test_a_turn_in_the_calls_clock_is_mapped_back_to_who_spoke_then() -> None:
    # Alice speaks in the first half second, Bob in the second.
    mics = microphones(alice=span(range(0, 25), 2.0), bob=span(range(25, 50), 2.0))
    assert mics.speaker(0, 400) is None  # nothing sent yet: no clock to map the span with
    # The call's input clock started 5 s into its life when our first frame went out.
    for n in range(FRAMES):
        mics._sent.append((5000 + n * 20, T0 + n * FRAME_S))
    assert mics.speaker(5000, 5400) == "alice"
    assert mics.speaker(5600, 6000) == "bob"
    assert mics.speaker(5700, None) == "bob"  # still open: until now
    for mic in mics._mics.values():
        assert mic.measure(T0, END)[0] == 25


def test_a_turn_span_is_widened_by_the_slack() -> None:
    # Alice speaks until frame 24; Bob only breathes, but louder than Alice's silence.
    mics = microphones(alice=span(range(0, 25), 2.0), bob=[0.5] * FRAMES)
    for n in range(FRAMES):
        mics._sent.append((n * 20, T0 + n * FRAME_S))
    slack_ms = int(SLACK_SECONDS * 1000)
    # The service put the turn's start a little after Alice's last words: her speech frames
    # within the slack still win over Bob's energy.
    assert mics.speaker(500 + slack_ms - 60, 600 + slack_ms) == "alice"
    assert mics.loudest(T0 + 0.5 + slack_ms / 1000 - 0.06, END) == "bob"  # unwidened
