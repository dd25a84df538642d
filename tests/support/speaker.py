"""Real-time pacing of generated audio into a sink (an aiortc PcmAudioTrack or a LiveKit source)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt

from tests.support.signals import frames

Sink = Callable[[npt.NDArray[np.int16]], Awaitable[None] | None]


async def play(sink: Sink, samples: npt.NDArray[np.int16]) -> None:
    """Push ``samples`` in 20 ms frames at real-time pace."""
    start = time.monotonic()
    for i, frame in enumerate(frames(samples)):
        result = sink(frame)
        if result is not None:
            await result
        delay = start + (i + 1) * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
