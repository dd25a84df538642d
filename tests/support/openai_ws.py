"""A Realtime WebSocket session opened with OpenAI's own client (``client.realtime.connect()``),
every server event parsed with the SDK's types, strictly, as it arrives."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
import pydantic
import websockets
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent

SERVER_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    Annotated[RealtimeServerEvent, pydantic.Field(discriminator="type")]
)
WIRE_RATE = 24_000
# Fields the real service adds beyond the published schema.
EXTRAS = {"obfuscation"}


def pcm24(seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * WIRE_RATE)) / WIRE_RATE
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def quiet24(seconds: float) -> bytes:
    return bytes(2 * int(seconds * WIRE_RATE))


class WsSession:
    """One connection: what it sends, and every server event, validated as it arrives."""

    def __init__(self, connection: AsyncRealtimeConnection) -> None:
        self.connection = connection
        self.events: list[Any] = []
        self._seen = 0
        self._reader = asyncio.create_task(self._read())
        self._changed = asyncio.Event()

    async def _read(self) -> None:
        while True:
            try:
                raw = await self.connection.recv_bytes()
            except websockets.ConnectionClosed:
                self._changed.set()
                return
            event = SERVER_EVENTS.validate_json(raw)
            extra = set(event.model_extra or {}) - EXTRAS
            assert not extra, f"{event.type}: fields outside the schema: {extra}"
            self.events.append(event)
            self._changed.set()

    async def next(self, kind: str, timeout: float = 10.0) -> Any:
        """The next event of ``kind`` after the last one taken."""

        async def find() -> Any:
            while True:
                for index in range(self._seen, len(self.events)):
                    if self.events[index].type == kind:
                        self._seen = index + 1
                        return self.events[index]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    async def append(self, pcm: bytes, chunk_s: float = 0.1, *, real_time: bool = False) -> None:
        """Send ``pcm`` in chunks; ``real_time``: at the pace it would be spoken."""
        step = int(chunk_s * WIRE_RATE) * 2
        for start in range(0, len(pcm), step):
            chunk = base64.b64encode(pcm[start : start + step]).decode()
            await self.connection.input_audio_buffer.append(audio=chunk)
            if real_time:
                await asyncio.sleep(chunk_s)

    async def aclose(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def ws_session(client: AsyncOpenAI, model: str) -> AsyncIterator[WsSession]:
    async with client.realtime.connect(model=model) as connection:
        session = WsSession(connection)
        try:
            yield session
        finally:
            await session.aclose()
