"""One emulated Realtime session, whatever carries it: the events both ways (checked against the
official schema), the fake model, fault timers, ending, and the statistics
``GET /v1/_emulator/calls`` reports. ``peer.py`` (WebRTC) and ``websocket.py`` (WebSocket) are
the transports: they say how an event leaves, how the connection closes, and what
``input_audio_buffer.append`` and ``output_audio_buffer.clear`` mean on them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.aio import TaskSet, cancel_and_wait
from bridge.audio import FRAME_MS
from bridge.emulator.context import new_id
from bridge.emulator.model import FakeModel
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.schema import check_client_event, check_server_event, check_session
from bridge.emulator.voice import Speaker

logger = logging.getLogger(__name__)

# Client events waiting to be handled; more in flight is answered with an error.
INBOX_SIZE = 1000


class VideoStats:
    def __init__(self) -> None:
        self.frames = 0
        self.width = 0
        self.height = 0
        self.first: float | None = None
        self.last: float | None = None

    def add(self, width: int, height: int) -> None:
        now = time.monotonic()
        self.first = self.first if self.first is not None else now
        self.last = now
        self.frames += 1
        self.width, self.height = width, height

    def as_dict(self) -> dict[str, Any]:
        span = (self.last or 0) - (self.first or 0)
        fps = (self.frames - 1) / span if self.frames > 1 and span > 0 else 0.0
        return {
            "frames": self.frames,
            "fps": round(fps, 3),
            "width": self.width,
            "height": self.height,
        }


Handler = Callable[["EmulatedSession", dict[str, Any], "str | None"], Awaitable[None]]


class EmulatedSession(ABC):
    """The transport-free part of a session. A transport subclasses it and provides ``_send``,
    ``_close``, ``_append``, ``_clear_output`` and ``_voiced_out``."""

    transport = ""

    def __init__(
        self, session_id: str, session: dict[str, Any], options: EmulatorOptions, voice: Speaker
    ) -> None:
        self.id = session_id
        self.options = options
        self.state = "active"
        self.ended_reason: str | None = None
        self.events_in: Counter[str] = Counter()
        self.events_out: Counter[str] = Counter()
        self.errors: deque[str] = deque(maxlen=100)
        self.video = VideoStats()
        self.audio_in_frames = 0
        self.created = time.time()
        self._tasks = TaskSet(f"emulator-{self.transport}-{session_id}")
        self._inbox: asyncio.Queue[str] = asyncio.Queue(maxsize=INBOX_SIZE)
        self.model = FakeModel(
            options=options, session=session, emit=self.emit, error=self.error, voice=voice
        )

    # ---- what a transport provides -----------------------------------------------------------

    @abstractmethod
    def _send(self, text: str) -> bool:
        """Send one event's JSON; False when the connection cannot carry it (not open yet,
        closed)."""

    @abstractmethod
    async def _close(self) -> None:
        """Close the connection and stop the media (called once, by ``end``)."""

    @abstractmethod
    async def _append(self, data: dict[str, Any], event_id: str | None) -> None:
        """Client ``input_audio_buffer.append`` (already schema-checked)."""

    @abstractmethod
    async def _clear_output(self, data: dict[str, Any], event_id: str | None) -> None:
        """Client ``output_audio_buffer.clear``."""

    @abstractmethod
    def _voiced_out(self) -> int:
        """20 ms frames of audio sent so far."""

    def _snapshot_extra(self) -> dict[str, Any]:
        return {}

    # ---- starting ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start handling client events and the session's timers."""
        self._tasks.create_task(self._process_inbox(), name="events")
        self._tasks.create_task(self._expire(), name="expiry")
        if self.options.drop_after_s is not None:
            self._tasks.create_task(self._drop(self.options.drop_after_s), name="drop")

    def created_event(self) -> None:
        """``session.created``: the first server event."""
        self.emit({"type": "session.created", "session": self.model.session})

    # ---- events --------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        event = {"event_id": new_id("event"), **event}
        problem = check_server_event(event)
        if problem is not None:
            self.errors.append(f"emulator sent an invalid event: {problem}")
            logger.error("emulator sent an invalid event: %s", problem)
        if self._send(json.dumps(event)):
            self.events_out[event["type"]] += 1

    def error(
        self,
        error_type: str,
        message: str,
        param: str | None,
        event_id: str | None,
        *,
        code: str | None = None,
    ) -> None:
        self.errors.append(f"{code or error_type}: {message}")
        body: dict[str, Any] = {"type": error_type, "message": message}
        if code is not None:
            body["code"] = code
        if param is not None:
            body["param"] = param
        if event_id is not None:
            body["event_id"] = event_id
        self.emit({"type": "error", "error": body})

    def receive(self, message: str | bytes) -> None:
        """One client message from the transport; handled in order by the events task."""
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        if self._inbox.full():
            self.error("invalid_request_error", "Too many events in flight.", None, None)
            return
        self._inbox.put_nowait(message)

    async def _process_inbox(self) -> None:
        while True:
            message = await self._inbox.get()
            await self._handle(message)

    async def _handle(self, message: str) -> None:
        try:
            data = json.loads(message)
        except json.JSONDecodeError:
            self.events_in["<invalid>"] += 1
            self.error(
                "invalid_request_error",
                "The event is not valid JSON.",
                None,
                None,
                code="invalid_event",
            )
            return
        event_id = data.get("event_id") if isinstance(data, dict) else None
        _event, problem = check_client_event(data)
        self.events_in[
            data.get("type", "<invalid>") if isinstance(data, dict) else "<invalid>"
        ] += 1
        if problem is not None:
            self.error(
                "invalid_request_error",
                problem.message,
                problem.param,
                event_id,
                code="invalid_event",
            )
            return
        handler = _HANDLERS.get(data["type"])
        if handler is not None:
            await handler(self, data, event_id)

    async def _session_update(self, data: dict[str, Any], event_id: str | None) -> None:
        session = data["session"]
        if session.get("type") != "realtime":
            self.error(
                "invalid_request_error",
                "Only 'realtime' sessions are supported.",
                "session.type",
                event_id,
            )
            return
        problem = check_session(session)
        if problem is not None:
            self.error(
                "invalid_request_error", problem.message, problem.param, event_id, code=problem.code
            )
            return
        self.model.update_session(session, event_id)

    async def _response_create(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.create_response(data.get("response"), event_id)

    async def _response_cancel(self, data: dict[str, Any], event_id: str | None) -> None:
        await self.model.cancel("client_cancelled", event_id)

    async def _input_commit(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.commit(event_id)

    async def _input_clear(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.clear_input()

    async def _item_create(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.create_item(data["item"], data.get("previous_item_id"), event_id)

    async def _item_truncate(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.truncate_item(
            data["item_id"], data["content_index"], data["audio_end_ms"], event_id
        )

    async def _item_delete(self, data: dict[str, Any], event_id: str | None) -> None:
        self.model.delete_item(data["item_id"], event_id)

    async def _ignore(self, data: dict[str, Any], event_id: str | None) -> None:
        return

    # ---- faults and ending ----------------------------------------------------------------------

    async def _expire(self) -> None:
        await asyncio.sleep(self.options.max_session_s)
        await self.expire()

    async def expire(self) -> None:
        """End the session as the service does at its time limit: an ``error`` event with code
        ``session_expired``, then the connection closes."""
        minutes = self.options.max_session_s / 60
        self.error(
            "invalid_request_error",
            f"Your session hit the maximum duration of {minutes:g} minutes.",
            None,
            None,
            code="session_expired",
        )
        await asyncio.sleep(0.05)  # let the event leave before the connection goes
        await self.end("session_expired")

    async def _drop(self, after: float) -> None:
        await asyncio.sleep(after)
        self._tasks.create_task(self.end("dropped"), name="end")

    async def end(self, reason: str) -> None:
        """End the session (hangup, fault, peer gone, shutdown). Idempotent."""
        if self.state == "ended":
            return
        self.state = "ended"
        self.ended_reason = reason
        logger.info("emulated %s session %s ended: %s", self.transport, self.id, reason)
        await self._close()
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        await cancel_and_wait(*others)
        await self.model.aclose()

    async def aclose(self) -> None:
        await self.end(self.ended_reason or "shutdown")
        await self._tasks.aclose()

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "state": self.state,
            "ended_reason": self.ended_reason,
            "session": self.model.session,
            "events_in": dict(self.events_in),
            "events_out": dict(self.events_out),
            "audio_in_s": round(self.audio_in_frames * FRAME_MS / 1000, 2),
            "audio_out_s": round(self._voiced_out() * FRAME_MS / 1000, 2),
            "video": self.video.as_dict(),
            "errors": list(self.errors),
            "items": self.model.conversation.listing(),
            **self._snapshot_extra(),
            # The bill: each response's usage, and each input transcription's.
            "responses": list(self.model.bill.responses),
            "transcriptions": list(self.model.bill.transcriptions),
        }


async def _append(self: EmulatedSession, data: dict[str, Any], event_id: str | None) -> None:
    await self._append(data, event_id)


async def _clear_output(self: EmulatedSession, data: dict[str, Any], event_id: str | None) -> None:
    await self._clear_output(data, event_id)


_HANDLERS: dict[str, Handler] = {
    "session.update": EmulatedSession._session_update,
    "response.create": EmulatedSession._response_create,
    "response.cancel": EmulatedSession._response_cancel,
    "output_audio_buffer.clear": _clear_output,
    "input_audio_buffer.commit": EmulatedSession._input_commit,
    "input_audio_buffer.clear": EmulatedSession._input_clear,
    "input_audio_buffer.append": _append,
    "conversation.item.create": EmulatedSession._item_create,
    "conversation.item.truncate": EmulatedSession._item_truncate,
    "conversation.item.delete": EmulatedSession._item_delete,
    "conversation.item.retrieve": EmulatedSession._ignore,
}
