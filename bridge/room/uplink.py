"""The one way a session's microphone audio reaches its call: ``UplinkGate``.

A session hears one microphone (``MicrophonePump``, bridge/room/media.py) or, in shared mode,
every microphone mixed (``MixedMicrophones``, bridge/room/mixer.py). Either source hands each
20 ms frame, as it arrives, to its gate, which:

- with no call attached, holds the frame in the ``Backlog`` (bridge/room/backlog.py) and sets
  ``woke`` when speech starts (an idle session dials again);
- with a call attached, sends what the backlog says goes now (held speech first) to the call's
  track, and says when that audio was captured and where the call's input clock stood;
- counts the frames the call's track dropped (``bridge_audio_frames_dropped_total{uplink}``);
- while ``watch_level`` is on (a call switch is pending, see rollover.py), notes when the human
  was last loud enough to be speaking: the model's own speech events lag behind that.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from bridge.audio import Pcm, is_loud, loud_peak
from bridge.metrics import AUDIO_FRAMES_DROPPED
from bridge.realtime.instruments import FrameProbe
from bridge.realtime.tracks import PcmAudioTrack
from bridge.room.backlog import Backlog
from bridge.settings.config import Settings
from bridge.vad import VadConfig


class UplinkGate:
    def __init__(self, settings: Settings, probe: FrameProbe | None = None) -> None:
        config = VadConfig(threshold=settings.vad_threshold)
        self.backlog = Backlog(config, settings.uplink_backlog_s)
        self.woke = asyncio.Event()
        self.dropped = 0
        self.watch_level = False
        self.last_loud_at = -float("inf")
        self._loud_peak = loud_peak(config.threshold_dbfs)
        self._sink: PcmAudioTrack | None = None
        self.attachments = 0  # calls attached so far (each has an input clock of its own)
        self._dropped_seen = 0
        self._probe = probe  # a benchmark's (bridge/realtime/instruments.py)

    def attach(self, sink: PcmAudioTrack | None) -> None:
        """The call's uplink track from now on (None: no call; listen for speech only)."""
        self._sink = sink
        self.attachments += 1
        self._dropped_seen = 0
        self.woke.clear()
        self.backlog.attach(sink is not None)

    def frame(self, pcm: Pcm) -> tuple[int, float] | None:
        """One frame, just captured. When it went to a call: (the call's input clock in ms,
        the capture time of the audio sent, which is older when held speech goes first)."""
        now = time.monotonic()
        if self._probe is not None:
            self._probe("uplink_in", pcm, time.perf_counter())
        sink = self._sink
        if sink is None:
            if self.backlog.hold(pcm, now):
                self.woke.set()
            return None
        sent, said_at = self.backlog.feed(pcm, now)
        sink.push(sent)
        if sink.dropped_frames != self._dropped_seen:
            new = sink.dropped_frames - self._dropped_seen
            AUDIO_FRAMES_DROPPED.labels("uplink").inc(new)
            self.dropped += new
            self._dropped_seen = sink.dropped_frames
        if self.watch_level and is_loud(pcm, self._loud_peak):
            self.last_loud_at = now
        return sink.sent_ms, said_at


class Uplink(Protocol):
    """A session's microphone source: its loop feeds every frame through ``gate``."""

    gate: UplinkGate

    async def run(self) -> None: ...


__all__ = ["Uplink", "UplinkGate"]
