"""Which rooms get the AI, and what a room's metadata may change."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.service.eligibility import decide
from bridge.settings.config import Settings


def meta(value: Any) -> str:
    return json.dumps({"ai": value})


@pytest.mark.parametrize(
    ("settings", "room", "metadata", "eligible", "reason"),
    [
        ({}, "anything", "", True, "all rooms"),
        ({}, "anything", meta(False), False, "sets 'ai' to false"),
        ({}, "anything", "not json at all", True, "all rooms"),
        ({"rooms": "pattern", "room_patterns": ["support-*"]}, "support-7", "", True, "matches"),
        ({"rooms": "pattern", "room_patterns": ["support-*"]}, "sales-7", "", False, "matches no"),
        ({"rooms": "metadata"}, "r", "", False, "has no 'ai' key"),
        ({"rooms": "metadata"}, "r", "{oops", False, "not usable JSON"),
        ({"rooms": "metadata"}, "r", meta(True), True, "asks for the AI"),
        ({"rooms": "metadata"}, "r", meta({"voice": "coral"}), True, "asks for the AI"),
        ({"rooms": "metadata"}, "r", meta("yes"), False, "expected true, false or an object"),
        ({}, "r", meta({"voice": "robot"}), False, "invalid 'ai' metadata: voice"),
        ({}, "r", meta({"api_key": "x"}), False, "invalid 'ai' metadata: api_key"),
        (
            {"transcription_model": ""},
            "r",
            meta({"response_policy": "addressed"}),
            False,
            "needs transcription_model",
        ),
    ],
)
def test_decide(
    settings: dict[str, Any], room: str, metadata: str, eligible: bool, reason: str
) -> None:
    decision = decide(Settings.model_validate(settings), room, metadata)
    assert decision.eligible is eligible
    assert reason in decision.reason
    assert "\n" not in decision.reason


def test_overrides_come_from_metadata() -> None:
    decision = decide(
        Settings(),
        "r",
        meta({"voice": "coral", "audience": "private", "instructions": "Be a pirate."}),
    )
    assert decision.overrides is not None
    assert decision.overrides.voice == "coral"
    assert decision.overrides.audience == "private"


@pytest.mark.parametrize(
    "metadata",
    [json.dumps({"ai": True, "n": 0}).replace("0", "1" * 5000), "[" * 100_000],
)
def test_hostile_metadata_is_a_skipped_room_not_a_crash(metadata: str) -> None:
    decision = decide(Settings(rooms="metadata"), "r", metadata)
    assert not decision.eligible and "not usable JSON" in decision.reason
    assert decide(Settings(), "r", metadata).eligible  # policy `all` ignores unusable metadata
