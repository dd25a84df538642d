"""The GA session object sent with a call, built from Settings.

Shape per shared/docs/realtime-protocol.md ("Session object"); tests validate it against
``openai.types.realtime.RealtimeSessionCreateRequest``.
"""

from __future__ import annotations

from typing import Any

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


def build_session(
    settings: Settings,
    *,
    create_response: bool = True,
    interrupt_response: bool = True,
    output_modalities: list[str] | None = None,
) -> dict[str, Any]:
    """A ``session`` for POST /realtime/calls (``type: realtime`` and ``model`` included)."""
    audio_input: dict[str, Any] = {
        "turn_detection": turn_detection(
            settings, create_response=create_response, interrupt_response=interrupt_response
        ),
    }
    if settings.transcription_model:
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
    return session
