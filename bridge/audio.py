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
