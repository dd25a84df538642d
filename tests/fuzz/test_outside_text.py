"""SDP answers, room metadata and settings (environment and TOML): whatever arrives, the outcome
is the one the README promises (a usable value, or one clear error), never an unhandled exception,
and no secret in any message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge.realtime.errors import RealtimeProtocolError
from bridge.realtime.sdp import normalize_answer
from bridge.service.eligibility import decide, dispatch_overrides
from bridge.settings.config import ConfigError, Settings, load_settings
from tests.fuzz.strategies import (
    LIVEKIT_SECRET,
    OPENAI_KEY,
    hostile_text,
    json_values,
    no_secret,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openai-answer-example.sdp"
ANSWER_LINES = FIXTURE.read_text().splitlines()


# ---- SDP answers ------------------------------------------------------------------------------


@given(
    st.one_of(
        hostile_text,
        # The real answer with lines dropped, repeated, or replaced by junk.
        st.lists(st.one_of(st.sampled_from(ANSWER_LINES), hostile_text), max_size=40).map(
            "\r\n".join
        ),
    )
)
def test_sdp_answers_are_normalized_or_refused_in_one_line(sdp: str) -> None:
    try:
        out = normalize_answer(sdp)
    except RealtimeProtocolError as exc:
        assert "\n" not in str(exc)
    else:
        assert out.startswith("v=0")


# ---- room metadata ----------------------------------------------------------------------------

POLICIES = ["all", "pattern", "metadata"]
metadata_text = st.one_of(
    hostile_text,
    json_values().map(lambda v: __import__("json").dumps(v)),
    st.dictionaries(st.sampled_from(["ai", "other"]), json_values(10)).map(
        lambda v: __import__("json").dumps(v)
    ),
    st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n),
)


def base_settings(**changes: Any) -> Settings:
    return Settings(
        livekit_api_key="key",
        livekit_api_secret=SecretStr(LIVEKIT_SECRET),
        openai_api_key=SecretStr(OPENAI_KEY),
        **changes,
    )


SETTINGS = {policy: base_settings(rooms=policy, room_patterns=["support-*"]) for policy in POLICIES}


@given(st.sampled_from(POLICIES), hostile_text, metadata_text)
@example("all", "", '{"ai":{"\\n":null}}')  # a key with a newline: pydantic names it verbatim
def test_room_metadata_gives_a_decision_with_one_line(policy: str, room: str, meta: str) -> None:
    decision = decide(SETTINGS[policy], room, meta)
    assert isinstance(decision.eligible, bool)
    assert "\n" not in decision.reason and no_secret(decision.reason)
    _overrides, problem = dispatch_overrides(SETTINGS[policy], meta)
    assert "\n" not in problem and no_secret(problem)


# ---- settings from the environment and TOML ----------------------------------------------------

FIELDS = sorted(Settings.model_fields)
toml_values = st.one_of(
    st.sampled_from(["true", "false"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(["[]", '["a", 1]', "{}", "nan", "inf", '"' + OPENAI_KEY + '"']),
).map(str)


@hyp_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    env=st.dictionaries(
        st.sampled_from(FIELDS).map(lambda f: "BRIDGE_" + f.upper()), hostile_text, max_size=3
    ),
    toml=st.one_of(
        hostile_text,
        st.dictionaries(st.sampled_from(FIELDS), toml_values, max_size=4).map(
            lambda d: "\n".join(
                f"{k} = {v.lower() if v in ('True', 'False') else v}" for k, v in d.items()
            )
        ),
    ),
)
def test_settings_load_or_fail_with_clear_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], toml: str
) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(toml.replace("\x00", ""))
    for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LIVEKIT_API_SECRET", LIVEKIT_SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    try:
        for name, value in env.items():
            monkeypatch.setenv(name, value.replace("\x00", ""))
        try:
            load_settings(path)
        except ConfigError as exc:
            message = str(exc)
            assert message and no_secret(message)
            assert all(line.strip() for line in message.splitlines())
    finally:
        for name in env:
            monkeypatch.delenv(name, raising=False)
