"""Model server events (the data channel): any JSON, known types with wrong or huge fields.

``parse_server_event`` never raises; what it cannot type comes back as an ``UnknownEvent`` with a
one-line ``problem`` (the session logs it as one warning and carries on).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bridge.realtime.events import _SERVER_EVENTS, ServerEvent, UnknownEvent, parse_server_event
from tests.fuzz.strategies import json_values, scalars

KNOWN_TYPES = sorted(_SERVER_EVENTS)
FIELDS = [
    "type",
    "event_id",
    "item_id",
    "response_id",
    "delta",
    "transcript",
    "item",
    "response",
    "error",
    "session",
    "content_index",
    "output_index",
    "audio_end_ms",
    "problem",
    "usage",
    "call_id",
    "arguments",
    "name",
    "status",
    "rate_limits",
    "previous_item_id",
    "text",
]


def check(event: ServerEvent) -> None:
    assert isinstance(event, ServerEvent)
    if isinstance(event, UnknownEvent) and event.problem is not None:
        assert "\n" not in event.problem


@given(json_values())
def test_any_json_is_an_event_or_an_unknown_one(data: Any) -> None:
    check(parse_server_event(data))


@given(
    st.sampled_from(KNOWN_TYPES),
    st.dictionaries(st.sampled_from(FIELDS), st.one_of(scalars, json_values(8)), max_size=8),
)
def test_known_types_with_wrong_fields(kind: str, fields: dict[str, Any]) -> None:
    check(parse_server_event({**fields, "type": kind}))
