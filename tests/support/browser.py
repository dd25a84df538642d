"""A real browser for tests: Debian's Chromium driven by playwright, with a fake microphone.

No browser is ever downloaded: playwright drives the system ``chromium`` (``make browser``
installs the Debian package when missing). Chromium's WebRTC stays on this machine: loopback
candidates allowed, no mDNS host names (no multicast), no STUN server but the livekit-server's
unused loopback one, and every host name but 127.0.0.1 unresolvable.
"""

from __future__ import annotations

import contextlib
import os
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from playwright.async_api import Browser, async_playwright

from bridge.audio import SAMPLE_RATE

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))

LOOPBACK_ARGS = [
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def speech_like(seconds: float, *, rate: int = SAMPLE_RATE, seed: int = 7) -> npt.NDArray[np.int16]:
    """Voiced syllables: a glottal pulse train (gliding pitch) through vowel formants, 4-5
    syllables a second with gaps between them, like a person saying a short sentence."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t) - 20 * t / seconds  # Hz, falling intonation
    phase = np.cumsum(pitch / rate)
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    signal = np.zeros(n)
    syllable = int(rate * 0.22)
    vowels = [(730, 1090), (270, 2290), (530, 1840), (570, 840), (300, 870)]  # a, i, e, o, u
    for start in range(0, n, syllable):
        stop = min(n, start + syllable)
        f1, f2 = vowels[int(rng.integers(len(vowels)))]
        k = np.arange(int(rate * 0.012))
        # The vocal tract's response to one pulse: two damped formant resonances.
        kernel = np.exp(-k / (rate * 0.004)) * (
            np.sin(2 * np.pi * f1 * k / rate) + 0.6 * np.sin(2 * np.pi * f2 * k / rate)
        )
        voiced = np.convolve(pulses[start:stop], kernel)[: stop - start]
        envelope = np.sin(np.linspace(0, np.pi, stop - start)) ** 0.6
        signal[start:stop] = voiced * envelope
    signal += rng.normal(0, 0.01, n) * (signal != 0)  # a little breath
    signal *= 0.35 / max(1e-9, float(np.max(np.abs(signal))))
    return (signal * 32767).astype(np.int16)


def write_utterance_wav(path: Path, *, speech_s: float, period_s: float) -> Path:
    """A WAV Chromium loops as its microphone: ``speech_s`` of speech, then silence, repeating
    every ``period_s`` (long enough for the agent to answer in between)."""
    speech = speech_like(speech_s)
    samples = np.concatenate([speech, np.zeros(int((period_s - speech_s) * SAMPLE_RATE), np.int16)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return path


def require_chromium() -> str:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium package")
    return str(CHROMIUM)


@contextlib.asynccontextmanager
async def chromium(microphone_wav: Path) -> AsyncIterator[Browser]:
    """Headless system Chromium whose microphone plays ``microphone_wav`` in a loop.

    Device permissions are per browser context (playwright's ``permissions=["microphone"]``);
    a context without them is refused, as when a person clicks "Block".
    """
    executable = require_chromium()
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone_wav}",
                *LOOPBACK_ARGS,
            ],
        )
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def headless_chromium() -> AsyncIterator[Browser]:
    """Headless system Chromium with no devices, for pages that need none (Jaeger's UI)."""
    executable = require_chromium()
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=executable, headless=True, args=LOOPBACK_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
