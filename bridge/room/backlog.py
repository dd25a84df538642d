"""What a human says while no model call is up, kept for the next call.

Between a dropped call and its replacement (or while an idle session wakes up) the microphone
has nowhere to go. ``Backlog`` holds those frames (at most ``uplink_backlog_s``), and once a call
is attached again sends them first: from where speech started (the energy detector's start,
with its prefix padding), or nothing if no one spoke. The call then hears the held speech at the
real-time rate, one held frame for each live frame arriving, with the live frames queued behind;
the delay this adds is taken back in the next pause, whose quiet frames beyond a short gap are
skipped while anything is still queued. The queue is bounded too: what overflows is counted.
"""

from __future__ import annotations

from collections import deque

from bridge.audio import FRAME_MS, Pcm, is_loud, loud_peak
from bridge.vad import EnergyVad, VadConfig, VadEvent

# While catching up, quiet live frames are kept up to this many in a row (a short gap between
# words stays as it was); longer pauses are shortened.
KEEP_QUIET_FRAMES = 10


class Backlog:
    def __init__(self, config: VadConfig, max_s: float) -> None:
        self._config = config
        self._max_frames = int(max_s * 1000 / FRAME_MS)
        self._loud_peak = loud_peak(config.threshold_dbfs)
        self._vad = EnergyVad(config)
        # (detector ms, monotonic capture time, frame)
        self._held: deque[tuple[int, float, Pcm]] = deque(maxlen=self._max_frames or 1)
        self._speech_from: int | None = None
        self._replay: deque[tuple[Pcm, float]] = deque()
        self._quiet_run = 0
        self.dropped = 0  # held or queued speech lost to the bounds
        self.replayed = 0  # held frames sent to a call

    @property
    def queued(self) -> int:
        """Frames waiting to be sent to the current call."""
        return len(self._replay)

    def hold(self, pcm: Pcm, now: float) -> bool:
        """A frame (captured at ``now``, monotonic) while no call is up. True when speech
        starts (the session wakes up)."""
        at = self._vad.audio_ms
        started = self._vad.push(pcm) is VadEvent.STARTED
        if self._max_frames:
            full = len(self._held) == self._held.maxlen
            if full and self._speech_from is not None and self._held[0][0] >= self._speech_from:
                self.dropped += 1  # speech older than the bound
            self._held.append((at, now, pcm))
        if started and self._speech_from is None:
            self._speech_from = self._vad.speech_start_ms
        return started

    def attach(self, call: bool) -> None:
        """A call was attached (``True``: what was said meanwhile goes to it) or detached."""
        if call and self._speech_from is not None:
            spoken = [(pcm, t) for at, t, pcm in self._held if at >= self._speech_from]
            self._replay.extend(spoken)
            self.replayed += len(spoken)
            self._trim()
        # Detached: speech still queued for the old call waits for the next one.
        self._held.clear()
        self._speech_from = None
        self._vad = EnergyVad(self._config)  # a human mid-sentence now is a new start
        self._quiet_run = 0

    def feed(self, pcm: Pcm, now: float) -> tuple[Pcm, float]:
        """A live frame (captured at ``now``) while a call is up: what to send now and when it
        was captured (held speech first, this frame queued behind it unless it is a quiet one
        skipped to catch up)."""
        if not self._replay:
            return pcm, now
        loud = is_loud(pcm, self._loud_peak)
        self._quiet_run = 0 if loud else self._quiet_run + 1
        if loud or self._quiet_run <= KEEP_QUIET_FRAMES:
            self._replay.append((pcm, now))
            self._trim()
        return self._replay.popleft()

    def _trim(self) -> None:
        while len(self._replay) > max(self._max_frames, 1):
            self._replay.popleft()
            self.dropped += 1
