"""Energy-based voice activity detection.

The emulator uses it as its stand-in for the service's server VAD; the bridge uses it to wake a
session that went idle when its human speaks again.

A 20 ms frame is speech when its level exceeds ``-60 dBFS + 50 dB * threshold`` (threshold 0.5
-> -35 dBFS; 0.0 -> -60; 1.0 -> -10). ``prefix_padding_ms`` and ``silence_duration_ms`` mean
what they mean for the service: audio kept before the detected start, and the silence that ends
a turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from bridge.audio import FRAME_MS, Pcm


def level_dbfs(pcm: Pcm) -> float:
    if len(pcm) == 0:
        return -math.inf
    mean_square = float(np.mean(np.square(pcm, dtype=np.float64)))
    if mean_square <= 0:
        return -math.inf
    return 10 * math.log10(mean_square / (32768.0**2))


class VadEvent(Enum):
    STARTED = "started"
    STOPPED = "stopped"


@dataclass
class VadConfig:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200
    min_speech_ms: int = 60

    @property
    def threshold_dbfs(self) -> float:
        return -60.0 + 50.0 * self.threshold


class EnergyVad:
    """Feed 20 ms frames; ``push`` returns STARTED/STOPPED when a turn begins/ends."""

    def __init__(self, config: VadConfig) -> None:
        self.config = config
        self.audio_ms = 0  # input timeline, ms since the call started
        self.speaking = False
        self.speech_start_ms = 0
        self.last_speech_ms = 0
        self._run_ms = 0

    def push(self, pcm: Pcm) -> VadEvent | None:
        is_speech = level_dbfs(pcm) > self.config.threshold_dbfs
        self.audio_ms += FRAME_MS
        if not self.speaking:
            self._run_ms = self._run_ms + FRAME_MS if is_speech else 0
            if self._run_ms >= self.config.min_speech_ms:
                self.speaking = True
                self.speech_start_ms = max(
                    0, self.audio_ms - self._run_ms - self.config.prefix_padding_ms
                )
                self.last_speech_ms = self.audio_ms
                return VadEvent.STARTED
            return None
        if is_speech:
            self.last_speech_ms = self.audio_ms
        elif self.audio_ms - self.last_speech_ms >= self.config.silence_duration_ms:
            self.speaking = False
            self._run_ms = 0
            return VadEvent.STOPPED
        return None
