"""The latency baseline: an SDK participant that republishes what it hears, in a process of its
own like the bridge. LiveKit -> rtc.AudioStream (48 kHz mono, 20 ms, as the bridge reads a
microphone) -> rtc.AudioSource (the bridge's queue size, fed like the bridge's SpeakerPump) ->
LiveKit: LiveKit's own two legs and the SDK's buffers, once each way, and nothing else.

    python -m tests.bench.republisher --room R   (LIVEKIT_* from env; stops on a stdin line)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import numpy as np
from livekit import api, rtc

from bridge.room.media import QUIET_FRAMES_BEFORE_SKIP, QUIET_LEVEL
from bridge.settings.config import Settings

SAMPLE_RATE = 48_000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--room", required=True)
    args = parser.parse_args()
    queue_ms = Settings.model_fields["audio_queue_ms"].default
    token = (
        api.AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
        .with_identity("republisher")
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=args.room))
        .to_jwt()
    )
    room = rtc.Room()
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=queue_ms)
    tasks: list[asyncio.Task[None]] = []

    async def relay(track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=20)
        quiet_run = 0
        try:
            async for event in stream:
                # The bridge's SpeakerPump rule: stop feeding the source after a run of digital
                # silence (its queue drains), so both paths buffer alike.
                pcm = np.frombuffer(event.frame.data, dtype=np.int16)
                if int(pcm.max()) <= QUIET_LEVEL and int(pcm.min()) >= -QUIET_LEVEL:
                    quiet_run += 1
                    if quiet_run > QUIET_FRAMES_BEFORE_SKIP:
                        continue
                else:
                    quiet_run = 0
                await source.capture_frame(event.frame)
        finally:
            await stream.aclose()

    def on_track(track: rtc.Track, *_: object) -> None:
        if isinstance(track, rtc.RemoteAudioTrack) and not tasks:
            tasks.append(asyncio.create_task(relay(track)))

    room.on("track_subscribed", on_track)
    await asyncio.wait_for(
        room.connect(os.environ["LIVEKIT_URL"], token, rtc.RoomOptions(connect_timeout=10.0)), 15
    )
    track = rtc.LocalAudioTrack.create_audio_track("republished", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await room.local_participant.publish_track(track, options)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await room.disconnect()
    await source.aclose()


if __name__ == "__main__":
    asyncio.run(main())
