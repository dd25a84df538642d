"""The emulator's outgoing audio: a real-time paced track that plays queued answers.

Like the service over WebRTC it sends continuously (silence between answers, Opus without DTX).
It reports when an answer starts and finishes playing, and how much of it was played, which is
what ``output_audio_buffer.*`` events and truncation need.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from typing import Any, Protocol

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from bridge.audio import FRAME_SAMPLES, SAMPLE_RATE, Pcm

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def tone(freq: float, seconds: float, amplitude: float = 0.25) -> Pcm:
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # 10 ms fades keep the tone free of clicks that a VAD would hear as speech edges.
    env = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / (0.01 * SAMPLE_RATE))
    return (np.sin(2 * np.pi * freq * t) * env * amplitude * 32767).astype(np.int16)


class Speaker(Protocol):
    """Where the fake model's answer audio goes: played out in real time (``VoiceTrack``,
    WebRTC), or handed to the client as generated (``websocket.DeltaVoice``)."""

    @property
    def playing(self) -> bool:
        """Audio is playing out at the service (WebRTC's output buffer)."""

    @property
    def played_ms(self) -> int: ...

    def play(self, response_id: str, pcm: Pcm) -> None: ...

    def generated(self, where: dict[str, Any], fraction: float) -> None:
        """The model has generated ``fraction`` of the answer (``where``: the response,
        item, output and content indexes of its audio)."""

    def clear(self) -> int: ...


class VoiceTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(
        self,
        on_started: Callable[[str], None],
        on_stopped: Callable[[str], None],
    ) -> None:
        super().__init__()
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._start: float | None = None
        self._pts = 0
        self._pcm: Pcm | None = None
        self._pos = 0
        self._response_id = ""
        self._started = False
        self.voiced_frames_out = 0

    @property
    def playing(self) -> bool:
        return self._pcm is not None

    @property
    def played_ms(self) -> int:
        return self._pos * 1000 // SAMPLE_RATE

    def play(self, response_id: str, pcm: Pcm) -> None:
        """Queue ``pcm`` as the audio of ``response_id`` (replaces anything playing)."""
        self._pcm = pcm
        self._pos = 0
        self._response_id = response_id
        self._started = False

    def generated(self, where: dict[str, Any], fraction: float) -> None:
        """Nothing to do: the audio goes out over RTP in real time."""

    def clear(self) -> int:
        """Stop at once; returns the milliseconds that were played."""
        played = self.played_ms
        self._pcm = None
        self._pos = 0
        return played

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = self._next_chunk()
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk.tobytes())
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        return frame

    def advance(self) -> Pcm:
        """The next 20 ms frame without real-time pacing (runs in simulated time)."""
        return self._next_chunk()

    def _next_chunk(self) -> Pcm:
        pcm = self._pcm
        if pcm is None:
            return _SILENCE
        if not self._started:
            self._started = True
            self._on_started(self._response_id)
        chunk = pcm[self._pos : self._pos + FRAME_SAMPLES]
        self._pos += len(chunk)
        self.voiced_frames_out += 1
        if self._pos >= len(pcm):
            self._pcm = None
            self._on_stopped(self._response_id)
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, _SILENCE[: FRAME_SAMPLES - len(chunk)]])
        return chunk
