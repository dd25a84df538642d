"""Typed views of the Realtime events the bridge uses.

Server events are parsed tolerantly: extra fields (``obfuscation``, fields added later) are kept,
unknown event types become ``UnknownEvent`` with the raw payload, and a known type whose payload
does not fit becomes ``UnknownEvent`` with ``problem`` set, so one odd event never breaks a call.
Client events are small models whose JSON matches the official ``RealtimeClientEvent`` schema
(tests check it against the openai package).
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.logs import one_line


def new_event_id() -> str:
    return "event_" + secrets.token_hex(10)


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- shared payloads ------------------------------------------------------------------------


class Usage(_Tolerant):
    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_token_details: dict[str, Any] = Field(default_factory=dict)
    output_token_details: dict[str, Any] = Field(default_factory=dict)

    def by_kind(self) -> dict[str, int]:
        """Token counts keyed ``input_text``, ``input_audio``, ``input_image``,
        ``input_cached``, ``output_text``, ``output_audio``."""
        i, o = self.input_token_details, self.output_token_details
        return {
            "input_text": int(i.get("text_tokens") or 0),
            "input_audio": int(i.get("audio_tokens") or 0),
            "input_image": int(i.get("image_tokens") or 0),
            "input_cached": int(i.get("cached_tokens") or 0),
            "output_text": int(o.get("text_tokens") or 0),
            "output_audio": int(o.get("audio_tokens") or 0),
        }


class FunctionCall(_Tolerant):
    """A ``function_call`` item: ``arguments`` is the model's JSON text, not yet parsed."""

    id: str = ""
    call_id: str
    name: str
    arguments: str = ""


class Response(_Tolerant):
    id: str = ""
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    output: list[dict[str, Any]] = Field(default_factory=list)
    usage: Usage | None = None

    def function_calls(self) -> list[FunctionCall]:
        """The function calls this response asked for, if it completed. A cancelled or
        interrupted response also reports its calls (and ``arguments.done`` fires for them), but
        they must not run."""
        if self.status != "completed":
            return []
        calls = []
        for item in self.output:
            if item.get("type") == "function_call" and item.get("status") == "completed":
                try:
                    calls.append(FunctionCall.model_validate(item))
                except ValidationError:
                    continue
        return calls

    @property
    def reason(self) -> str | None:
        if not self.status_details:
            return None
        reason = self.status_details.get("reason")
        return str(reason) if reason is not None else None


class ErrorDetail(_Tolerant):
    type: str = ""
    code: str | None = None
    message: str = ""
    param: str | None = None
    event_id: str | None = None


# ---- server events --------------------------------------------------------------------------


class ServerEvent(_Tolerant):
    TYPE: ClassVar[str] = ""
    type: str
    event_id: str = ""


class SessionCreated(ServerEvent):
    TYPE = "session.created"
    session: dict[str, Any]


class SessionUpdated(ServerEvent):
    TYPE = "session.updated"
    session: dict[str, Any]


class SpeechStarted(ServerEvent):
    TYPE = "input_audio_buffer.speech_started"
    audio_start_ms: int = 0
    item_id: str = ""


class SpeechStopped(ServerEvent):
    TYPE = "input_audio_buffer.speech_stopped"
    audio_end_ms: int = 0
    item_id: str = ""


class InputAudioCommitted(ServerEvent):
    TYPE = "input_audio_buffer.committed"
    item_id: str = ""
    previous_item_id: str | None = None


class ItemAdded(ServerEvent):
    TYPE = "conversation.item.added"
    item: dict[str, Any]
    previous_item_id: str | None = None


class ItemDone(ServerEvent):
    TYPE = "conversation.item.done"
    item: dict[str, Any]


class ItemTruncated(ServerEvent):
    TYPE = "conversation.item.truncated"
    item_id: str = ""
    content_index: int = 0
    audio_end_ms: int = 0


class ItemDeleted(ServerEvent):
    TYPE = "conversation.item.deleted"
    item_id: str = ""


class InputTranscriptDelta(ServerEvent):
    TYPE = "conversation.item.input_audio_transcription.delta"
    item_id: str = ""
    content_index: int = 0
    delta: str = ""


class InputTranscriptCompleted(ServerEvent):
    TYPE = "conversation.item.input_audio_transcription.completed"
    item_id: str = ""
    content_index: int = 0
    transcript: str = ""
    usage: dict[str, Any] | None = None


class InputTranscriptFailed(ServerEvent):
    TYPE = "conversation.item.input_audio_transcription.failed"
    item_id: str = ""
    content_index: int = 0
    error: ErrorDetail = Field(default_factory=ErrorDetail)


class ResponseCreated(ServerEvent):
    TYPE = "response.created"
    response: Response


class ResponseDone(ServerEvent):
    TYPE = "response.done"
    response: Response


class OutputItemAdded(ServerEvent):
    TYPE = "response.output_item.added"
    response_id: str = ""
    output_index: int = 0
    item: dict[str, Any] = Field(default_factory=dict)


class OutputItemDone(ServerEvent):
    TYPE = "response.output_item.done"
    response_id: str = ""
    output_index: int = 0
    item: dict[str, Any] = Field(default_factory=dict)


class AudioTranscriptDelta(ServerEvent):
    TYPE = "response.output_audio_transcript.delta"
    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0
    delta: str = ""


class AudioTranscriptDone(ServerEvent):
    TYPE = "response.output_audio_transcript.done"
    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0
    transcript: str = ""


class FunctionCallArgumentsDelta(ServerEvent):
    TYPE = "response.function_call_arguments.delta"
    response_id: str = ""
    item_id: str = ""
    call_id: str = ""
    delta: str = ""


class FunctionCallArgumentsDone(ServerEvent):
    TYPE = "response.function_call_arguments.done"
    response_id: str = ""
    item_id: str = ""
    call_id: str = ""
    name: str = ""
    arguments: str = ""


class TextDelta(ServerEvent):
    TYPE = "response.output_text.delta"
    response_id: str = ""
    item_id: str = ""
    delta: str = ""


class TextDone(ServerEvent):
    TYPE = "response.output_text.done"
    response_id: str = ""
    item_id: str = ""
    text: str = ""


class OutputAudioStarted(ServerEvent):
    TYPE = "output_audio_buffer.started"
    response_id: str = ""


class OutputAudioStopped(ServerEvent):
    TYPE = "output_audio_buffer.stopped"
    response_id: str = ""


class OutputAudioCleared(ServerEvent):
    TYPE = "output_audio_buffer.cleared"
    response_id: str = ""


class RateLimitsUpdated(ServerEvent):
    TYPE = "rate_limits.updated"
    rate_limits: list[dict[str, Any]] = Field(default_factory=list)


class ErrorEvent(ServerEvent):
    TYPE = "error"
    error: ErrorDetail


class UnknownEvent(ServerEvent):
    """An event type we do not model, or a known type whose payload did not parse."""

    problem: str | None = None


_SERVER_EVENTS: dict[str, type[ServerEvent]] = {
    cls.TYPE: cls
    for cls in (
        SessionCreated,
        SessionUpdated,
        SpeechStarted,
        SpeechStopped,
        InputAudioCommitted,
        ItemAdded,
        ItemDone,
        ItemTruncated,
        ItemDeleted,
        InputTranscriptDelta,
        InputTranscriptCompleted,
        InputTranscriptFailed,
        ResponseCreated,
        ResponseDone,
        OutputItemAdded,
        OutputItemDone,
        AudioTranscriptDelta,
        AudioTranscriptDone,
        FunctionCallArgumentsDelta,
        FunctionCallArgumentsDone,
        TextDelta,
        TextDone,
        OutputAudioStarted,
        OutputAudioStopped,
        OutputAudioCleared,
        RateLimitsUpdated,
        ErrorEvent,
    )
}


def parse_server_event(data: Any) -> ServerEvent:
    """A typed event for ``data`` (one decoded JSON message); never raises."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return UnknownEvent(type="<invalid>", problem="message is not an event object")
    cls = _SERVER_EVENTS.get(data["type"])
    if cls is None:
        return _unknown(data, None)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _unknown(data, one_line(f"{where}: {first['msg']}"))


def _unknown(data: dict[str, Any], problem: str | None) -> UnknownEvent:
    """The payload kept untyped; only our own fields are set from what we checked (a model's
    ``event_id: null`` must not make this raise)."""
    raw = {k: v for k, v in data.items() if k not in ("event_id", "problem")}
    event_id = data.get("event_id")
    return UnknownEvent.model_validate(
        {**raw, "event_id": event_id if isinstance(event_id, str) else "", "problem": problem}
    )


# ---- client events --------------------------------------------------------------------------


class ClientEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(default_factory=new_event_id)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class SessionUpdate(ClientEvent):
    type: Literal["session.update"] = "session.update"
    session: dict[str, Any]


class ResponseCreate(ClientEvent):
    type: Literal["response.create"] = "response.create"
    response: dict[str, Any] | None = None


class ResponseCancel(ClientEvent):
    type: Literal["response.cancel"] = "response.cancel"
    response_id: str | None = None


class OutputAudioBufferClear(ClientEvent):
    type: Literal["output_audio_buffer.clear"] = "output_audio_buffer.clear"


class InputAudioBufferCommit(ClientEvent):
    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"


class InputAudioBufferClear(ClientEvent):
    type: Literal["input_audio_buffer.clear"] = "input_audio_buffer.clear"


class ConversationItemCreate(ClientEvent):
    type: Literal["conversation.item.create"] = "conversation.item.create"
    item: dict[str, Any]
    previous_item_id: str | None = None

    @classmethod
    def user_text(cls, text: str) -> ConversationItemCreate:
        return cls(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }
        )

    @classmethod
    def function_output(cls, call_id: str, output: str) -> ConversationItemCreate:
        return cls(item={"type": "function_call_output", "call_id": call_id, "output": output})


class ConversationItemTruncate(ClientEvent):
    type: Literal["conversation.item.truncate"] = "conversation.item.truncate"
    item_id: str
    content_index: int = 0
    audio_end_ms: int


class ConversationItemDelete(ClientEvent):
    type: Literal["conversation.item.delete"] = "conversation.item.delete"
    item_id: str
