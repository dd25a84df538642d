"""The fake model behind one emulated call: turns, transcripts, responses, interruptions, usage.

It is driven by what arrives: audio frames (through the energy VAD), video frames, and client
events already checked against the official schema. Everything it says goes through ``emit``,
which validates it against the official server schema. Event order follows the voice turn of
docs/protocol-notes.md ("Events").
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bridge.aio import TaskSet, cancel_and_wait
from bridge.audio import FRAME_MS, SAMPLE_RATE, Pcm
from bridge.billing.models import DEFAULT_MODEL, takes_reasoning
from bridge.emulator.billing import IMAGE_TOKENS, Bill
from bridge.emulator.conversation import Conversation, UnknownItemError
from bridge.emulator.idle import IdleTimeout
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.schema import Problem, check_model_options
from bridge.emulator.voice import Speaker, tone
from bridge.vad import EnergyVad, VadConfig, VadEvent

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]


class ErrorSink(Protocol):
    def __call__(
        self,
        error_type: str,
        message: str,
        param: str | None,
        event_id: str | None,
        *,
        code: str | None = None,
    ) -> None: ...


# Keep this much input audio for echo answers and client commits.
INPUT_HISTORY_MS = 30_000


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


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


@dataclass
class _Response:
    id: str
    item_id: str
    text: str
    audio: Pcm | None
    modalities: list[str]
    task: asyncio.Task[None] | None = None
    said: list[str] = field(default_factory=list)
    done: bool = False
    # A function-call response: these ``function_call`` items instead of a message.
    calls: list[dict[str, Any]] = field(default_factory=list)
    # ``response.create``'s metadata, echoed on the response (clients match replies by it).
    metadata: dict[str, str] | None = None


class FakeModel:
    def __init__(
        self,
        *,
        options: EmulatorOptions,
        session: dict[str, Any],
        emit: Emit,
        error: ErrorSink,
        voice: Speaker,
    ) -> None:
        self.options = options
        # ``parallel_tool_calls`` is a request field only: the session the service reports
        # (session.created/updated) has no such field, so it is kept apart.
        self.parallel_tool_calls: bool | None = session.pop("parallel_tool_calls", None)
        self.session = session
        self._emit = emit
        self._error = error
        self._voice = voice
        self._tasks = TaskSet("emulator-model")
        self._vad = EnergyVad(self._vad_config())
        self._history: deque[Pcm] = deque(maxlen=INPUT_HISTORY_MS // FRAME_MS)
        self._buffer_ms = 0  # uncommitted input since the last commit/clear (no-VAD mode)
        self._turn_item: str | None = None
        self.conversation = Conversation()
        self._heard: str = ""
        self._echo: Pcm | None = None
        self._utterances = 0
        self._answers = 0
        self._response: _Response | None = None
        self._playing: _Response | None = None
        self._images_pending = 0
        self._turns = 0  # user turns so far; each may trigger the scripted tool calls once
        self._called_turn = 0
        self._tool_outputs: list[str] = []  # function_call_output since the last response
        self.bill = Bill()
        self.audio_out_started = False
        self._idle = IdleTimeout(self._tasks, self._idle_timeout)

    async def aclose(self) -> None:
        await self._tasks.aclose()

    # ---- configuration ---------------------------------------------------------------------

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        value = self.session["audio"]["input"].get("turn_detection")
        return value if isinstance(value, dict) else None

    @property
    def _transcription_model(self) -> str:
        transcription = self.session["audio"]["input"].get("transcription") or {}
        return str(transcription.get("model") or "")

    @property
    def transcribes(self) -> bool:
        return bool(self.session["audio"]["input"].get("transcription"))

    def _vad_config(self) -> VadConfig:
        td = self.turn_detection or {}
        return VadConfig(
            threshold=float(td.get("threshold", 0.5) if td.get("threshold") is not None else 0.5),
            prefix_padding_ms=int(td.get("prefix_padding_ms") or 300),
            silence_duration_ms=int(td.get("silence_duration_ms") or 200),
            min_speech_ms=self.options.min_speech_ms,
        )

    def update_session(self, update: dict[str, Any], event_id: str | None) -> None:
        problem = self._update_problem(update)
        if problem is not None:
            self._error(
                "invalid_request_error", problem.message, problem.param, event_id, code=problem.code
            )
            return
        merged = session_from_request(merge(self.session, update))
        if "parallel_tool_calls" in merged:
            self.parallel_tool_calls = merged.pop("parallel_tool_calls")
        self.session = merged
        self._vad.config = self._vad_config()
        self._emit({"type": "session.updated", "session": self.session})

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

    # ---- input -------------------------------------------------------------------------------

    async def on_audio(self, pcm: Pcm) -> None:
        self._history.append(pcm)
        self._buffer_ms += FRAME_MS
        if self.turn_detection is None:
            return
        event = self._vad.push(pcm)
        if event is VadEvent.STARTED:
            await self._speech_started()
        elif event is VadEvent.STOPPED:
            self._speech_stopped()

    def on_video_frame(self) -> None:
        self._images_pending = 1  # the model takes one snapshot when it answers

    async def _speech_started(self) -> None:
        self._idle.stop()
        self._turn_item = new_id("item")
        self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": self._vad.speech_start_ms,
                "item_id": self._turn_item,
            }
        )
        td = self.turn_detection or {}
        if td.get("interrupt_response", True):
            await self.interrupt("turn_detected")

    def _speech_stopped(self) -> None:
        item_id = self._turn_item or new_id("item")
        self._turn_item = None
        start, end = self._vad.speech_start_ms, self._vad.last_speech_ms
        self._emit(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end, "item_id": item_id}
        )
        self._commit(item_id, self._recent_audio(self._vad.audio_ms - start), end - start)
        td = self.turn_detection or {}
        if td.get("create_response", True):
            self._tasks.create_task(self._respond_later(), name="respond")

    def _recent_audio(self, ms: int) -> Pcm:
        frames = list(self._history)[-max(1, ms // FRAME_MS) :]
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    def commit(self, event_id: str | None) -> None:
        """Client ``input_audio_buffer.commit``."""
        if self._buffer_ms < 100:
            self._error(
                "invalid_request_error",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {self._buffer_ms:.2f}ms of audio.",
                None,
                event_id,
                code="input_audio_buffer_commit_empty",
            )
            return
        ms = min(self._buffer_ms, INPUT_HISTORY_MS)
        self._commit(new_id("item"), self._recent_audio(ms), ms)

    def clear_input(self) -> None:
        self._buffer_ms = 0
        self._emit({"type": "input_audio_buffer.cleared"})

    def _commit(self, item_id: str, audio: Pcm, duration_ms: int, *, silence: bool = False) -> None:
        """Commit input audio as a user item; ``silence``: an idle timeout's (nothing was said,
        so nothing is transcribed: UNVERIFIED whether the service transcribes it)."""
        self._buffer_ms = 0
        self._idle.stop()
        self._emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": self.conversation.last_id,
            }
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._add_item(item, audio_ms=duration_ms)
        self._turns += 1
        if silence:
            self._heard = ""
            return
        self._utterances += 1
        n = self._utterances
        if self.options.transcripts:
            transcript = self.options.transcripts[(n - 1) % len(self.options.transcripts)]
        else:
            transcript = f"utterance {n}, {duration_ms / 1000:.2f} s"
        # What the model understood, whether or not the client asked for transcripts.
        self.conversation.set_text(item_id, transcript)
        self._heard = transcript
        self._echo = audio
        if self.transcribes:
            self._tasks.create_task(
                self._transcribe(item_id, transcript, duration_ms), name="transcribe"
            )

    def _idle_ms(self) -> int | None:
        td = self.turn_detection or {}
        idle = td.get("idle_timeout_ms")
        if td.get("type") != "server_vad" or not isinstance(idle, int) or idle <= 0:
            return None
        return idle

    def _arm_idle(self, answer_audio_ms: int) -> None:
        """After an answer: the idle clock starts when its audio has played (response.done +
        its duration)."""
        idle = self._idle_ms()
        if idle is not None:
            self._idle.arm((answer_audio_ms + idle) / 1000)

    def _idle_timeout(self) -> None:
        """``idle_timeout_ms`` passed without speech: say so, commit the silence, answer."""
        idle = self._idle_ms()
        if idle is None or self._response is not None or self._vad.speaking:
            return
        end = self._vad.audio_ms
        start = max(0, end - idle)
        item_id = new_id("item")
        self._emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": start,
                "audio_end_ms": end,
                "item_id": item_id,
            }
        )
        self._commit(item_id, self._recent_audio(end - start), end - start, silence=True)
        self.create_response(None, None)

    async def _transcribe(self, item_id: str, transcript: str, duration_ms: int) -> None:
        await asyncio.sleep(self.options.transcription_delay_ms / 1000)
        for word in re.findall(r"\S+\s*", transcript):
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": word,
                }
            )
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": self.bill.transcription(
                    self._transcription_model, transcript, duration_ms
                ),
            }
        )

    def _add_item(
        self, item: dict[str, Any], previous_item_id: str | None = None, *, audio_ms: int = 0
    ) -> None:
        after = self.conversation.add(item, previous_item_id, audio_ms=audio_ms)
        self._emit({"type": "conversation.item.added", "item": item, "previous_item_id": after})
        self._emit({"type": "conversation.item.done", "item": item})

    def create_item(
        self, item: dict[str, Any], previous_item_id: str | None, event_id: str | None
    ) -> None:
        """Client ``conversation.item.create``: adds the item and starts no response."""
        item = {**item, "id": item.get("id") or new_id("item"), "object": "realtime.item"}
        if self.conversation.get(item["id"]) is not None:
            self._error(
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
                self._heard = " ".join(texts)
                self._turns += 1
        elif item.get("type") == "function_call_output":
            if not self._has_call(str(item.get("call_id"))):
                self._error(
                    "invalid_request_error",
                    f"No tool call found for function call output with call_id "
                    f"'{item.get('call_id')}'.",
                    "item.call_id",
                    event_id,
                )
                return
            self._tool_outputs.append(str(item.get("output", "")))
        try:
            self._add_item(item, previous_item_id)
        except UnknownItemError:
            self._error(
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
            self._error(
                "invalid_request_error",
                f"Item with id '{item_id}' not found.",
                "item_id",
                event_id,
                code="item_not_found",
            )
            return
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    def truncate_item(
        self, item_id: str, content_index: int, audio_end_ms: int, event_id: str | None
    ) -> None:
        """Client ``conversation.item.truncate`` (assistant audio only)."""
        entry = self.conversation.get(item_id)
        if entry is None or entry.role != "assistant":
            self._error(
                "invalid_request_error",
                f"Assistant item with id '{item_id}' not found.",
                "item_id",
                event_id,
                code="item_not_found",
            )
            return
        self.conversation.truncate_audio(item_id, audio_end_ms)
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )

    # ---- responses ------------------------------------------------------------------------

    async def _respond_later(self) -> None:
        # Transcription (if any) runs concurrently, as with the service; the answer waits for
        # the model's "thinking" time.
        await asyncio.sleep(self.options.answer_delay_ms / 1000)
        self.create_response(None, None)

    def create_response(self, params: dict[str, Any] | None, event_id: str | None) -> None:
        if self._response is not None:
            self._error(
                "invalid_request_error",
                "Conversation already has an active response in progress: "
                f"{self._response.id}. Wait until the response is finished before creating a "
                "new one.",
                None,
                event_id,
                code="conversation_already_has_active_response",
            )
            return
        params = params or {}
        problem = check_model_options(params, str(self.session.get("model") or ""), "response")
        if problem is not None:
            self._error(
                "invalid_request_error", problem.message, problem.param, event_id, code=problem.code
            )
            return
        self._idle.stop()
        modalities = list(params.get("output_modalities") or self.session["output_modalities"])
        self._answers += 1
        n = self._answers
        heard = self._heard or "nothing yet"
        calls = self._scripted_calls(params)
        if calls:
            response = _Response(
                id=new_id("resp"),
                item_id=calls[0]["id"],
                text="",
                audio=None,
                modalities=modalities,
                calls=calls,
                metadata=params.get("metadata"),
            )
            self._response = response
            response.task = self._tasks.create_task(self._run_calls(response), name="response")
            return
        outputs, self._tool_outputs = self._tool_outputs, []
        if outputs:
            text = f"Answer {n}. The tool said: {' '.join(outputs)}."
        elif self.options.answers:
            text = self.options.answers[(n - 1) % len(self.options.answers)]
        elif self.options.voice_mode == "echo" and self._echo is not None:
            text = f"Echo {n} of {heard}."
        else:
            text = f"Answer {n}. I heard: {heard}."
        audio: Pcm | None = None
        if "audio" in modalities:
            echo = self._echo
            if self.options.voice_mode == "echo" and echo is not None and len(echo):
                audio = echo
            else:
                audio = tone(
                    self.options.tone_hz, max(0.3, len(text) / self.options.chars_per_second)
                )
        response = _Response(
            id=new_id("resp"),
            item_id=new_id("item"),
            text=text,
            audio=audio,
            modalities=modalities,
            metadata=params.get("metadata"),
        )
        self._response = response
        response.task = self._tasks.create_task(self._run_response(response), name="response")

    def _scripted_calls(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``tool_calls`` option: function calls for a user turn that contains ``when``,
        once per turn, only for functions the session (or this response) declares; only the
        first with ``parallel_tool_calls`` false."""
        if self._called_turn == self._turns or self._tool_outputs:
            return []
        tools = params.get("tools", self.session.get("tools")) or []
        choice = params.get("tool_choice", self.session.get("tool_choice"))
        declared = {t.get("name") for t in tools if t.get("type") == "function"}
        if choice == "none":
            return []
        calls = []
        for script in self.options.tool_calls:
            if script.when.lower() in self._heard.lower() and script.name in declared:
                calls.append(
                    {
                        "id": new_id("item"),
                        "object": "realtime.item",
                        "type": "function_call",
                        "status": "in_progress",
                        "call_id": new_id("call"),
                        "name": script.name,
                        "arguments": script.arguments,
                    }
                )
        if calls:
            self._called_turn = self._turns
        parallel = params.get("parallel_tool_calls", self.parallel_tool_calls)
        if parallel is False:
            calls = calls[:1]  # one tool at a time
        return calls

    async def _run_calls(self, response: _Response) -> None:
        """A function-call response, with the service's event sequence: per call, output item
        added, argument deltas, arguments done, output item done; then ``response.done``. No
        audio."""
        self._emit(
            {
                "type": "response.created",
                "response": self._response_body(response, "in_progress", output=[]),
            }
        )
        for index, call in enumerate(response.calls):
            ids = {"response_id": response.id, "item_id": call["id"], "output_index": index}
            added = {**call, "arguments": ""}
            self._emit(
                {
                    "type": "response.output_item.added",
                    "response_id": response.id,
                    "output_index": index,
                    "item": added,
                }
            )
            after = self.conversation.add(added)
            self._emit(
                {"type": "conversation.item.added", "item": added, "previous_item_id": after}
            )
            arguments = call["arguments"]
            step = max(1, len(arguments) // 3)
            for start in range(0, len(arguments), step):
                await asyncio.sleep(0.01)
                response.said.append(arguments[start : start + step])
                self._emit(
                    {
                        "type": "response.function_call_arguments.delta",
                        **ids,
                        "call_id": call["call_id"],
                        "delta": arguments[start : start + step],
                    }
                )
            self._emit(
                {
                    "type": "response.function_call_arguments.done",
                    **ids,
                    "call_id": call["call_id"],
                    "name": call["name"],
                    "arguments": arguments,
                }
            )
            call["status"] = "completed"
            self._emit(
                {
                    "type": "response.output_item.done",
                    "response_id": response.id,
                    "output_index": index,
                    "item": call,
                }
            )
            self._emit({"type": "conversation.item.done", "item": call})
            entry = self.conversation.get(call["id"])
            if entry is not None:
                entry.text = f"{call['name']}({arguments})"
        self._finish(
            response,
            status="completed",
            reason=None,
            item=response.calls,
            out_audio_ms=0,
            text="".join(c["arguments"] for c in response.calls),
        )

    def _response_body(self, response: _Response, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": response.id,
            "object": "realtime.response",
            "status": status,
            "output_modalities": response.modalities,
            "conversation_id": "conv_emulator",
            **({"metadata": response.metadata} if response.metadata is not None else {}),
            **extra,
        }

    def _assistant_item(self, response: _Response, status: str, text: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if status != "in_progress":
            kind = "output_audio" if response.audio is not None else "output_text"
            key = "transcript" if response.audio is not None else "text"
            content = [{"type": kind, key: text}]
        return {
            "id": response.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    async def _run_response(self, response: _Response) -> None:
        ids = {"response_id": response.id, "item_id": response.item_id}
        where = {**ids, "output_index": 0, "content_index": 0}
        self._emit(
            {
                "type": "response.created",
                "response": self._response_body(response, "in_progress", output=[]),
            }
        )
        item = self._assistant_item(response, "in_progress", "")
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": 0,
                "item": item,
            }
        )
        after = self.conversation.add(item)
        self._emit({"type": "conversation.item.added", "item": item, "previous_item_id": after})
        audio = response.audio is not None
        part_type = "audio" if audio else "text"
        empty_part = {"type": part_type, ("transcript" if audio else "text"): ""}
        self._emit({"type": "response.content_part.added", **where, "part": empty_part})
        duration = (
            len(response.audio) / SAMPLE_RATE
            if response.audio is not None
            else len(response.text) / self.options.chars_per_second
        )
        if response.audio is not None:
            self._playing = response
            self._voice.play(response.id, response.audio)
        words = re.findall(r"\S+\s*", response.text) or [response.text]
        step = duration / self.options.generation_speed / len(words)
        delta_type = (
            "response.output_audio_transcript.delta" if audio else "response.output_text.delta"
        )
        for index, word in enumerate(words):
            await asyncio.sleep(step)
            response.said.append(word)
            if audio:  # over a WebSocket, the audio generated so far goes out with the words
                self._voice.generated(where, (index + 1) / len(words))
            self._emit(
                {"type": delta_type, **where, "delta": word, "obfuscation": secrets.token_hex(2)}
            )
        text = response.text
        if audio:
            self._emit(
                {"type": "response.output_audio_transcript.done", **where, "transcript": text}
            )
        else:
            self._emit({"type": "response.output_text.done", **where, "text": text})
        self._emit(
            {
                "type": "response.content_part.done",
                **where,
                "part": {"type": part_type, ("transcript" if audio else "text"): text},
            }
        )
        done_item = self._assistant_item(response, "completed", text)
        self._emit(
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": 0,
                "item": done_item,
            }
        )
        self._emit({"type": "conversation.item.done", "item": done_item})
        out_ms = int(duration * 1000) if audio else 0
        self._finish(
            response,
            status="completed",
            reason=None,
            item=done_item,
            out_audio_ms=out_ms,
            text=text,
        )

    def _finish(
        self,
        response: _Response,
        *,
        status: str,
        reason: str | None,
        item: dict[str, Any] | list[dict[str, Any]],
        out_audio_ms: int,
        text: str,
    ) -> None:
        entry = self.conversation.get(response.item_id)
        if entry is not None and not response.calls:  # the client may have deleted it already
            entry.text, entry.audio_ms = text, out_audio_ms
        entries = self.conversation.entries()
        own = {response.item_id, *(str(c["id"]) for c in response.calls)}
        if self._images_pending:
            # The snapshot the model looked at joins the context with the newest input item.
            seen = next((e for e in reversed(entries) if e.id not in own), None)
            if seen is not None:
                seen.image_tokens += IMAGE_TOKENS * self._images_pending
            self._images_pending = 0
        usage = self.bill.response(
            response_id=response.id,
            status=status,
            session=self.session,
            entries=entries,
            exclude=own,
            out_audio_ms=out_audio_ms,
            out_text=text,
        )
        details: dict[str, Any] = {"type": status}
        if reason:
            details["reason"] = reason
        output = item if isinstance(item, list) else [item]
        body = self._response_body(
            response, status, output=output, usage=usage, status_details=details
        )
        response.done = True
        self._response = None
        self._emit({"type": "response.done", "response": body})
        if status == "completed":
            self._arm_idle(out_audio_ms)
        self._emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {
                        "name": "tokens",
                        "limit": 400000,
                        "remaining": 400000 - usage["total_tokens"],
                        "reset_seconds": 0.5,
                    },
                ],
            }
        )

    async def cancel(self, reason: str, event_id: str | None) -> None:
        """Client ``response.cancel``."""
        if self._response is None:
            self._error(
                "invalid_request_error",
                "Cancellation failed: no active response found",
                None,
                event_id,
                code="response_cancel_not_active",
            )
            return
        playing = self._playing is self._response and self._voice.playing
        await self._cancel_response(reason, self._voice.played_ms if playing else 0)

    async def _cancel_response(self, reason: str, played_ms: int) -> None:
        response = self._response
        if response is None:
            return
        await cancel_and_wait(response.task)
        said = "".join(response.said)
        item: dict[str, Any] | list[dict[str, Any]]
        if response.calls:
            # Cancelled calls are still reported (status incomplete); clients must not run them.
            item = [
                {**c, "status": "incomplete"} if c["status"] != "completed" else c
                for c in response.calls
            ]
        else:
            item = self._assistant_item(response, "incomplete", said)
        self._finish(
            response,
            status="cancelled",
            reason=reason,
            item=item,
            out_audio_ms=played_ms,
            text=said,
        )

    async def interrupt(self, reason: str) -> None:
        """The user barged in: cancel the answer being generated, drop its unplayed audio, and
        truncate the item to what was heard."""
        playing = self._playing if self._voice.playing else None
        played_ms = self._voice.clear() if playing is not None else 0
        if self._response is not None:
            await self._cancel_response(reason, played_ms)
        if playing is not None:
            self._playing = None
            self._emit({"type": "output_audio_buffer.cleared", "response_id": playing.id})
            with contextlib.suppress(UnknownItemError):
                self.conversation.truncate_audio(playing.item_id, played_ms)
            self._emit(
                {
                    "type": "conversation.item.truncated",
                    "item_id": playing.item_id,
                    "content_index": 0,
                    "audio_end_ms": played_ms,
                }
            )

    def clear_output(self) -> None:
        """Client ``output_audio_buffer.clear``."""
        playing = self._playing
        self._voice.clear()
        self._playing = None
        self._emit(
            {"type": "output_audio_buffer.cleared", "response_id": playing.id if playing else ""}
        )

    def audio_started(self, response_id: str) -> None:
        self.audio_out_started = True
        self._emit({"type": "output_audio_buffer.started", "response_id": response_id})

    def audio_stopped(self, response_id: str) -> None:
        if self._playing is not None and self._playing.id == response_id:
            self._playing = None
        self._emit({"type": "output_audio_buffer.stopped", "response_id": response_id})
