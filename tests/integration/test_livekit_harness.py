"""The harness itself: a real livekit-server carries a generated tone between two SDK clients."""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc

from bridge.local.livekit_server import LiveKitServer
from tests.support.livekit import joined
from tests.support.signals import FRAME_SAMPLES, SAMPLE_RATE, dominant_frequency, rms, tone

TONE_HZ = 440.0


async def _publish_tone(source: rtc.AudioSource, stop: asyncio.Event) -> None:
    samples = tone(TONE_HZ, 1.0)
    offset = 0
    while not stop.is_set():
        chunk = samples[offset : offset + FRAME_SAMPLES]
        if len(chunk) < FRAME_SAMPLES:
            offset = 0
            continue
        offset += FRAME_SAMPLES
        frame = rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
        await source.capture_frame(frame)


async def test_tone_crosses_real_livekit_server(livekit_server: LiveKitServer) -> None:
    room = "harness-tone"
    async with (
        joined(livekit_server, room, "listener") as listener,
        joined(livekit_server, room, "speaker") as speaker,
    ):
        subscribed: asyncio.Future[rtc.RemoteAudioTrack] = (
            asyncio.get_running_loop().create_future()
        )

        def on_subscribed(
            track: rtc.Track, _pub: rtc.RemoteTrackPublication, _p: rtc.RemoteParticipant
        ) -> None:
            if isinstance(track, rtc.RemoteAudioTrack) and not subscribed.done():
                subscribed.set_result(track)

        listener.on("track_subscribed", on_subscribed)

        source = rtc.AudioSource(SAMPLE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await speaker.local_participant.publish_track(track, options)
        stop = asyncio.Event()
        publisher = asyncio.create_task(_publish_tone(source, stop))
        try:
            remote = await asyncio.wait_for(subscribed, 15.0)
            stream = rtc.AudioStream(remote, sample_rate=SAMPLE_RATE, num_channels=1)
            received: list[np.ndarray] = []
            try:

                async def collect() -> None:
                    async for event in stream:
                        data = np.frombuffer(event.frame.data, dtype=np.int16)
                        if rms(data) > 100:  # skip the silence before the first decoded packet
                            received.append(data.copy())
                        if len(received) >= 25:  # 0.5 s of tone
                            return

                await asyncio.wait_for(collect(), 15.0)
            finally:
                await stream.aclose()
        finally:
            stop.set()
            await publisher
            await source.aclose()

    samples = np.concatenate(received)
    assert abs(dominant_frequency(samples) - TONE_HZ) < 5.0
    assert rms(samples) > 0.1 * 32767 * 0.3
