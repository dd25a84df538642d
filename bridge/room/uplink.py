"""The one way a session's microphone audio reaches its call: ``UplinkGate``.

A session hears one microphone (``MicrophonePump``, bridge/room/media.py) or, in shared mode,
every microphone mixed (``MixedMicrophones``, bridge/room/mixer.py). Either source hands each
20 ms frame, as it arrives, to its gate, which:

- says, from the first frame on, that the microphone is being captured (``hearing``): from
  then on nothing the human says is lost while a call connects;
- with no call attached, holds the frame in the ``Backlog`` (bridge/room/backlog.py) and sets
  ``woke`` when speech starts (an idle session dials again);
- with a call attached, sends what the backlog says goes now (held speech first) to the call's
  track, and says when that audio was captured and where the call's input clock stood;
- counts the frames the call's track dropped (``bridge_audio_frames_dropped_total{uplink}``);
- while ``watch_level`` is on (a call switch is pending, see rollover.py), notes when the human
  was last loud enough to be speaking: the model's own speech events lag behind that;
- keeps, for the call attached, where its input clock stood as recent frames went out and
  whether they were loud, so a speech event's ``audio_start_ms``/``audio_end_ms`` maps back to
  when the room heard that speech begin and end (``speech_onset``, ``speech_end``: the turn's
  spans and its latency; the model's start includes its prefix padding).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from typing import Protocol

import numpy as np

from bridge.audio import SAMPLE_RATE, Pcm, is_loud, loud_peak
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
        self.hearing = asyncio.Event()  # set at the first frame: the microphone is captured
        self.dropped = 0
        self.watch_level = False
        self.last_loud_at = -float("inf")
        self._loud_peak = loud_peak(config.threshold_dbfs)
        self._sink: PcmAudioTrack | None = None
        self.attachments = 0  # calls attached so far (each has an input clock of its own)
        self._dropped_seen = 0
        self._probe = probe  # a benchmark's (bridge/realtime/instruments.py)
        # (the call's input clock in ms, capture time) of the frames sent lately: a minute.
        self._sent: deque[tuple[int, float]] = deque(maxlen=3000)
        # Where loud stretches began and ended (the input clock's ms of their frame, the time
        # of their first / after their last loud sample), for the speech events to land on.
        self._onsets: deque[tuple[int, float]] = deque(maxlen=200)
        self._ends: deque[tuple[int, float]] = deque(maxlen=200)
        self._loud_frame: tuple[int, int, Pcm] | None = None  # the last one, while loud
        self._stretch_peak = 0  # the loudest sample of the stretch so far
        # Samples sent to the call; the stretch's first loud sample (position, time heard).
        self._position = 0
        self._stretch = (0, 0.0)

    def attach(self, sink: PcmAudioTrack | None) -> None:
        """The call's uplink track from now on (None: no call; listen for speech only)."""
        self._sink = sink
        for times in (self._sent, self._onsets, self._ends):
            times.clear()  # another call: another input clock
        self._loud_frame = None
        self._position = 0
        self.attachments += 1
        self._dropped_seen = 0
        self.woke.clear()
        self.backlog.attach(sink is not None)

    def frame(self, pcm: Pcm) -> tuple[int, float] | None:
        """One frame, just captured. When it went to a call: (the call's input clock in ms,
        the capture time of the audio sent, which is older when held speech goes first)."""
        now = time.monotonic()
        if not self.hearing.is_set():
            self.hearing.set()
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
        loud = is_loud(sent, self._loud_peak)
        if self.watch_level and loud:
            self.last_loud_at = now
        self._sent.append((sink.sent_ms, said_at))
        self._edges(sink.sent_ms, said_at, sent, loud)
        self._position += len(sent)
        return sink.sent_ms, said_at

    def _edges(self, sent_ms: int, said_at: float, pcm: Pcm, loud: bool) -> None:
        """Note where a loud stretch begins and ends, to the sample, at a quarter of its peak
        (the codec's smear around a voice is quieter). Its start is timed by its frame's
        arrival; its end by the samples since (arrival times jitter with the event loop)."""
        if loud and self._loud_frame is None:
            level = np.abs(pcm.astype(np.int32))
            self._stretch_peak = int(level.max())
            first = int(np.argmax(level > max(self._loud_peak, self._stretch_peak / 4)))
            self._stretch = (self._position + first, said_at + first / SAMPLE_RATE)
            self._onsets.append((sent_ms, self._stretch[1]))
        if loud:
            self._loud_frame = (sent_ms, self._position, pcm)
            self._stretch_peak = max(self._stretch_peak, int(pcm.max()), -int(pcm.min()))
        elif self._loud_frame is not None:
            last_ms, last_position, last_pcm = self._loud_frame
            level = np.abs(last_pcm.astype(np.int32))[::-1]
            tail = int(np.argmax(level > max(self._loud_peak, self._stretch_peak / 4)))
            start, heard = self._stretch
            samples = last_position + len(last_pcm) - tail - start
            self._ends.append((last_ms, heard + samples / SAMPLE_RATE))
            self._loud_frame = None

    def room_time(self, input_ms: int) -> float | None:
        """When the room heard what the attached call's input clock has at ``input_ms``
        (``time.monotonic()``); the clock runs on through silence fill, so it is reckoned from
        the nearest frame sent, at real-time rate. None before any frame went to this call."""
        if not self._sent:
            return None
        index = max(0, bisect.bisect_right(self._sent, (input_ms, float("inf"))) - 1)
        at_ms, at = self._sent[index]
        return at + (input_ms - at_ms) / 1000

    def speech_onset(self, start_ms: int) -> float | None:
        """When the speech the model heard from ``start_ms`` (its ``audio_start_ms``, prefix
        padding included) began in the room: its first loud sample from there on."""
        index = bisect.bisect_left(self._onsets, (start_ms, -float("inf")))
        if index < len(self._onsets):
            return self._onsets[index][1]
        return self.room_time(start_ms)

    def speech_end(self, end_ms: int) -> float | None:
        """When the speech the model heard end at ``end_ms`` (its ``audio_end_ms``) ended in
        the room: after its last loud sample before there."""
        index = bisect.bisect_left(self._ends, (end_ms, -float("inf"))) - 1
        if index >= 0:
            return self._ends[index][1]
        return self.room_time(end_ms)


class Uplink(Protocol):
    """A session's microphone source: its loop feeds every frame through ``gate``."""

    gate: UplinkGate

    async def run(self) -> None: ...


__all__ = ["Uplink", "UplinkGate"]
