"""Settings: sources, validation messages, secrets, and the docs kept in step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bridge.realtime.errors import redact
from bridge.settings.config import (
    ConfigError,
    SessionOverrides,
    Settings,
    apply_overrides,
    env_name,
    load_settings,
)
from bridge.settings.doc import render_markdown, render_toml

ROOT = Path(__file__).resolve().parents[2]


def test_env_beats_file_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "b.toml"
    path.write_text('video_fps = 2.0\nvoice = "coral"\n')
    monkeypatch.setenv("BRIDGE_VIDEO_FPS", "0.5")
    settings = load_settings(path)
    assert settings.video_fps == 0.5
    assert settings.voice == "coral"
    assert settings.max_sessions == Settings.model_fields["max_sessions"].default


def test_shared_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "wss://lk.example.test/")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "s3cr3t-value-long-enough-for-livekit-32")
    settings = load_settings(ROOT / "config" / "bridge.toml")
    assert settings.livekit_url == "wss://lk.example.test"
    assert settings.livekit_http_url == "https://lk.example.test"
    assert settings.openai_base_url == "http://127.0.0.1:9/v1"
    assert "s3cr3t-value-long-enough-for-livekit-32" not in repr(settings)
    assert "s3cr3t-value-long-enough-for-livekit-32" not in settings.model_dump_json()


def test_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_ROOM_PATTERNS", "support-*, sales-*")
    monkeypatch.setenv("BRIDGE_ICE_HOST_ADDRESSES", '["127.0.0.1"]')
    settings = load_settings()
    assert settings.room_patterns == ["support-*", "sales-*"]
    assert settings.ice_host_addresses == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BRIDGE_VIDEO_FPS": "-1"}, "invalid setting video_fps (BRIDGE_VIDEO_FPS)"),
        ({"BRIDGE_VOICE": "robot"}, "invalid setting voice (BRIDGE_VOICE)"),
        ({"LIVEKIT_URL": "localhost:7880"}, "invalid setting livekit_url (LIVEKIT_URL)"),
        ({"BRIDGE_ICE_SERVERS": "turn.example.test"}, "invalid setting ice_servers"),
        ({"BRIDGE_VIDOE_FPS": "1"}, "unknown setting BRIDGE_VIDOE_FPS"),
        ({"LIVEKIT_API_SECRET": "secret"}, "is 6 characters; LiveKit needs at least 32"),
        ({"BRIDGE_MAX_OUTPUT_TOKENS": "99999"}, "invalid setting max_output_tokens"),
    ],
)
def test_bad_settings_name_the_setting(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_secret_never_in_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-print")
    monkeypatch.setenv("BRIDGE_MAX_SESSIONS", "sk-do-not-print")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "sk-do-not-print" not in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("video_fps = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_settings(bad)
    table = tmp_path / "table.toml"
    table.write_text("[video]\nfps = 1\n")
    with pytest.raises(ConfigError, match="tables are not settings"):
        load_settings(table)


def test_require_names_env_var() -> None:
    with pytest.raises(ConfigError, match="LIVEKIT_API_SECRET is not set"):
        Settings(livekit_api_key="k").require("livekit_api_key", "livekit_api_secret")


def test_session_overrides_are_strict() -> None:
    overrides = SessionOverrides.model_validate({"voice": "coral", "audience": "private"})
    settings = apply_overrides(Settings(), overrides)
    assert (settings.voice, settings.audience) == ("coral", "private")
    with pytest.raises(ValueError, match="voice"):
        SessionOverrides.model_validate({"voice": "robot"})
    with pytest.raises(ValueError, match="Extra inputs"):
        SessionOverrides.model_validate({"api_key": "x"})


def test_shipped_toml_is_the_defaults() -> None:
    assert (ROOT / "config" / "bridge.toml").read_text() == render_toml()
    assert load_settings(ROOT / "config" / "bridge.toml") == Settings()


def test_the_settings_page_documents_every_setting() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    assert render_markdown() in page, "regenerate: python -m bridge.settings.doc markdown"
    for name in Settings.model_fields:
        assert f"`{env_name(name)}`" in page


def test_cli_bad_setting_exits_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "join", "--room", "x"],
        env={"BRIDGE_VIDEO_FPS": "zero", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "BRIDGE_VIDEO_FPS" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [[], ["serve"], ["join"], ["emulator"], ["dev"]])
def test_cli_help(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", *command, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: room-bridge" in proc.stdout


def test_secrets_are_stripped_and_control_characters_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-a-file-123456\n")
    assert load_settings().openai_api_key == SecretStr("sk-from-a-file-123456")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-bro\x01ken-123456")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "OPENAI_API_KEY" in str(info.value) and "control characters" in str(info.value)
    assert "bro" not in str(info.value)


def test_redact_catches_escaped_forms() -> None:
    secret = "azurekey-abc\n"
    text = f"Illegal header value {secret.encode()!r} and {secret!r}"
    assert "azurekey-abc" not in redact(text, secret)


def test_every_misspelt_setting_is_named_at_once_with_its_closest_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_MODLE", "gpt-realtime-2.1")
    monkeypatch.setenv("BRIDGE_VOICEE", "coral")
    monkeypatch.setenv("BRIDGE_MAX_SESIONS", "3")
    toml = tmp_path / "bridge.toml"
    toml.write_text('agent_nmae = "Ava"\nvoice = "corall"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(toml)
    assert str(caught.value).splitlines() == [
        "unknown setting BRIDGE_MAX_SESIONS in the environment (did you mean BRIDGE_MAX_SESSIONS?)",
        "unknown setting BRIDGE_MODLE in the environment (did you mean BRIDGE_MODEL?)",
        "unknown setting BRIDGE_VOICEE in the environment (did you mean BRIDGE_VOICE?)",
        f"config file {toml}: unknown setting 'agent_nmae' (did you mean agent_name?)",
        "invalid setting voice (BRIDGE_VOICE): Input should be 'alloy', 'ash', 'ballad', "
        "'coral', 'echo', 'sage', 'shimmer', 'verse', 'marin' or 'cedar'; did you mean 'coral'?",
    ]


def test_a_short_livekit_secret_is_a_settings_error_not_a_jwt_warning() -> None:
    with pytest.raises(ValidationError, match="is 11 characters; LiveKit needs at least 32"):
        Settings(livekit_api_key="k", livekit_api_secret=SecretStr("devsecret12"))
    assert Settings(livekit_api_secret=SecretStr("s" * 32)).livekit_api_secret is not None


def test_a_missing_setting_points_at_a_near_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_SECRT", "s" * 40)
    with pytest.raises(ConfigError) as caught:
        Settings(livekit_api_key="k").require(
            "livekit_api_key", "livekit_api_secret", "openai_api_key"
        )
    assert str(caught.value).splitlines() == [
        "LIVEKIT_API_SECRET is not set (needed by this command) "
        "(LIVEKIT_API_SECRT is set: a misspelling?)",
        "OPENAI_API_KEY is not set (needed by this command)",
    ]
