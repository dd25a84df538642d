"""Our event models: tolerant parsing, and JSON that the official openai types accept."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bridge.emulator.schema import CLIENT_EVENTS, check_client_event, check_session
from bridge.realtime import build_session
from bridge.realtime.events import (
    AudioTranscriptDelta,
    ClientEvent,
    ConversationItemCreate,
    ConversationItemTruncate,
    ErrorEvent,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    OutputAudioBufferClear,
    ResponseCancel,
    ResponseCreate,
    ResponseDone,
    SessionUpdate,
    UnknownEvent,
    parse_server_event,
)
from bridge.realtime.http import error_from_response
from bridge.settings.config import Settings


def test_extra_fields_pass_through() -> None:
    event = parse_server_event(
        {
            "type": "response.output_audio_transcript.delta",
            "event_id": "event_1",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hel",
            "obfuscation": "x9",
        }
    )
    assert isinstance(event, AudioTranscriptDelta)
    assert event.delta == "Hel"
    assert event.model_extra == {"obfuscation": "x9"}


def test_unknown_types_and_bad_payloads_never_raise() -> None:
    unknown = parse_server_event({"type": "response.mcp_call.completed", "event_id": "e"})
    assert isinstance(unknown, UnknownEvent) and unknown.problem is None
    bad = parse_server_event({"type": "response.done", "event_id": "e", "response": "oops"})
    assert isinstance(bad, UnknownEvent) and bad.problem and "response" in bad.problem
    junk = parse_server_event(["not", "an", "event"])
    assert isinstance(junk, UnknownEvent) and junk.problem


def test_usage_by_kind() -> None:
    event = parse_server_event(
        {
            "type": "response.done",
            "event_id": "e",
            "response": {
                "id": "resp_1",
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "turn_detected"},
                "usage": {
                    "total_tokens": 30,
                    "input_tokens": 20,
                    "output_tokens": 10,
                    "input_token_details": {"audio_tokens": 15, "text_tokens": 5},
                    "output_token_details": {"audio_tokens": 9, "text_tokens": 1},
                },
            },
        }
    )
    assert isinstance(event, ResponseDone)
    assert event.response.reason == "turn_detected"
    assert event.response.usage is not None
    assert event.response.usage.by_kind()["input_audio"] == 15
    assert event.response.usage.by_kind()["output_text"] == 1


def test_error_event() -> None:
    event = parse_server_event(
        {
            "type": "error",
            "event_id": "e",
            "error": {"type": "invalid_request_error", "code": "session_expired", "message": "m"},
        }
    )
    assert isinstance(event, ErrorEvent) and event.error.code == "session_expired"


CLIENT_EVENTS_WE_SEND: list[ClientEvent] = [
    SessionUpdate(session={"type": "realtime", "instructions": "Be brief."}),
    SessionUpdate(session=build_session(Settings())),
    ResponseCreate(),
    ResponseCreate(response={"output_modalities": ["text"]}),
    ResponseCancel(),
    OutputAudioBufferClear(),
    InputAudioBufferCommit(),
    InputAudioBufferClear(),
    ConversationItemCreate.user_text("hello there"),
    ConversationItemTruncate(item_id="item_1", audio_end_ms=1200),
]


@pytest.mark.parametrize("event", CLIENT_EVENTS_WE_SEND, ids=lambda e: e.__class__.__name__)
def test_client_events_match_official_schema(event: ClientEvent) -> None:
    data = event.model_dump(mode="json", exclude_none=True)
    CLIENT_EVENTS.validate_python(data)
    _, problem = check_client_event(data)
    assert problem is None, problem


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"turn_detection": "semantic_vad"},
        {"turn_detection": "none", "transcription_model": ""},
        {"noise_reduction": "far_field", "transcription_language": "de", "max_output_tokens": 512},
    ],
)
def test_session_matches_official_schema_strictly(overrides: dict[str, Any]) -> None:
    session = build_session(Settings.model_validate(overrides))
    assert check_session(session) is None


def test_beta_shaped_session_is_rejected() -> None:
    problem = check_session({"type": "realtime", "voice": "alloy", "modalities": ["audio"]})
    assert problem is not None
    assert problem.message.startswith("Unknown parameter: 'session.")


def test_retry_after_is_bounded() -> None:
    for value, expected in (("2", 2.0), ("inf", None), ("-1", None), ("nan", None), ("soon", None)):
        response = httpx.Response(429, headers={"retry-after": value}, json={"error": {}})
        assert error_from_response(response, None).retry_after == expected
