"""Measurement hooks a benchmark passes into the bridge; production code runs with none.

    instruments = Instruments(probe=my_probe, impairment=Impairment(0.05, 0.02, seed=1))
    RealtimeCall(settings, ..., probe=instruments.probe, impairment=instruments.impairment)
    RoomWorker(settings, room, instruments=instruments)   # every session and call it makes

``probe`` is called with (point, samples, ``time.perf_counter()`` when the frame was there) at
each boundary of the bridge: ``uplink_in`` (a microphone frame from LiveKit), ``uplink_out`` (to
the Opus encoder), ``downlink_in`` (out of our RTP playout), ``downlink_out`` (handed to
LiveKit's source). ``impairment`` loses and jitters the model's packets before the playout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.audio import Pcm

if TYPE_CHECKING:
    from bridge.realtime.playout import Impairment

FrameProbe = Callable[[str, Pcm, float], None]


@dataclass(frozen=True)
class Instruments:
    probe: FrameProbe | None = None
    impairment: Impairment | None = None


NO_INSTRUMENTS = Instruments()

__all__ = ["NO_INSTRUMENTS", "FrameProbe", "Instruments"]
