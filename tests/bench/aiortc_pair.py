"""The CPU yardstick: a stock aiortc peer pair in a process of its own.

Two ``RTCPeerConnection``s on loopback, each sending 48 kHz audio (a tone in 20 ms ``av``
frames, real-time pace) through aiortc's own encoder and reading what the other sends through
aiortc's own receiver and decoder. Prints one JSON line: CPU seconds per second of the process,
and per endpoint (half of it). The bridge's CPU per session is compared against this, measured
in the same run.

    python -m tests.bench.aiortc_pair --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import time

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from bridge.realtime.ice import rtc_configuration
from bridge.settings.config import Settings
from tests.support.signals import FRAME_SAMPLES, SAMPLE_RATE, tone

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class ToneTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self._pcm = tone(freq, 1.0)
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        offset = self._pts % SAMPLE_RATE
        chunk = self._pcm[offset : offset + FRAME_SAMPLES]
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(np.ascontiguousarray(chunk).tobytes())
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = TIME_BASE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        return frame


async def drain(track: MediaStreamTrack, counter: list[int]) -> None:
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return
        counter[0] += 1


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    config = rtc_configuration(Settings(ice_host_addresses=["127.0.0.1"], ice_servers=[]))
    a, b = RTCPeerConnection(config), RTCPeerConnection(config)
    received = [0]
    tasks: list[asyncio.Task[None]] = []

    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.create_task(drain(track, received)))

    a.on("track", on_track)
    b.on("track", on_track)
    a.addTrack(ToneTrack(440))
    b.addTrack(ToneTrack(660))
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(RTCSessionDescription(a.localDescription.sdp, "offer"))
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(RTCSessionDescription(b.localDescription.sdp, "answer"))
    await asyncio.sleep(2.0)  # connected, codecs warm
    cpu, wall, frames = time.process_time(), time.monotonic(), received[0]
    await asyncio.sleep(args.seconds)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    frames = received[0] - frames
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await a.close()
    await b.close()
    per_second = cpu / wall
    print(
        json.dumps(
            {
                "pair_cores": round(per_second, 4),
                "endpoint_cores": round(per_second / 2, 4),
                "frames_received_per_s": round(frames / wall, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
