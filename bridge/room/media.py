"""LiveKit frames <-> aiortc tracks, for one human's session.

    mic:     rtc.AudioStream (48 kHz mono, 20 ms) -> MicrophonePump -> UplinkGate -> PcmAudioTrack
    camera:  rtc.VideoStream -> VideoSampler (<= fps, <= max size) -> VideoFrameTrack -> model
    voice:   model -> AudioReceiver -> SpeakerPump -> rtc.AudioSource -> agent track in the room

Each pump is a loop its owner (the session) runs as a task. The sinks can be swapped while the
loops run, so one pump serves every call a session makes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from livekit import rtc

from bridge.audio import FRAME_MS, SAMPLE_RATE, Pcm, audible_span
from bridge.metrics import AUDIO_FRAMES_DROPPED
from bridge.realtime.instruments import FrameProbe
from bridge.realtime.tracks import AudioReceiver, VideoFrameTrack
from bridge.room.uplink import UplinkGate
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)


class MicrophonePump:
    """The human's microphone into the current call, through its gate (bridge/room/uplink.py):
    with no call attached (the session is idle) the gate listens for speech and sets ``woke``."""

    def __init__(
        self, track: rtc.Track, settings: Settings, probe: FrameProbe | None = None
    ) -> None:
        self._track = track
        self.gate = UplinkGate(settings, probe)

    async def run(self) -> None:
        stream = rtc.AudioStream(
            self._track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=FRAME_MS
        )
        gate = self.gate
        try:
            async for event in stream:
                gate.frame(np.frombuffer(event.frame.data, dtype=np.int16))
        finally:
            await stream.aclose()


def fit(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The largest even size within the limits that keeps the aspect ratio."""
    scale = min(1.0, max_width / width, max_height / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class VideoSampler:
    """The human's camera (or screen share) into the current call at no more than ``video_fps``
    frames per second and no larger than ``video_max_width`` x ``video_max_height``. Frames in
    between are never converted: only the sampled ones cost CPU."""

    def __init__(self, settings: Settings) -> None:
        self._interval = 1.0 / settings.video_fps
        self._max = (settings.video_max_width, settings.video_max_height)
        self._sink: VideoFrameTrack | None = None
        self._last = -float("inf")

    def attach(self, sink: VideoFrameTrack | None) -> None:
        self._sink = sink
        self._last = -float("inf")

    async def run(self, track: rtc.Track) -> None:
        stream = rtc.VideoStream(track)
        try:
            async for event in stream:
                now = time.monotonic()
                sink = self._sink
                if sink is None or now - self._last < self._interval:
                    continue
                self._last = now
                sink.push(self._convert(event.frame))
        finally:
            await stream.aclose()

    def _convert(self, frame: rtc.VideoFrame) -> av.VideoFrame:
        rgb = frame.convert(rtc.VideoBufferType.RGB24)
        pixels = np.frombuffer(rgb.data, dtype=np.uint8).reshape(rgb.height, rgb.width, 3)
        out = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        width, height = fit(rgb.width, rgb.height, *self._max)
        return out.reformat(width=width, height=height, format="yuv420p")


# Between answers the model's stream is digital silence; after this many silent frames in a row
# we stop handing frames to LiveKit (its source fills the gap itself) until sound returns. Each
# frame skipped saves a round trip through the SDK and an Opus encode.
QUIET_LEVEL = 16
QUIET_FRAMES_BEFORE_SKIP = 10


class SpeakerPump:
    """The model's voice into the room. ``flush()`` drops everything queued at once (barge-in)
    and keeps dropping what is still in flight from the interrupted answer until ``reopen()``."""

    def __init__(
        self,
        source: rtc.AudioSource,
        probe: FrameProbe | None = None,
        on_sound: Callable[[float], None] | None = None,
        on_quiet: Callable[[float], None] | None = None,
    ) -> None:
        self._source = source
        self._probe = probe  # a benchmark's (bridge/realtime/instruments.py)
        # Told (monotonic time) when a stretch of answer audio began in the room: its first
        # audible frame after each ``reopen`` or after the answer went quiet. ``on_quiet`` is
        # told when the stretch ended (QUIET_FRAMES_BEFORE_SKIP silent frames after sound) with
        # the time its last audible sample ended. A frame starts playing when it is handed on
        # plus what LiveKit's source still had queued: while the source has audio, that is
        # the end of the audio before it (hand-over times jitter with the event loop, the sum
        # does not); when the source ran dry (the model's audio came late), it is now, after
        # the silence the room heard. Stretches are timed to the sample: their first and last
        # audible samples, not their frames' starts.
        self._on_sound = on_sound
        self._on_quiet = on_quiet
        self._sounding = False  # a stretch of sound is going on
        self._last_audible = 0.0  # when the last audible frame began in the room
        self._last_frame: Pcm | None = None  # that frame (each frame is its own array)
        self._fresh = False
        self._open = True
        self.pushed_seconds = 0.0
        self.dropped = 0
        self._quiet_run = 0
        self.last_sound_at = -float("inf")  # monotonic time of the last audible frame handed on
        self.residence: deque[float] = deque(maxlen=10_000)
        # Seconds already queued in LiveKit's source when each frame was handed over (sampled
        # only while a measurement probe is set).
        self.source_queue: deque[float] = deque(maxlen=10_000)
        self._receiver: AudioReceiver | None = None

    @property
    def played_seconds(self) -> float:
        """Audio that has left for the room (pushed minus still queued in the source)."""
        return max(0.0, self.pushed_seconds - self._source.queued_duration)

    def flush(self) -> None:
        self._open = False
        self._sounding = False
        self._source.clear_queue()
        if self._receiver is not None:
            dropped = self._receiver.clear()
            if dropped:
                logger.debug("barge-in dropped %d queued frames", dropped)

    def _quiet(self) -> bool:
        """One more silent frame; True once there were enough to skip it."""
        self._quiet_run += 1
        if self._quiet_run == QUIET_FRAMES_BEFORE_SKIP and self._sounding:
            self._sounding = False
            if self._on_quiet is not None and self._last_frame is not None:
                span = audible_span(self._last_frame, QUIET_LEVEL)
                end = span[1] if span else len(self._last_frame)
                self._on_quiet(self._last_audible + end / SAMPLE_RATE)
        return self._quiet_run > QUIET_FRAMES_BEFORE_SKIP

    def _sounded(self, pcm: Pcm, starts_at: float) -> None:
        """An audible frame, starting to play at ``starts_at`` (monotonic), was handed on: a
        stretch of sound begins (tell ``on_sound``) or goes on."""
        stretch = self._fresh or not self._sounding
        self._fresh = False
        self._sounding = True
        self._last_audible = starts_at
        self._last_frame = pcm
        if stretch and self._on_sound is not None:
            span = audible_span(pcm, QUIET_LEVEL)
            self._on_sound(starts_at + (span[0] if span else 0) / SAMPLE_RATE)

    def reopen(self) -> None:
        self._open = True
        self._fresh = True

    async def run(self, receiver: AudioReceiver) -> None:
        self._receiver = receiver
        dropped_seen = 0
        try:
            async for pcm, decoded_at in receiver.timed_frames():
                if receiver.dropped_frames != dropped_seen:
                    new = receiver.dropped_frames - dropped_seen
                    AUDIO_FRAMES_DROPPED.labels("downlink").inc(new)
                    self.dropped += new
                    dropped_seen = receiver.dropped_frames
                if not self._open:
                    continue
                # Two reductions, no temporary array (np.abs would allocate one per frame).
                audible = int(pcm.max()) > QUIET_LEVEL or int(pcm.min()) < -QUIET_LEVEL
                starts_at = 0.0
                if not audible:
                    if self._quiet():
                        continue
                else:
                    self._quiet_run = 0
                    self.last_sound_at = time.monotonic()
                    starts_at = self.last_sound_at + self._source.queued_duration
                # The SDK copies the samples into its own buffer: no tobytes() copy first.
                frame = rtc.AudioFrame(pcm.data, SAMPLE_RATE, 1, len(pcm))
                if self._probe is not None:
                    self.source_queue.append(self._source.queued_duration)
                await self._source.capture_frame(frame)
                if audible:
                    self._sounded(pcm, starts_at)
                now = time.perf_counter()
                self.residence.append(now - decoded_at)
                if self._probe is not None:
                    self._probe("downlink_out", pcm, now)
                self.pushed_seconds += len(pcm) / SAMPLE_RATE
        finally:
            self._receiver = None


__all__ = ["MicrophonePump", "SpeakerPump", "VideoSampler", "fit"]
