"""One emulated session over the WebSocket transport (``GET /v1/realtime?model=…``, what
OpenAI's own client and livekit-agents use): the same events as the data channel, one per text
frame; audio in as ``input_audio_buffer.append`` (base64 PCM16, 24 kHz mono), audio out as
``response.output_audio.delta`` as the model generates it, interleaved with the transcript. The
service plays nothing itself here, so there are no ``output_audio_buffer.*`` events: a client
that stops playing truncates with ``conversation.item.truncate``.

``voice_mode = "loopback"``: every appended chunk comes straight back as an output delta of one
response that stays open, with no VAD and no turns.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from bridge.aio import TaskSet
from bridge.audio import FRAME_SAMPLES, Pcm
from bridge.emulator.context import new_id
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.session import EmulatedSession

logger = logging.getLogger(__name__)

# The WebSocket carries PCM16 at 24 kHz; the fake model works at 48 kHz (tracks.SAMPLE_RATE).
WIRE_RATE = 24_000
WIRE_FRAME = FRAME_SAMPLES // 2  # 20 ms at 24 kHz
# Largest output delta (the service sends audio in pieces, never one answer-long blob).
DELTA_SAMPLES = WIRE_RATE // 10
# Frames queued for the client before the session counts it as gone (a stalled reader).
MAX_SEND_QUEUE = 2000


def to_wire(pcm: Pcm) -> bytes:
    """48 kHz samples as 24 kHz PCM16 (pairs averaged: a simple low-pass before decimation)."""
    even = pcm[: len(pcm) - len(pcm) % 2].astype(np.int32)
    return ((even[0::2] + even[1::2]) // 2).astype("<i2").tobytes()


def from_wire(data: bytes) -> Pcm:
    """24 kHz PCM16 as 48 kHz samples (each sample held twice)."""
    wire = np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2")
    return np.repeat(wire, 2).astype(np.int16)


class DeltaVoice:
    """The answer's audio as ``response.output_audio.delta`` events, sent as the model generates
    it (``generated``), then ``response.output_audio.done``. Nothing plays at the service, so
    ``playing`` is always false: interruption cancels the response, truncation is the client's."""

    def __init__(
        self, emit: Callable[[dict[str, Any]], None], on_started: Callable[[], None]
    ) -> None:
        self._emit = emit
        self._on_started = on_started
        self._pcm: Pcm | None = None
        self._sent = 0
        self.samples_out = 0  # at 48 kHz, for the statistics

    @property
    def playing(self) -> bool:
        return False

    @property
    def played_ms(self) -> int:
        return 0

    def play(self, response_id: str, pcm: Pcm) -> None:
        self._pcm = pcm
        self._sent = 0

    def generated(self, where: dict[str, Any], fraction: float) -> None:
        pcm = self._pcm
        if pcm is None:
            return
        upto = len(pcm) if fraction >= 1 else int(len(pcm) * fraction)
        if upto > self._sent:
            self._on_started()
        wire = to_wire(pcm[self._sent : upto])
        self.samples_out += upto - self._sent
        self._sent = upto
        for start in range(0, len(wire), DELTA_SAMPLES * 2):
            chunk = base64.b64encode(wire[start : start + DELTA_SAMPLES * 2]).decode()
            self._emit({"type": "response.output_audio.delta", **where, "delta": chunk})
        if fraction >= 1:
            self._pcm = None
            self._emit({"type": "response.output_audio.done", **where})

    def clear(self) -> int:
        self._pcm = None
        return 0


class WebSocketSession(EmulatedSession):
    transport = "websocket"

    def __init__(
        self,
        session_id: str,
        session: dict[str, Any],
        options: EmulatorOptions,
        ws: web.WebSocketResponse,
        request: web.Request,
    ) -> None:
        self._voice = DeltaVoice(self.emit, self._audio_started)
        super().__init__(session_id, session, options, self._voice)
        self._ws = ws
        self._transport = request.transport
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue(MAX_SEND_QUEUE)
        self._writer = TaskSet(f"emulator-ws-writer-{session_id}")
        self._partial = np.zeros(0, dtype=np.int16)  # input short of a whole 20 ms frame
        self._loopback = options.voice_mode == "loopback"
        self._loopback_ids: dict[str, Any] | None = None
        self.loopback_chunks = 0
        self.loopback_samples = 0
        self.residence: deque[float] = deque(maxlen=10_000)
        self._received_at = 0.0

    # ---- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the socket until either side closes it, then end the session."""
        self._writer.create_task(self._write(), name="write")
        self.start()
        self.created_event()
        try:
            async for message in self._ws:
                if message.type == WSMsgType.TEXT:
                    self._received_at = time.perf_counter()
                    self.receive(message.data)
                elif message.type == WSMsgType.BINARY:
                    self.error(
                        "invalid_request_error",
                        "Binary frames are not supported; send JSON text events.",
                        None,
                        None,
                        code="invalid_event",
                    )
        finally:
            await self.end(self.ended_reason or "client_closed")
            await self._writer.aclose()

    async def _write(self) -> None:
        while (text := await self._outbox.get()) is not None:
            try:
                await self._ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return  # the socket went; the reader ends the session

    def _send(self, text: str) -> bool:
        if self._ws.closed or self.state != "active":
            return False
        if self._outbox.full():
            logger.warning("websocket session %s: client not reading, dropping it", self.id)
            self._tasks.create_task(self.end("client_stalled"), name="end")
            return False
        self._outbox.put_nowait(text)
        return True

    async def _close(self) -> None:
        self._voice.clear()
        code = WSCloseCode.GOING_AWAY if self.ended_reason == "session_expired" else None
        if self._outbox.full():
            self._outbox.get_nowait()
        self._outbox.put_nowait(None)  # what was queued leaves first
        writer = [t for t in self._writer if t is not asyncio.current_task()]
        if writer and self.ended_reason != "dropped":
            await asyncio.wait(writer, timeout=2.0)
        if self.ended_reason == "dropped" and self._transport is not None:
            self._transport.abort()  # a lost connection: no close handshake
        await self._ws.close(code=code or WSCloseCode.OK)

    # ---- audio ---------------------------------------------------------------------------------

    async def _append(self, data: dict[str, Any], event_id: str | None) -> None:
        fmt = (self.model.session["audio"]["input"].get("format") or {}).get("type", "audio/pcm")
        if fmt != "audio/pcm":
            self.error(
                "invalid_request_error",
                f"The emulator only decodes audio/pcm input, not '{fmt}'.",
                "audio",
                event_id,
            )
            return
        try:
            raw = base64.b64decode(data["audio"], validate=True)
        except (binascii.Error, ValueError):
            self.error(
                "invalid_request_error",
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                "audio",
                event_id,
                code="invalid_value",
            )
            return
        if self._loopback:
            self._echo(data["audio"], len(raw) // 2)
            return
        pcm = np.concatenate([self._partial, from_wire(raw)])
        whole = len(pcm) - len(pcm) % FRAME_SAMPLES
        self._partial = pcm[whole:]
        for start in range(0, whole, FRAME_SAMPLES):
            self.audio_in_frames += 1
            await self.model.on_audio(pcm[start : start + FRAME_SAMPLES])

    def _echo(self, audio: str, samples: int) -> None:
        """Loopback: the chunk goes back as it came, in the one response that stays open."""
        if self._loopback_ids is None:
            self._open_loopback_response()
        assert self._loopback_ids is not None
        self.emit({"type": "response.output_audio.delta", **self._loopback_ids, "delta": audio})
        self.loopback_chunks += 1
        self.loopback_samples += samples
        self.audio_in_frames += samples // WIRE_FRAME
        self.residence.append(time.perf_counter() - self._received_at)

    def _open_loopback_response(self) -> None:
        response_id, item_id = new_id("resp"), new_id("item")
        self._audio_started()
        response = {
            "id": response_id,
            "object": "realtime.response",
            "status": "in_progress",
            "output_modalities": ["audio"],
            "conversation_id": "conv_emulator",
            "output": [],
        }
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        self.emit({"type": "response.created", "response": response})
        self.emit(
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }
        )
        # In the conversation like any answer, so a client's truncate or delete finds it.
        after = self.model.conversation.add(item)
        self.emit({"type": "conversation.item.added", "item": item, "previous_item_id": after})
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        self.emit(
            {
                "type": "response.content_part.added",
                **where,
                "content_index": 0,
                "part": {"type": "audio", "transcript": ""},
            }
        )
        self._loopback_ids = {**where, "content_index": 0}

    def _audio_started(self) -> None:
        self.model.audio_out_started = True  # the voice is fixed from now on

    async def _clear_output(self, data: dict[str, Any], event_id: str | None) -> None:
        self.error(
            "invalid_request_error",
            "output_audio_buffer.clear is only supported for WebRTC connections.",
            None,
            event_id,
        )

    # ---- statistics ----------------------------------------------------------------------------

    def _voiced_out(self) -> int:
        if self._loopback:
            return self.loopback_samples // WIRE_FRAME
        return self._voice.samples_out // FRAME_SAMPLES

    def _snapshot_extra(self) -> dict[str, Any]:
        if not self._loopback:
            return {}
        ordered = sorted(self.residence)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000, 3)

        return {
            "loopback": {
                "packets": self.loopback_chunks,
                "dropped": 0,
                "residence_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
            }
        }
