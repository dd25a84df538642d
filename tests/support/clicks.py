"""Click trains for latency measurements: short loud bursts at known times, found again by their
onset in whatever comes back (one 20 ms frame of tone, quiet before and after)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tests.support.signals import SAMPLE_RATE, tone

# A click: 60 ms of 1 kHz at half scale (1 ms... 10 ms fades): long enough that no noise
# suppressor or DTX on the way takes it for a transient, with an onset sharp to a millisecond.
CLICK_FREQ = 1000.0
CLICK_SECONDS = 0.060
ONSET_LEVEL = 2000  # |sample| that counts as the click having arrived
QUIET_BEFORE_S = 0.1  # an onset needs this much quiet before it (echoes, decoder ringing)


def click_frames(frame_samples: int) -> list[npt.NDArray[np.int16]]:
    """One click, cut into frames of ``frame_samples`` (the last padded with silence)."""
    burst = tone(CLICK_FREQ, CLICK_SECONDS, amplitude=0.5).astype(np.int16)
    pad = (-len(burst)) % frame_samples
    burst = np.concatenate([burst, np.zeros(pad, dtype=np.int16)])
    return [burst[i : i + frame_samples] for i in range(0, len(burst), frame_samples)]


@dataclass
class OnsetDetector:
    """Feed frames with the time each became available (when its last sample was there);
    ``onsets`` collects the time of each click's first loud sample, in the same clock (a
    real-time stream: the frame's time minus the samples after the onset)."""

    rate: int = SAMPLE_RATE
    onsets: list[float] = field(default_factory=list)
    _quiet_until: float = 0.0
    _last_loud: float = -1e9

    def push(self, pcm: npt.NDArray[np.int16], at: float) -> None:
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > ONSET_LEVEL)
        if len(loud) == 0:
            return
        start = at - len(pcm) / self.rate
        first = start + int(loud[0]) / self.rate
        if first - self._last_loud >= QUIET_BEFORE_S:
            self.onsets.append(first)
        self._last_loud = start + int(loud[-1]) / self.rate


def match(sent: list[float], received: list[float], window: float) -> list[float]:
    """Round trips: each received onset paired with the latest click sent before it, at most
    ``window`` earlier, each click used once. Clicks must be spaced more than ``window``."""
    trips: list[float] = []
    used: set[int] = set()
    j = 0
    for r in received:
        while j + 1 < len(sent) and sent[j + 1] <= r:
            j += 1
        if j < len(sent) and sent[j] <= r and r - sent[j] <= window and j not in used:
            used.add(j)
            trips.append(r - sent[j])
    return trips


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
