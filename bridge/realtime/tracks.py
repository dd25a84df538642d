"""Our media path on the aiortc side: tracks we feed and the loop that reads the model's audio.

Kept in our hands (rather than aiortc's MediaPlayer/MediaRelay, whose queues are unbounded) so
the performance work can replace pieces without touching callers. Audio is 48 kHz mono int16 in
20 ms frames (960 samples) everywhere in the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from bridge.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, Pcm
from bridge.realtime.instruments import FrameProbe

logger = logging.getLogger(__name__)

AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


OPUS_BITRATE = 32_000


class MonoOpusEncoder:
    """Opus, mono, 20 ms packets, speech-tuned.

    aiortc's own encoder upmixes to stereo at 96 kbit/s, runs on a thread pool (a hand-off per
    frame) and, for every frame it is given, computes the RFC 6465 audio level in pure Python.
    Handing aiortc ready-made packets skips all three; the SDP still says ``opus/48000/2``, which
    every Opus decoder plays mono packets from (the channel count is in each packet's TOC byte).
    """

    def __init__(self, bitrate: int = OPUS_BITRATE) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = bitrate
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = SAMPLE_RATE
        codec.time_base = AUDIO_TIME_BASE
        codec.options = {"application": "voip"}
        self._codec = codec
        self._pending: deque[bytes] = deque(maxlen=4)

    def encode(self, frame: av.AudioFrame) -> bytes:
        """One 20 ms packet for one 20 ms frame (priming the encoder with silence if needed)."""
        for packet in self._codec.encode(frame):
            self._pending.append(bytes(packet))
        while not self._pending:
            for packet in self._codec.encode(_silence_frame()):
                self._pending.append(bytes(packet))
        return self._pending.popleft()


def _silence_frame() -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
    frame.planes[0].update(bytes(FRAME_SAMPLES * 2))
    frame.sample_rate = SAMPLE_RATE
    frame.time_base = AUDIO_TIME_BASE
    return frame


class PcmAudioTrack(MediaStreamTrack):
    """An outgoing audio track fed with 20 ms PCM frames by ``push``; ``recv`` returns Opus
    packets (see MonoOpusEncoder).

    ``recv`` encodes a pushed frame as soon as it is there. When nothing arrives (a muted
    microphone, a stalled source) it sends silence at the real-time rate, so the far end keeps
    hearing a continuous stream and its voice detection sees the pause. The queue is bounded:
    when the encoder falls behind, the oldest audio is dropped and counted.
    """

    kind = "audio"

    def __init__(
        self,
        max_queued_frames: int = 10,
        residence: deque[float] | None = None,
        probe: FrameProbe | None = None,
    ) -> None:
        super().__init__()
        self._probe = probe  # a benchmark's (bridge/realtime/instruments.py)
        self._queue: deque[tuple[Pcm, float]] = deque(maxlen=max_queued_frames)
        self._ready = asyncio.Event()
        self._pts = 0
        self._deadline: float | None = None
        self._encoder = MonoOpusEncoder()
        self.dropped_frames = 0
        # Seconds each pushed frame waited in the bridge before reaching the encoder; read by
        # the benchmark, bounded so it never grows. Callers may share one across tracks.
        self.residence: deque[float] = residence if residence is not None else deque(maxlen=10_000)

    def push(self, pcm: Pcm) -> None:
        if self.readyState != "live":
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped_frames += 1
        self._queue.append((pcm, time.perf_counter()))
        self._ready.set()

    def clear(self) -> None:
        self._queue.clear()

    @property
    def sent_ms(self) -> int:
        """Audio handed to the far end so far, silence fill included: the far end's input clock
        (``audio_start_ms``/``audio_end_ms`` of its speech events count in it)."""
        return self._pts * 1000 // SAMPLE_RATE

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._deadline is None:
            self._deadline = now
        if not self._queue:
            self._ready.clear()
            # Wait for real audio until this frame is due plus a little slack for jitter.
            # (asyncio.timeout, unlike wait_for, does not create a task per frame.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._deadline - now) + FRAME_SECONDS):
                    await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        if self._queue:
            pcm, pushed = self._queue.popleft()
            now_pc = time.perf_counter()
            self.residence.append(now_pc - pushed)
            if self._probe is not None:
                self._probe("uplink_out", pcm, now_pc)
        else:
            pcm = _SILENCE
        self._deadline = max(self._deadline + FRAME_SECONDS, loop.time() - FRAME_SECONDS)
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm))
        frame.planes[0].update(pcm.data)  # type: ignore[arg-type]  # any buffer; stubs say bytes
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = AUDIO_TIME_BASE
        frame.pts = self._pts
        packet = av.Packet(self._encoder.encode(frame))
        packet.pts = self._pts
        packet.time_base = AUDIO_TIME_BASE
        self._pts += len(pcm)
        return packet


class VideoFrameTrack(MediaStreamTrack):
    """An outgoing video track fed with ``av.VideoFrame`` by ``push`` (already sampled and scaled
    by the caller). Holds at most two frames; older ones are dropped and counted."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[av.VideoFrame] = deque(maxlen=2)
        self._ready = asyncio.Event()
        self._start: float | None = None
        self.dropped_frames = 0

    def push(self, frame: av.VideoFrame) -> None:
        if self.readyState != "live":
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped_frames += 1
        self._queue.append(frame)
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        frame = self._queue.popleft()
        now = time.monotonic()
        if self._start is None:
            self._start = now
        frame.pts = int((now - self._start) * 90_000)
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()


def to_mono(frame: av.AudioFrame) -> Pcm:
    """48 kHz mono int16 samples from a decoded frame (aiortc decodes Opus to packed stereo)."""
    if frame.format.name == "s16" and frame.sample_rate == SAMPLE_RATE:
        channels = len(frame.layout.channels)
        plane = memoryview(frame.planes[0])
        data = np.frombuffer(plane, dtype=np.int16, count=frame.samples * channels)
        # The model speaks mono, upmixed to stereo by Opus: one channel carries it all.
        return data[::channels].copy() if channels > 1 else data.copy()
    # Anything else (a PCMU/PCMA answer, another rate): let libswresample convert it.
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(out).astype(np.int16) if out else _SILENCE[:0]


class AudioReceiver:
    """The model's voice as a bounded queue of mono PCM frames, fed by our RTP playout
    (``feed``, see playout.py). Consumers iterate ``frames()``. When the consumer is slow the
    oldest frames are dropped and counted, so a stalled room never makes audio pile up.

    ``run()`` watches the remote track only for the end of the stream (its frames come through
    the playout, never through aiortc's decoder); its owner runs it as a task and cancels it.
    """

    def __init__(
        self,
        track: MediaStreamTrack | None,
        max_queued_frames: int = 50,
        probe: FrameProbe | None = None,
    ) -> None:
        self.track = track
        self._probe = probe  # a benchmark's (bridge/realtime/instruments.py)
        # (samples, perf_counter() when decoded) or None at the end of the stream
        self._queue: asyncio.Queue[tuple[Pcm, float] | None] = asyncio.Queue(
            maxsize=max_queued_frames
        )
        self.dropped_frames = 0
        self._ended = False

    async def run(self) -> None:
        """Until the track ends; then the consumer sees the end."""
        track = self.track
        if track is None:
            raise RuntimeError("AudioReceiver.run needs a track")
        try:
            while True:
                await track.recv()  # nothing with the playout tapped in: it only ends
        except MediaStreamError:
            return
        finally:
            self.end()

    def end(self) -> None:
        """The stream is over: wake the consumer so it sees the end. Idempotent."""
        if self._ended:
            return
        self._ended = True
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def feed(self, pcm: Pcm, decoded_at: float) -> None:
        """A frame from our own RTP playout (see playout.py), queued like a decoded one."""
        if self._ended:
            return
        if self._probe is not None:
            self._probe("downlink_in", pcm, decoded_at)
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped_frames += 1
        self._queue.put_nowait((pcm, decoded_at))

    def clear(self) -> int:
        """Drop every queued frame (barge-in); returns how many were dropped."""
        n = 0
        while not self._queue.empty():
            if self._queue.get_nowait() is None:
                self._queue.put_nowait(None)
                break
            n += 1
        return n

    async def frames(self) -> AsyncIterator[Pcm]:
        async for pcm, _ in self.timed_frames():
            yield pcm

    async def timed_frames(self) -> AsyncIterator[tuple[Pcm, float]]:
        """Frames with the ``time.perf_counter()`` at which each was decoded."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item
