"""Settings the model table checks (reasoning, the meeting context's bound) and the session
fields they send (reasoning, parallel tool calls, stored prompt, tracing), checked against the
openai package's own session type, strictly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.emulator.schema import check_session
from bridge.realtime import build_session
from bridge.settings.config import (
    ConfigError,
    SessionOverrides,
    Settings,
    apply_overrides,
    load_settings,
)


def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Settings:
    """Settings from ``env`` and an empty config file (so the shipped one is not read)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.toml"
    if not path.exists():
        path.write_text("")
    return path


def test_reasoning_effort_on_a_model_without_reasoning_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(
            monkeypatch,
            tmp_path,
            BRIDGE_MODEL="gpt-realtime-1.5",
            BRIDGE_REASONING_EFFORT="low",
        )
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid setting reasoning_effort (BRIDGE_REASONING_EFFORT)")
    assert "'gpt-realtime-1.5' has no reasoning" in message
    assert "gpt-realtime-2.1, gpt-realtime-2.1-mini, gpt-realtime-2" in message


def test_parallel_tool_calls_likewise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"parallel_tool_calls .*'gpt-realtime' has no"):
        load(monkeypatch, tmp_path, BRIDGE_MODEL="gpt-realtime", BRIDGE_PARALLEL_TOOL_CALLS="1")


def test_reasoning_goes_to_a_reasoning_model_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Unset: nothing sent, the model's default holds.
    plain = build_session(Settings())
    assert "reasoning" not in plain and "parallel_tool_calls" not in plain
    assert plain["model"] == "gpt-realtime-2.1"
    # A model the table does not know (an Azure deployment name) gets what was configured.
    azure = Settings.model_validate({"model": "my-deployment", "reasoning_effort": "low"})
    assert build_session(azure)["reasoning"] == {"effort": "low"}
    with pytest.raises(ValueError, match="reasoning_effort"):
        Settings.model_validate({"model": "gpt-realtime", "reasoning_effort": "lots"})
    settings = load(
        monkeypatch,
        tmp_path,
        BRIDGE_MODEL="gpt-realtime-2.1-mini",
        BRIDGE_REASONING_EFFORT="xhigh",
        BRIDGE_PARALLEL_TOOL_CALLS="false",
    )
    session = build_session(settings)
    assert session["reasoning"] == {"effort": "xhigh"}
    assert session["parallel_tool_calls"] is False
    assert check_session(session) is None


def test_meeting_context_must_fit_the_models_context() -> None:
    # gpt-realtime holds 28,224 input tokens: half is 14,112 tokens, 56,448 characters.
    Settings.model_validate({"model": "gpt-realtime", "meeting_context_max_chars": 56_448})
    with pytest.raises(ValueError, match="at most 56448"):
        Settings.model_validate({"model": "gpt-realtime", "meeting_context_max_chars": 60_000})
    # The 128k default model takes far more; a room may not push a 32k model past its bound.
    Settings.model_validate({"meeting_context_max_chars": 150_000})
    small = Settings.model_validate({"model": "gpt-realtime-1.5"})
    with pytest.raises(ValueError, match="meeting_context_max_chars"):
        apply_overrides(small, SessionOverrides(meeting_context_max_chars=100_000))


def test_stored_prompt_with_variables_and_a_rooms_variable_set(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        'prompt_id = "pmpt_123"\nprompt_version = "4"\n\n'
        '[prompt_variables]\ncity = "Paris"\ntone = "calm"\n\n'
        '[prompt_variable_sets.support]\ntone = "patient"\nteam = "support"\n'
    )
    settings = load_settings(path)
    assert build_session(settings)["prompt"] == {
        "id": "pmpt_123",
        "version": "4",
        "variables": {"city": "Paris", "tone": "calm"},
    }
    room = apply_overrides(settings, SessionOverrides(prompt_variable_set="support"))
    session = build_session(room)
    assert session["prompt"]["variables"] == {"city": "Paris", "tone": "patient", "team": "support"}
    assert check_session(session) is None
    with pytest.raises(ValueError, match="'sales' is not a configured set"):
        apply_overrides(settings, SessionOverrides(prompt_variable_set="sales"))
    # Room metadata names a set; it never gives a value of its own.
    with pytest.raises(ValueError, match="prompt_variables"):
        SessionOverrides.model_validate({"prompt_variables": {"city": "Rome"}})


def test_prompt_variables_from_the_environment_are_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load(
        monkeypatch,
        tmp_path,
        BRIDGE_PROMPT_ID="pmpt_1",
        BRIDGE_PROMPT_VARIABLES=json.dumps({"city": "Oslo"}),
    )
    assert build_session(settings)["prompt"] == {"id": "pmpt_1", "variables": {"city": "Oslo"}}
    monkeypatch.setenv("BRIDGE_PROMPT_VARIABLES", "city=Oslo")
    with pytest.raises(ConfigError, match="prompt_variables"):
        load_settings(_empty(tmp_path))


def test_tracing_groups_by_room() -> None:
    assert "tracing" not in build_session(Settings(), room="standup")
    settings = Settings.model_validate(
        {"tracing": True, "tracing_metadata": {"team": "blue"}, "tracing_workflow_name": "rooms"}
    )
    session = build_session(settings, room="standup")
    assert session["tracing"] == {
        "workflow_name": "rooms",
        "group_id": "standup",
        "metadata": {"team": "blue"},
    }
    assert check_session(session) is None


@pytest.mark.parametrize(
    "values",
    [
        {"model": "gpt-realtime-2", "reasoning_effort": "minimal", "parallel_tool_calls": True},
        {"model": "gpt-realtime-1.5", "prompt_id": "pmpt_9", "tracing": True},
        {"model": "gpt-realtime", "transcription_model": "gpt-transcribe"},
    ],
)
def test_every_model_options_session_is_strictly_valid(values: dict[str, Any]) -> None:
    session = build_session(Settings.model_validate(values), room="r")
    assert check_session(session) is None
