"""The GA session object sent with a call, built from Settings.

Shape per docs/protocol-notes.md ("The session object"); tests validate it against
``openai.types.realtime.RealtimeSessionCreateRequest``.
"""

from __future__ import annotations

from typing import Any

from bridge.billing.models import takes_reasoning
from bridge.settings.config import Settings


def turn_detection(
    settings: Settings, *, create_response: bool, interrupt_response: bool
) -> dict[str, Any] | None:
    if settings.turn_detection == "none":
        return None
    if settings.turn_detection == "semantic_vad":
        return {
            "type": "semantic_vad",
            "create_response": create_response,
            "interrupt_response": interrupt_response,
        }
    return {
        "type": "server_vad",
        "threshold": settings.vad_threshold,
        "prefix_padding_ms": settings.vad_prefix_padding_ms,
        "silence_duration_ms": settings.vad_silence_duration_ms,
        "create_response": create_response,
        "interrupt_response": interrupt_response,
    }


def listen_only(settings: Settings, *, transcribe: bool) -> dict[str, Any]:
    """A ``session.update`` (its ``session``, less ``type``) that stops a call answering: turns
    are still detected but make and interrupt no response; no transcription unless
    ``transcribe``."""
    audio_input: dict[str, Any] = {
        "turn_detection": turn_detection(settings, create_response=False, interrupt_response=False)
    }
    if not transcribe:
        audio_input["transcription"] = None
    return {"audio": {"input": audio_input}}


def build_session(
    settings: Settings,
    *,
    create_response: bool = True,
    interrupt_response: bool = True,
    output_modalities: list[str] | None = None,
    room: str | None = None,
    transcribe: bool = True,
) -> dict[str, Any]:
    """A ``session`` for POST /realtime/calls (``type: realtime`` and ``model`` included).
    ``transcribe=False``: no input transcription, whatever the settings say.

    ``room`` is the traces' group id when ``tracing`` is on. ``reasoning`` and
    ``parallel_tool_calls`` go only to a model that takes them (the settings refuse them for a
    model without reasoning; a model the table does not know gets what was configured)."""
    audio_input: dict[str, Any] = {
        "turn_detection": turn_detection(
            settings, create_response=create_response, interrupt_response=interrupt_response
        ),
    }
    if settings.transcription_model and transcribe:
        transcription: dict[str, Any] = {"model": settings.transcription_model}
        if settings.transcription_language:
            transcription["language"] = settings.transcription_language
        audio_input["transcription"] = transcription
    if settings.noise_reduction != "none":
        audio_input["noise_reduction"] = {"type": settings.noise_reduction}
    session: dict[str, Any] = {
        "type": "realtime",
        "model": settings.model,
        "instructions": settings.instructions,
        "output_modalities": output_modalities or ["audio"],
        "max_output_tokens": settings.max_output_tokens,
        "audio": {
            "input": audio_input,
            "output": {"voice": settings.voice},
        },
    }
    tools = [t.definition() for t in settings.tools] + [
        s.definition() for s in settings.mcp_servers
    ]
    if tools:
        session["tools"] = tools
        choice = settings.tool_choice
        named = choice not in ("auto", "none", "required")
        session["tool_choice"] = {"type": "function", "name": choice} if named else choice
    if settings.retention_ratio is not None:
        # Dropping a fixed share when the context fills keeps the prefix (and its cache) stable
        # for many turns, instead of shifting it by one turn on every response ("auto").
        session["truncation"] = {
            "type": "retention_ratio",
            "retention_ratio": settings.retention_ratio,
        }
    session.update(reasoning_options(settings))
    session.update(prompt_and_tracing(settings, room))
    return session


def reasoning_options(settings: Settings) -> dict[str, Any]:
    """``reasoning`` and ``parallel_tool_calls``, for a model that takes them."""
    options: dict[str, Any] = {}
    if takes_reasoning(settings.model) is False:
        return options
    if settings.reasoning_effort is not None:
        options["reasoning"] = {"effort": settings.reasoning_effort}
    if settings.parallel_tool_calls is not None:
        options["parallel_tool_calls"] = settings.parallel_tool_calls
    return options


def prompt_and_tracing(settings: Settings, room: str | None) -> dict[str, Any]:
    """The stored ``prompt`` reference and OpenAI-side ``tracing`` (group id = the room)."""
    options: dict[str, Any] = {}
    if settings.prompt_id is not None:
        prompt: dict[str, Any] = {"id": settings.prompt_id}
        if settings.prompt_version is not None:
            prompt["version"] = settings.prompt_version
        if settings.prompt_variables:
            prompt["variables"] = dict(settings.prompt_variables)
        options["prompt"] = prompt
    if settings.tracing:
        tracing: dict[str, Any] = {"workflow_name": settings.tracing_workflow_name}
        if room:
            tracing["group_id"] = room
        if settings.tracing_metadata:
            tracing["metadata"] = dict(settings.tracing_metadata)
        options["tracing"] = tracing
    return options
