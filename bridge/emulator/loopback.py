"""``voice_mode = "loopback"``: every audio packet the call receives goes straight back.

No VAD, no turn, no decode, no re-encode and no pacing: the encoded payload is taken from RTP
(past SRTP and aiortc's checks, before any jitter buffer) and handed to the call's sender as a
ready packet, keeping the sender's RTP timestamps in step with the received ones. So the model
adds next to nothing to a round trip, and what it does add is measured: ``residence`` holds, per
packet, the seconds from its arrival to the moment aiortc's sender took it back.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from bridge.realtime.playout import TappedPacket

# Packets waiting for the sender; the sender takes each at once, so this only bounds a stall.
MAX_QUEUED = 50


class LoopbackTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[tuple[TappedPacket, float] | None] = asyncio.Queue(MAX_QUEUED)
        self._first_ts: int | None = None
        self.packets = 0
        self.dropped = 0
        self.residence: deque[float] = deque(maxlen=10_000)

    def on_packet(self, packet: TappedPacket) -> None:
        if self.readyState != "live":
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait((packet, time.perf_counter()))

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        packet, arrived = item
        if self._first_ts is None:
            self._first_ts = packet.timestamp
        out = av.Packet(packet.payload)
        out.pts = (packet.timestamp - self._first_ts) % (1 << 32)
        out.time_base = fractions.Fraction(1, packet.clock_rate)
        self.packets += 1
        self.residence.append(time.perf_counter() - arrived)
        return out

    def stop(self) -> None:
        super().stop()
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def stats(self) -> dict[str, Any]:
        ordered = sorted(self.residence)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000, 3)

        return {
            "packets": self.packets,
            "dropped": self.dropped,
            "residence_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        }
