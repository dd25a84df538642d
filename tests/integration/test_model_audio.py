"""The model's audio leg end to end over real WebRTC: our RTP playout, the emulator's loopback
voice, and correctness when the model's packets are lost and jittered."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from bridge.emulator.app import EmulatorServer
from bridge.realtime import RealtimeCall, build_session
from bridge.realtime.playout import Impairment
from bridge.realtime.tracks import FRAME_SAMPLES, PcmAudioTrack
from tests.clicks import OnsetDetector, click_frame, match
from tests.env import test_settings
from tests.signals import silence, tone

pytestmark = pytest.mark.timeout(60)

CLICK_EVERY = 10  # frames: a click each 200 ms


async def click_train(
    call: RealtimeCall, track: PcmAudioTrack, clicks: int, *, hum: bool
) -> dict[str, Any]:
    """Push ``clicks`` clicks (a quiet hum between them when ``hum``) at real-time pace and
    record what comes back: onsets, and the gaps between consecutive frames delivered."""
    detector = OnsetDetector()
    arrivals: list[float] = []
    sent: list[float] = []
    quiet = (tone(300, 0.02, amplitude=0.02) if hum else silence(0.02))[:FRAME_SAMPLES]

    async def listen() -> None:
        async for pcm, at in call.audio_out.timed_frames():
            arrivals.append(at)
            detector.push(pcm, at)

    listener = asyncio.create_task(listen())
    click = click_frame()
    start = time.perf_counter()
    try:
        for i in range(clicks * CLICK_EVERY):
            if i % CLICK_EVERY == 0:
                sent.append(time.perf_counter())
                track.push(click)
            else:
                track.push(quiet)
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.perf_counter()))
        await asyncio.sleep(0.5)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    steady = [t for t in arrivals if t > start + 0.5]
    gaps = [b - a for a, b in itertools.pairwise(steady)]
    return {
        "sent": sent,
        "trips": match(sent, detector.onsets, window=0.18),
        "max_gap": max(gaps) if gaps else None,
        "frames": len(arrivals),
    }


async def test_loopback_returns_every_click_and_reports_its_residence(
    emulator: EmulatorServer,
) -> None:
    emulator.emulator.options.voice_mode = "loopback"
    settings = test_settings(openai_base_url=emulator.base_url)
    track = PcmAudioTrack()
    async with RealtimeCall(settings, session=build_session(settings), audio=track) as call:
        result = await click_train(call, track, 15, hum=False)
        snapshot = emulator.emulator.calls[call.call_id or ""].snapshot()
        playout = call.playout
    assert len(result["trips"]) == 15, result
    loopback = snapshot["loopback"]
    assert loopback["packets"] >= 15 * CLICK_EVERY
    assert loopback["residence_ms"]["p50"] is not None
    assert snapshot["events_out"].get("response.created") is None  # no turns in loopback
    assert playout is not None and playout.stats.concealed == 0 and playout.stats.late == 0


async def test_lossy_jittery_model_audio_still_plays(emulator: EmulatorServer) -> None:
    """5 % of the model's RTP packets dropped, the rest jittered by +-20 ms (on our receive
    side): the audio still arrives, never stalls for more than 100 ms, and its delay does not
    grow."""
    emulator.emulator.options.voice_mode = "loopback"
    settings = test_settings(openai_base_url=emulator.base_url)
    track = PcmAudioTrack()
    impairment = Impairment(loss=0.05, jitter=0.020, seed=13)
    async with RealtimeCall(
        settings, session=build_session(settings), audio=track, impairment=impairment
    ) as call:
        result = await click_train(call, track, 40, hum=True)
        playout = call.playout
    assert playout is not None
    trips: list[float] = result["trips"]
    # Audio delivered: every click but the few whose packet was dropped (5 % of 40, seeded).
    assert len(trips) >= 40 - 6, result
    assert impairment.dropped > 0 and playout.stats.concealed > 0
    # No stall: frames keep coming; a lost packet is concealed, not waited for.
    assert result["max_gap"] is not None and result["max_gap"] < 0.100, result["max_gap"]
    # No growing delay: the last clicks come back no later than the first ones (+ jitter).
    third = len(trips) // 3
    early = sorted(trips[:third])[third // 2]
    late = sorted(trips[-third:])[third // 2]
    assert late - early < 0.040, (early, late)
