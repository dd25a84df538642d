"""Shared mode's uplink: every human's microphone mixed into one call, and who spoke when.

    mics = MixedMicrophones(settings)
    mics.add("alice", track)                 # any time, also while running
    task = asyncio.create_task(mics.run())   # mixed 20 ms frames -> the attached call
    mics.gate.attach(pcm_track)              # the call's uplink (None: listen for speech only)
    mics.speaker(start_ms, end_ms)           # whose turn that span of the call's input was
    await mics.remove("alice")

Mixing is the SDK's ``rtc.AudioMixer`` with 20 ms blocks (its default is 100 ms, which would
add 80 ms to every turn) and a 40 ms stream timeout: a late microphone is zero-padded for that
block instead of holding the others back for the default 100 ms.

Attribution: while mixing, each microphone's 20 ms frames are measured (mean power, and
whether the frame is speech by the same energy threshold as the wake VAD). A committed turn's
span, given by the service in the call's input clock (``audio_start_ms`` .. ``audio_end_ms``),
is mapped back to our wall clock through the frames we sent, and the turn goes to the human with
the most speech frames in it; a tie goes to the higher total energy, then to whoever started
speaking first. No speech at all in the span: the most energy.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from bridge.audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from bridge.room.uplink import UplinkGate
from bridge.settings.config import Settings
from bridge.vad import VadConfig

logger = logging.getLogger(__name__)

BLOCK_SAMPLES = FRAME_SAMPLES  # 20 ms
STREAM_TIMEOUT_MS = 40
MIXER_CAPACITY = 10  # mixed frames buffered (200 ms); the call's track has its own queue
LEVEL_SECONDS = 60.0  # measurements kept per microphone (a turn is rarely longer)
SLACK_SECONDS = 0.1  # widen a turn's span by this much each side
_LEVEL_FRAMES = int(LEVEL_SECONDS * 1000 / FRAME_MS)


class _QuietMixerWarnings(logging.Filter):
    """The SDK logs a warning for every zero-padded block: a muted microphone would log 50 lines
    a second. They are counted instead (``MixedMicrophones.padded``)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("AudioMixer: stream"):
            self.count += 1
            return False
        return True


_PADDED = _QuietMixerWarnings()
logging.getLogger("livekit").addFilter(_PADDED)


@dataclass(eq=False)  # hashed by identity: the mixer keeps its streams in a set
class _Mic:
    """One microphone as a stream of frames for the mixer, measured on the way through."""

    identity: str
    stream: rtc.AudioStream
    speech_power: float
    times: deque[float] = field(default_factory=lambda: deque(maxlen=_LEVEL_FRAMES))
    powers: deque[float] = field(default_factory=lambda: deque(maxlen=_LEVEL_FRAMES))

    def __aiter__(self) -> _Mic:
        return self

    async def __anext__(self) -> rtc.AudioFrame:
        event = await self.stream.__anext__()
        pcm = np.frombuffer(event.frame.data, dtype=np.int16)
        wide = pcm.astype(np.float32)
        self.times.append(time.monotonic())
        self.powers.append(float(np.dot(wide, wide)) / max(1, len(pcm)))
        return event.frame

    def measure(self, start: float, end: float) -> tuple[int, float, float]:
        """(speech frames, total power, first speech time) between ``start`` and ``end``."""
        times = list(self.times)
        lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
        powers = list(self.powers)[lo:hi]
        speech = [t for t, p in zip(times[lo:hi], powers, strict=True) if p > self.speech_power]
        return len(speech), sum(powers), speech[0] if speech else float("inf")


class MixedMicrophones:
    def __init__(self, settings: Settings) -> None:
        config = VadConfig(threshold=settings.vad_threshold)
        # A frame's mean power above this is speech (the energy VAD's threshold).
        self._speech_power = (10 ** (config.threshold_dbfs / 10)) * 32768.0**2
        self.gate = UplinkGate(settings)  # the mix into the call (bridge/room/uplink.py)
        self._mics: dict[str, _Mic] = {}
        self._mixer: rtc.AudioMixer | None = None
        # (the call's input clock in ms, wall-clock time) as each mixed frame was sent.
        self._sent: deque[tuple[int, float]] = deque(maxlen=_LEVEL_FRAMES)
        self.mixed_frames = 0

    @property
    def padded(self) -> int:
        """Blocks the mixer zero-padded for a late microphone (all sessions of the process)."""
        return _PADDED.count

    def identities(self) -> list[str]:
        return list(self._mics)

    def add(self, identity: str, track: rtc.Track) -> None:
        if identity in self._mics:
            return
        stream = rtc.AudioStream(
            track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=FRAME_MS
        )
        mic = _Mic(identity, stream, self._speech_power)
        self._mics[identity] = mic
        if self._mixer is not None:
            self._mixer.add_stream(mic)

    async def remove(self, identity: str) -> None:
        mic = self._mics.pop(identity, None)
        if mic is None:
            return
        if self._mixer is not None:
            self._mixer.remove_stream(mic)
        await mic.stream.aclose()

    async def aclose(self) -> None:
        for identity in list(self._mics):
            await self.remove(identity)

    # ---- the uplink (like MicrophonePump: frames through the gate) ------------------------------

    async def run(self) -> None:
        mixer = rtc.AudioMixer(
            SAMPLE_RATE,
            1,
            blocksize=BLOCK_SAMPLES,
            stream_timeout_ms=STREAM_TIMEOUT_MS,
            capacity=MIXER_CAPACITY,
        )
        self._mixer = mixer
        for mic in self._mics.values():
            mixer.add_stream(mic)
        gate = self.gate
        attachments = gate.attachments
        try:
            async for frame in mixer:
                self.mixed_frames += 1
                if gate.attachments != attachments:
                    attachments = gate.attachments
                    self._sent.clear()  # another call: another input clock
                # Held speech goes out late: attributed by when it was said.
                sent = gate.frame(np.frombuffer(frame.data, dtype=np.int16))
                if sent is not None:
                    self._sent.append(sent)
        finally:
            self._mixer = None
            await mixer.aclose()

    # ---- attribution ---------------------------------------------------------------------------

    def _wall_time(self, input_ms: int) -> float | None:
        """When the call's input was at ``input_ms`` (its clock runs on through silence fill,
        so from the nearest frame we sent, at real-time rate)."""
        if not self._sent:
            return None
        sent = list(self._sent)
        index = max(0, bisect.bisect_right(sent, (input_ms, float("inf"))) - 1)
        at_ms, at = sent[index]
        return at + (input_ms - at_ms) / 1000

    def speaker(self, start_ms: int, end_ms: int | None) -> str | None:
        """Who spoke the call's input between ``start_ms`` and ``end_ms`` (None: until now)."""
        start = self._wall_time(start_ms)
        end = self._wall_time(end_ms) if end_ms is not None else time.monotonic()
        if start is None or end is None:
            return None
        return self.loudest(start - SLACK_SECONDS, end + SLACK_SECONDS)

    def loudest(self, start: float, end: float) -> str | None:
        """The human with the most speech between two wall-clock times (see module doc)."""
        best: tuple[int, float, float] | None = None
        who: str | None = None
        for identity, mic in self._mics.items():
            frames, power, first = mic.measure(start, end)
            if power <= 0:
                continue
            key = (frames, power, -first)
            if best is None or key > best:
                best, who = key, identity
        return who
