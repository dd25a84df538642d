"""Generated audio for tests: tones and their measured frequency."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bridge.audio import FRAME_SAMPLES, SAMPLE_RATE
from bridge.emulator.voice import tone as bridge_tone

__all__ = ["FRAME_SAMPLES", "SAMPLE_RATE", "dominant_frequency", "frames", "rms", "silence", "tone"]


def tone(freq: float, seconds: float, amplitude: float = 0.3) -> npt.NDArray[np.int16]:
    """The emulator's own tone (10 ms fades), at a test's default loudness."""
    return bridge_tone(freq, seconds, amplitude)


def dominant_frequency(samples: npt.NDArray[np.int16], rate: int = SAMPLE_RATE) -> float:
    data = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(data))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def rms(samples: npt.NDArray[np.int16]) -> float:
    if len(samples) == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def silence(seconds: float, rate: int = SAMPLE_RATE) -> npt.NDArray[np.int16]:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def frames(samples: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    """Split into 20 ms frames, padding the last with silence."""
    pad = (-len(samples)) % FRAME_SAMPLES
    if pad:
        samples = np.concatenate([samples, np.zeros(pad, dtype=np.int16)])
    return [samples[i : i + FRAME_SAMPLES] for i in range(0, len(samples), FRAME_SAMPLES)]
