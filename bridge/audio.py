"""The audio format used everywhere inside the bridge: 48 kHz mono int16 PCM in 20 ms frames.

LiveKit's ``rtc.AudioStream`` and ``rtc.AudioSource`` are set to it on the room side, and our
aiortc tracks carry it on the model side (Opus runs at 48 kHz), so no stage resamples.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_SECONDS = FRAME_MS / 1000

Pcm = npt.NDArray[np.int16]


def loud_peak(threshold_dbfs: float) -> float:
    """The sample peak of a frame as loud as ``threshold_dbfs`` (full scale = 32768): a frame
    whose peak is above it counts as loud, i.e. someone is speaking (see ``is_loud``)."""
    return 32768 * 10 ** (threshold_dbfs / 20)


def is_loud(pcm: Pcm, peak: float) -> bool:
    """Whether a frame's peak sample is above ``peak`` (from ``loud_peak``). Two reductions, no
    temporary array (``np.abs`` would allocate one per frame)."""
    return max(int(pcm.max()), -int(pcm.min())) > peak


def audible_span(pcm: Pcm, level: int) -> tuple[int, int] | None:
    """Where a frame's sound is, to the sample: its first sample above ``level`` (either sign)
    and the one after its last; None when there is none."""
    loud = np.flatnonzero((pcm > level) | (pcm < -level))
    if not len(loud):
        return None
    return int(loud[0]), int(loud[-1]) + 1
