"""What the emulator's fake model does, and the faults it injects. Set at start
(``room-bridge emulator --options JSON``) and changed at run time
(``PATCH /v1/_emulator/options``, same JSON)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class ToolCallScript(BaseModel):
    """When a user turn contains ``when``, the model answers with a call of ``name``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str = Field(min_length=1)
    name: str = Field(min_length=1)
    # An object (sent as its JSON) or a string sent as it is, so tests can send invalid JSON.
    arguments: str = "{}"

    @field_validator("arguments", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return value if isinstance(value, str) else json.dumps(value)


class EmulatorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_key: SecretStr = Field(default=SecretStr("sk-emulator"), exclude=True)

    # ---- the fake model ----
    voice_mode: Literal["tone", "echo", "loopback"] = Field(
        default="tone",
        description="Answer audio: a tone sequence, or the user's own utterance played back; "
        "`loopback` (latency measurements): every received audio packet is sent straight back, "
        "with no VAD and no turns (fixed per call when it is created).",
    )
    tone_hz: float = Field(default=660.0, gt=20, lt=20_000, description="Tone of `tone` answers.")
    chars_per_second: float = Field(
        default=15.0, gt=0, description="Speaking rate: answer audio lasts len(text)/rate."
    )
    generation_speed: float = Field(
        default=2.0,
        gt=0,
        description="Events run this many times faster than the audio plays (response.done "
        "then comes before output_audio_buffer.stopped, as with the real service).",
    )
    answer_delay_ms: int = Field(
        default=200, ge=0, description="Model 'thinking' time before response.created."
    )
    answers: list[str] = Field(
        default_factory=list,
        description="Scripted answers used in turn; empty: 'Answer N. I heard: <input>.'",
    )
    transcripts: list[str] = Field(
        default_factory=list,
        description="Scripted user transcripts used in turn; empty: 'utterance N, X.XX s'.",
    )
    min_speech_ms: int = Field(default=60, ge=20, description="Speech needed to start a turn.")
    transcription_delay_ms: int = Field(
        default=50, ge=0, description="Delay of the user transcript after the commit."
    )
    tool_calls: list[ToolCallScript] = Field(
        default_factory=list,
        description="`[{when, name, arguments}]`: a user turn containing `when` is answered with "
        "that function call (every match, in one response; only tools the session declares).",
    )
    answer_shape: Literal["published", "full"] = Field(
        default="published",
        description="`published`: ICE credentials only in the first bundled section, like the "
        "answer in OpenAI's API specification; `full`: in every section.",
    )

    # ---- faults ----
    fail_calls_status: int | None = Field(
        default=None, description="Answer POST /calls with this status (429, 500, ...)..."
    )
    fail_calls_count: int = Field(default=0, ge=0, description="...this many times.")
    calls_delay_ms: int = Field(
        default=0, ge=0, le=60_000, description="Answer each POST /calls this much later (slow)."
    )
    drop_after_s: float | None = Field(
        default=None, gt=0, description="Drop each call's peer connection after T seconds."
    )
    max_session_s: float = Field(
        default=3600.0, gt=0, description="Session limit; then error session_expired and close."
    )
