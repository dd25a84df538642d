"""The fake model behind one emulated call: turns, transcripts, responses, interruptions, usage.

It is driven by what arrives: audio frames (through the energy VAD), video frames, and client
events already checked against the official schema. Everything it says goes through ``emit``,
which validates it against the official server schema. Event order follows the voice turn of
docs/protocol-notes.md ("Events").
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from bridge.aio import TaskSet
from bridge.audio import Pcm
from bridge.billing.models import DEFAULT_MODEL, takes_reasoning
from bridge.emulator.billing import Bill
from bridge.emulator.context import Emit, ErrorSink, ModelContext, new_id
from bridge.emulator.conversation import Conversation, UnknownItemError
from bridge.emulator.idle import IdleTimeout
from bridge.emulator.listener import Listener
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.responder import Responder
from bridge.emulator.schema import Problem, check_model_options
from bridge.emulator.voice import Speaker

logger = logging.getLogger(__name__)

DEFAULT_SESSION: dict[str, Any] = {
    "type": "realtime",
    "model": DEFAULT_MODEL,
    "output_modalities": ["audio"],
    "instructions": "You are a helpful assistant.",
    "tools": [],
    "tool_choice": "auto",
    "max_output_tokens": "inf",
    "tracing": None,
    "truncation": "auto",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": None,
            "noise_reduction": None,
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 200,
                "idle_timeout_ms": None,
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0},
    },
}


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: dicts merge, anything else (including null) replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# What a reasoning model reports when the request sets no ``reasoning`` (UNVERIFIED: "low" is
# the default effort OpenAI's release post gives for gpt-realtime-2).
DEFAULT_REASONING = {"effort": "low"}


def session_from_request(requested: dict[str, Any] | None) -> dict[str, Any]:
    session = merge(DEFAULT_SESSION, requested or {})
    detection = session["audio"]["input"].get("turn_detection")
    if isinstance(detection, dict) and detection.get("type") == "server_vad":
        defaults = DEFAULT_SESSION["audio"]["input"]["turn_detection"]
        session["audio"]["input"]["turn_detection"] = {**defaults, **detection}
    if takes_reasoning(str(session["model"])) and "reasoning" not in session:
        session["reasoning"] = dict(DEFAULT_REASONING)
    return session


class FakeModel:
    """One call's model: its session, its conversation and the client's item edits here; what
    it hears in ``Listener``, what it says in ``Responder`` (which the listener's turns drive),
    and the idle timeout between the two."""

    def __init__(
        self,
        *,
        options: EmulatorOptions,
        session: dict[str, Any],
        emit: Emit,
        error: ErrorSink,
        voice: Speaker,
    ) -> None:
        parallel_tool_calls: bool | None = session.pop("parallel_tool_calls", None)
        self._tasks = TaskSet("emulator-model")
        self._ctx = ModelContext(
            options=options, session=session, emit=emit, error=error, tasks=self._tasks
        )
        self._idle = IdleTimeout(self._tasks, self._idle_timeout)
        self.responder = Responder(self._ctx, voice, self._idle)
        self.responder.parallel_tool_calls = parallel_tool_calls
        self.listener = Listener(self._ctx, self.responder, self._idle)
        self.audio_out_started = False

    async def aclose(self) -> None:
        await self._tasks.aclose()

    @property
    def session(self) -> dict[str, Any]:
        return self._ctx.session

    @property
    def conversation(self) -> Conversation:
        return self._ctx.conversation

    @property
    def bill(self) -> Bill:
        return self._ctx.bill

    @property
    def parallel_tool_calls(self) -> bool | None:
        """``parallel_tool_calls`` is a request field only: the session the service reports
        (session.created/updated) has no such field, so it is kept apart."""
        return self.responder.parallel_tool_calls

    # ---- the session ---------------------------------------------------------------------------

    def update_session(self, update: dict[str, Any], event_id: str | None) -> None:
        problem = self._update_problem(update)
        if problem is not None:
            self._ctx.error(
                "invalid_request_error", problem.message, problem.param, event_id, code=problem.code
            )
            return
        merged = session_from_request(merge(self.session, update))
        if "parallel_tool_calls" in merged:
            self.responder.parallel_tool_calls = merged.pop("parallel_tool_calls")
        self._ctx.session = merged
        self.listener.session_updated()
        self._ctx.emit({"type": "session.updated", "session": self.session})

    def _update_problem(self, update: dict[str, Any]) -> Problem | None:
        """Why the service refuses ``update`` for this session, if it does."""
        if "model" in update and update["model"] != self.session.get("model"):
            return Problem("Cannot update a session's model.", "session.model")
        voice = update.get("audio", {}).get("output", {}).get("voice")
        if voice and voice != self.session["audio"]["output"]["voice"] and self.audio_out_started:
            return Problem(
                "Cannot update a session's voice after the model has responded with audio.",
                "session.audio.output.voice",
            )
        tracing = self.session.get("tracing")
        if tracing is not None and "tracing" in update and update["tracing"] != tracing:
            # The types: "Once tracing is enabled for a session, the configuration cannot be
            # modified." (the service's wording is UNVERIFIED)
            return Problem(
                "Cannot update a session's tracing configuration once tracing is enabled.",
                "session.tracing",
            )
        return check_model_options(update, str(self.session.get("model") or ""), "session")

    # ---- input (the listener) ------------------------------------------------------------------

    async def on_audio(self, pcm: Pcm) -> None:
        await self.listener.on_audio(pcm)

    def on_video_frame(self) -> None:
        self.responder.saw_image()

    def commit(self, event_id: str | None) -> None:
        """Client ``input_audio_buffer.commit``."""
        self.listener.commit(event_id)

    def clear_input(self) -> None:
        """Client ``input_audio_buffer.clear``."""
        self.listener.clear_input()

    def _idle_timeout(self) -> None:
        """``idle_timeout_ms`` passed without speech: say so, commit the silence, answer."""
        if self.responder.active or not self.listener.time_out():
            return
        self.responder.create_response(None, None)

    # ---- conversation items --------------------------------------------------------------------

    def create_item(
        self, item: dict[str, Any], previous_item_id: str | None, event_id: str | None
    ) -> None:
        """Client ``conversation.item.create``: adds the item and starts no response."""
        ctx = self._ctx
        item = {**item, "id": item.get("id") or new_id("item"), "object": "realtime.item"}
        if ctx.conversation.get(item["id"]) is not None:
            ctx.error(
                "invalid_request_error",
                f"Item with id '{item['id']}' already exists.",
                "item.id",
                event_id,
                code="item_already_exists",
            )
            return
        if item.get("type") == "message":
            item.setdefault("status", "completed")
            texts = [c.get("text") or "" for c in item.get("content", []) if c.get("text")]
            if item.get("role") == "user" and texts:
                ctx.heard = " ".join(texts)
                ctx.turns += 1
        elif item.get("type") == "function_call_output":
            if not self._has_call(str(item.get("call_id"))):
                ctx.error(
                    "invalid_request_error",
                    f"No tool call found for function call output with call_id "
                    f"'{item.get('call_id')}'.",
                    "item.call_id",
                    event_id,
                )
                return
            self.responder.tool_output(str(item.get("output", "")))
        try:
            ctx.add_item(item, previous_item_id)
        except UnknownItemError:
            ctx.error(
                "invalid_request_error",
                f"Previous item with id '{previous_item_id}' not found.",
                "previous_item_id",
                event_id,
                code="item_not_found",
            )

    def _has_call(self, call_id: str) -> bool:
        return any(
            e.type == "function_call" and e.call_id == call_id for e in self.conversation.entries()
        )

    def delete_item(self, item_id: str, event_id: str | None) -> None:
        """Client ``conversation.item.delete``."""
        try:
            self.conversation.delete(item_id)
        except UnknownItemError:
            self._ctx.error(
                "invalid_request_error",
                f"Item with id '{item_id}' not found.",
                "item_id",
                event_id,
                code="item_not_found",
            )
            return
        self._ctx.emit({"type": "conversation.item.deleted", "item_id": item_id})

    def truncate_item(
        self, item_id: str, content_index: int, audio_end_ms: int, event_id: str | None
    ) -> None:
        """Client ``conversation.item.truncate`` (assistant audio only)."""
        entry = self.conversation.get(item_id)
        if entry is None or entry.role != "assistant":
            self._ctx.error(
                "invalid_request_error",
                f"Assistant item with id '{item_id}' not found.",
                "item_id",
                event_id,
                code="item_not_found",
            )
            return
        self.conversation.truncate_audio(item_id, audio_end_ms)
        self._ctx.emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )

    # ---- responses (the responder) -------------------------------------------------------------

    def create_response(self, params: dict[str, Any] | None, event_id: str | None) -> None:
        """Client ``response.create`` (and the listener's, after a turn)."""
        self.responder.create_response(params, event_id)

    async def cancel(self, reason: str, event_id: str | None) -> None:
        """Client ``response.cancel``."""
        await self.responder.cancel(reason, event_id)

    async def interrupt(self, reason: str) -> None:
        await self.responder.interrupt(reason)

    def clear_output(self) -> None:
        """Client ``output_audio_buffer.clear``."""
        self.responder.clear_output()

    def audio_started(self, response_id: str) -> None:
        self.audio_out_started = True
        self._ctx.emit({"type": "output_audio_buffer.started", "response_id": response_id})

    def audio_stopped(self, response_id: str) -> None:
        self.responder.audio_stopped(response_id)
