"""A RealtimeCall to the emulator with a recorder of its events and audio."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bridge.emulator.app import EmulatorServer
from bridge.realtime import RealtimeCall, build_session
from bridge.realtime.events import ServerEvent
from bridge.realtime.tracks import PcmAudioTrack
from tests.support.env import test_settings
from tests.support.signals import rms


def settings_for(emulator: EmulatorServer, **overrides: Any) -> Any:
    return test_settings(openai_base_url=emulator.base_url, **overrides)


class Recorder:
    """Collects a call's events and audio while the test drives it."""

    def __init__(self, call: RealtimeCall) -> None:
        self.call = call
        self.events: list[ServerEvent] = []
        self.loud_frames = 0
        self.frames = 0
        self._changed = asyncio.Condition()
        self._tasks = [
            asyncio.create_task(self._read_events()),
            asyncio.create_task(self._read_audio()),
        ]

    async def _read_events(self) -> None:
        async for event in self.call.events():
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def _read_audio(self) -> None:
        async for pcm in self.call.audio_out.frames():
            self.frames += 1
            if rms(pcm) > 1000:
                self.loud_frames += 1

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    async def wait_for(self, event_type: str, count: int = 1, timeout: float = 15.0) -> ServerEvent:
        async def condition() -> ServerEvent:
            async with self._changed:
                await self._changed.wait_for(lambda: self.types().count(event_type) >= count)
                return [e for e in self.events if e.type == event_type][count - 1]

        return await asyncio.wait_for(condition(), timeout)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def recorded_call(
    emulator: EmulatorServer, **overrides: Any
) -> AsyncIterator[tuple[RealtimeCall, Recorder, PcmAudioTrack]]:
    settings = settings_for(emulator, **overrides)
    track = PcmAudioTrack()
    async with RealtimeCall(settings, session=build_session(settings), audio=track) as call:
        recorder = Recorder(call)
        try:
            yield call, recorder, track
        finally:
            await recorder.aclose()
    track.stop()
