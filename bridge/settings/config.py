"""Settings: one object, read from the environment and an optional TOML file.

Every field has one name in three places:

* TOML key (``config/bridge.toml``): the field name, e.g. ``video_fps = 1``;
* environment: ``BRIDGE_<FIELD>`` in upper case (``BRIDGE_VIDEO_FPS``), except the five names the
  LiveKit and OpenAI ecosystems already share: ``LIVEKIT_URL``, ``LIVEKIT_API_KEY``,
  ``LIVEKIT_API_SECRET``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``;
* Python: ``settings.video_fps``.

The environment wins over the file, the file over the defaults. Lists accept JSON
(``'["a","b"]'``) or a comma-separated string in the environment. Secrets are ``SecretStr``:
their values never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bridge.billing.models import (
    DEFAULT_MODEL,
    input_limit,
    model_info,
    reasoning_models,
    takes_reasoning,
)
from bridge.billing.prices import ModelPrice, merge_prices
from bridge.settings.tools import McpServer, ToolSpec, check_secret, check_tools

DEFAULT_CONFIG_PATH = Path("config/bridge.toml")
# LiveKit's shortest accepted API secret (livekit-server: "secret is too short, should be at least
# 32 characters"; HS256 keys under 32 bytes are refused by RFC 7518).
MIN_LIVEKIT_SECRET = 32

Voice = Literal[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"
]
Audience = Literal["room", "private"]
Mode = Literal["per_participant", "shared"]
ResponsePolicy = Literal["auto", "listen", "addressed"]
TurnDetection = Literal["server_vad", "semantic_vad", "none"]
ReasoningEffort = Literal["minimal", "low", "medium", "high", "xhigh"]
BudgetAction = Literal["listen", "leave"]
# Settings that are TOML tables ([prices."gpt-realtime"]) rather than keys.
TABLE_SETTINGS = frozenset(
    {"prices", "prompt_variables", "prompt_variable_sets", "tracing_metadata"}
)
# Rough characters per text token (the meeting context's bound in tokens).
CHARS_PER_TOKEN = 4


class ConfigError(Exception):
    """A setting is missing or invalid. ``str(exc)`` is one line per mistake, each naming the
    setting."""


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    if field in _SHARED_ENV_NAMES:
        return field.upper()
    return f"BRIDGE_{field.upper()}"


_SHARED_ENV_NAMES = frozenset(
    {"livekit_url", "livekit_api_key", "livekit_api_secret", "openai_api_key", "openai_base_url"}
)


def _split_list(value: Any) -> Any:
    """Lists from the environment: JSON arrays or comma-separated strings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc.msg}") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]


class SessionOverrides(BaseModel):
    """What a room (metadata) or a dispatch request may change for its sessions.

    The same names and constraints as the matching settings; anything else is rejected.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    instructions: str | None = Field(default=None, max_length=16_000)
    voice: Voice | None = None
    response_policy: ResponsePolicy | None = None
    audience: Audience | None = None
    agent_name: str | None = Field(default=None, min_length=1, max_length=64)
    video_enabled: bool | None = None
    transcription_language: str | None = Field(default=None, max_length=16)
    # Names of configured tools this room's sessions get (a subset; metadata never defines one).
    tools: list[str] | None = Field(default=None, max_length=128)
    # May only lower the operator's budget (see apply_overrides).
    max_room_cost_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    mode: Mode | None = None
    meeting_context: bool | None = None
    meeting_context_max_chars: int | None = Field(default=None, ge=0, le=200_000)
    # The name of one of the operator's ``prompt_variable_sets``.
    prompt_variable_set: str | None = Field(default=None, min_length=1, max_length=64)


class Settings(BaseSettings):
    """All configuration of the bridge. Every field is in the settings table (docs/settings.md)."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_",
        extra="forbid",
        frozen=True,
        validate_default=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    # ---- LiveKit -------------------------------------------------------------------------
    livekit_url: str = Field(
        default="ws://127.0.0.1:7880",
        validation_alias=AliasChoices("LIVEKIT_URL", "livekit_url"),
        description="LiveKit server URL (ws:// or wss://; http(s):// is accepted too).",
    )
    livekit_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LIVEKIT_API_KEY", "livekit_api_key"),
        description="LiveKit API key (needed by join, serve, dev).",
    )
    livekit_api_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LIVEKIT_API_SECRET", "livekit_api_secret"),
        description="LiveKit API secret (secret).",
    )

    # ---- Model endpoint ----------------------------------------------------------------------
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"),
        description="Realtime API key (secret). Without it, `dev` runs on the emulator.",
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"),
        description="Realtime API base URL; `http://127.0.0.1:PORT/v1` for the emulator.",
    )
    auth_header: str = Field(
        default="Authorization",
        min_length=1,
        description="HTTP header carrying the key (Azure OpenAI: `api-key`).",
    )
    auth_scheme: str = Field(
        default="Bearer",
        description="Scheme before the key in that header; empty for none (Azure: empty).",
    )
    model: str = Field(
        default=DEFAULT_MODEL,
        min_length=1,
        description=(
            "Realtime model (docs, Models and prices: each model's status, context and price; "
            "a deprecated one still works and is reported at start and in `/status`)."
        ),
    )
    ice_servers: StrList = Field(
        default_factory=list,
        description=(
            "ICE servers for the model call (`turn:`/`turns:` URLs). Default none: the service "
            "answers with host candidates. A TURN server over TCP/TLS is the way through "
            "networks that block UDP."
        ),
    )
    ice_username: str | None = Field(default=None, description="TURN username.")
    ice_credential: SecretStr | None = Field(default=None, description="TURN credential.")
    ice_host_addresses: StrList = Field(
        default_factory=list,
        description=(
            "Local addresses for aiortc host candidates; empty = every interface but loopback "
            "(aioice's default). Tests set `127.0.0.1` so no packet leaves the machine."
        ),
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds for the HTTP POST of the offer."
    )
    ice_timeout: float = Field(
        default=15.0, gt=0, le=300, description="Seconds for ICE + DTLS to connect."
    )
    datachannel_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds for the `oai-events` channel to open."
    )
    first_event_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds to wait for `session.created`."
    )

    # ---- Session sent to the model ---------------------------------------------------------
    instructions: str = Field(
        default=(
            "You are a helpful voice assistant taking part in a live call. Answer briefly and "
            "naturally, in the language the person speaks."
        ),
        max_length=16_000,
        description="System instructions for every session.",
    )
    voice: Voice = Field(default="alloy", description="Model voice.")
    transcription_model: str = Field(
        default="gpt-transcribe",
        description=(
            "Model for the humans' transcripts (billed per minute); empty turns user transcripts "
            "off."
        ),
    )
    transcription_language: str | None = Field(
        default=None, max_length=16, description="ISO-639-1 hint for transcription."
    )
    turn_detection: TurnDetection = Field(
        default="server_vad", description="`server_vad`, `semantic_vad` or `none`."
    )
    vad_threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="server_vad threshold.")
    vad_prefix_padding_ms: int = Field(default=300, ge=0, le=5000, description="server_vad.")
    vad_silence_duration_ms: int = Field(
        default=500, ge=0, le=10_000, description="server_vad end-of-turn silence."
    )
    noise_reduction: Literal["near_field", "far_field", "none"] = Field(
        default="none", description="Input noise reduction."
    )
    max_output_tokens: int | Literal["inf"] = Field(
        default="inf", description="Cap on tokens per response (1..4096 or `inf`)."
    )
    retention_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description=(
            "Session `truncation`: when the context fills, keep this fraction of it "
            "(`retention_ratio`), so the cached prefix stays stable; unset = `auto`."
        ),
    )
    reasoning_effort: ReasoningEffort | None = Field(
        default=None,
        description=(
            "`minimal`, `low`, `medium`, `high` or `xhigh`: how much a reasoning model "
            "(gpt-realtime-2 and later) thinks before it answers; more is slower. Unset = the "
            "model's default. An error with a model without reasoning."
        ),
    )
    parallel_tool_calls: bool | None = Field(
        default=None,
        description=(
            "Whether a reasoning model may call several tools at once. Unset = the service's "
            "default. An error with a model without reasoning."
        ),
    )
    prompt_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            "A prompt stored at OpenAI (`pmpt_...`) sent as the session's `prompt`. OpenAI "
            "deprecated stored prompts (its guide: `v1/prompts` shut down 2026-11-30)."
        ),
    )
    prompt_version: str | None = Field(
        default=None, min_length=1, max_length=64, description="Version of `prompt_id`."
    )
    prompt_variables: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Values of the stored prompt's variables (a TOML table; JSON in the environment)."
        ),
    )
    prompt_variable_sets: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description=(
            "Named sets of prompt variables (`[prompt_variable_sets.<name>]` tables): a room's "
            "metadata may pick one by name (`prompt_variable_set`), merged over "
            "`prompt_variables`; it can set no value itself."
        ),
    )
    tracing: bool = Field(
        default=False,
        description=(
            "OpenAI-side traces of each call (its Traces dashboard): workflow "
            "`tracing_workflow_name`, group id = the room's name, `tracing_metadata`."
        ),
    )
    tracing_workflow_name: str = Field(
        default="realtime-room-bridge",
        min_length=1,
        max_length=256,
        description="Workflow name of the traces.",
    )
    tracing_metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Metadata attached to the traces (a TOML table; JSON in the environment).",
    )

    # ---- Room behaviour ----------------------------------------------------------------------
    agent_name: str = Field(
        default="assistant",
        min_length=1,
        max_length=64,
        description="`lk.agent.name`; also the name people use to address it.",
    )
    agent_identity_prefix: str = Field(
        default="room-bridge-",
        min_length=1,
        max_length=64,
        description="Agent identity = prefix + room name; participants with it are never bridged.",
    )
    mode: Mode = Field(
        default="per_participant",
        description=(
            "`per_participant`: one model call per human; `shared`: one call for the whole "
            "room, every microphone mixed into it (docs, Meetings)."
        ),
    )
    meeting_context: bool = Field(
        default=True,
        description=(
            "Every call knows the meeting: what others said (labelled), the agent's answers to "
            "them, joins and leaves. Always off with `audience = private`."
        ),
    )
    meeting_context_max_chars: int = Field(
        default=6000,
        ge=0,
        le=200_000,
        description=(
            "Per call: text we add (meeting lines, carried-over history) kept under this many "
            "characters; the oldest are deleted from the call past it."
        ),
    )
    audience: Audience = Field(
        default="room", description="`room`: all hear the answer; `private`: only that human."
    )
    response_policy: ResponsePolicy = Field(
        default="auto", description="`auto`, `listen` (transcribe only) or `addressed`."
    )
    address_names: StrList = Field(
        default_factory=list,
        description="Names that address the agent under `addressed` (default: agent_name).",
    )
    video_enabled: bool = Field(default=True, description="Relay the human's video.")
    video_source: Literal["camera", "screen_share"] = Field(
        default="camera", description="Which of the human's video tracks to relay."
    )
    video_fps: float = Field(default=1.0, gt=0, le=30, description="Max frames/s to the model.")
    video_max_width: int = Field(default=1280, ge=16, le=4096, description="Max video width.")
    video_max_height: int = Field(default=720, ge=16, le=4096, description="Max video height.")
    idle_timeout: float = Field(
        default=900.0, gt=0, description="End a session after this many seconds without speech."
    )
    session_rollover_s: float = Field(
        default=3300.0,
        gt=0,
        le=86_400,
        description="Call age after which the next quiet moment switches the session to a new "
        "call (conversation carried over, old one hung up), before the service's 60-minute "
        "limit cuts it.",
    )
    empty_room_grace: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Seconds the agent stays after the last human left (they may come back).",
    )
    retry_attempts: int = Field(
        default=5, ge=0, le=100, description="Retries of a failed call (retryable errors only)."
    )
    retry_backoff_initial: float = Field(default=0.5, gt=0, le=60, description="First backoff.")
    retry_backoff_max: float = Field(default=15.0, gt=0, le=600, description="Backoff ceiling.")
    audio_queue_ms: int = Field(
        default=400, ge=20, le=5000, description="Model audio buffered toward the room."
    )
    uplink_backlog_s: float = Field(
        default=8.0,
        ge=0,
        le=60,
        description=(
            "What a human says while no model call is up (a dropped call being replaced, an idle "
            "session waking up): the last this many seconds, from where speech started, go to the "
            "next call. 0: dropped."
        ),
    )

    # ---- Tools -------------------------------------------------------------------------------
    tools: list[ToolSpec] = Field(
        default_factory=list,
        description="Functions the model may call (`[[tools]]` tables; env: a JSON list). "
        "See docs, Tools.",
    )
    mcp_servers: list[McpServer] = Field(
        default_factory=list,
        description="MCP servers the model service calls itself (`[[mcp_servers]]` tables).",
    )
    tool_choice: str = Field(
        default="auto", description="`auto`, `none`, `required` or the name of one tool."
    )
    tool_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds a tool may take (per tool: `timeout`)."
    )
    tool_output_max_bytes: int = Field(
        default=16_384, ge=256, le=1_048_576, description="Largest tool answer given to the model."
    )
    tools_secret: SecretStr | None = Field(
        default=None,
        description="`whsec_<base64>` key signing HTTP tool calls (Standard Webhooks; secret).",
    )

    # ---- Cost ------------------------------------------------------------------------------------
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description=(
            'USD per 1M tokens by model (`[prices."gpt-realtime"]` tables in TOML, JSON in '
            "the environment); merged over the built-in table (OpenAI, October 2025)."
        ),
    )
    max_room_cost_usd: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Budget per room in USD (model + transcription); room metadata may lower it.",
    )
    budget_action: BudgetAction = Field(
        default="listen",
        description="When a room passes its budget: `listen` (no more answers) or `leave`.",
    )

    # ---- Dispatch service --------------------------------------------------------------------
    server_host: str = Field(default="127.0.0.1", description="`serve` bind address.")
    server_port: int = Field(default=8080, ge=1, le=65535, description="`serve` port.")
    dispatch_token: SecretStr | None = Field(
        default=None, description="Bearer token for POST/DELETE /dispatch (secret)."
    )
    rooms: Literal["all", "pattern", "metadata"] = Field(
        default="all",
        description="Which rooms get the AI: all, names matching `room_patterns`, or metadata.",
    )
    room_patterns: StrList = Field(
        default_factory=lambda: ["*"], description="Room-name globs for `rooms = pattern`."
    )
    metadata_key: str = Field(
        default="ai", min_length=1, description="Room metadata key that enables the AI."
    )
    max_sessions: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Live sessions per `serve` instance (split over its workers) or `join`.",
    )
    workers: int = Field(
        default=0, ge=0, le=256, description="Room-worker processes; 0 = number of cores."
    )
    reconcile_interval: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds between reconcile passes."
    )
    drain_timeout: float = Field(
        default=3600.0, ge=0, description="On SIGTERM, seconds live sessions may finish."
    )
    webhook_max_bytes: int = Field(
        default=65_536, ge=1024, le=10_485_760, description="Largest webhook body accepted."
    )
    agent_dispatch: bool = Field(
        default=True,
        description=(
            "`serve` registers with LiveKit as an agent worker named `agent_name`, so token and "
            "API dispatches (`RoomConfiguration.agents`, `CreateDispatch`) bring the AI."
        ),
    )
    agent_dispatch_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description=(
            "Seconds for the agent-worker WebSocket to connect and register, and for the server-"
            "API checks it makes."
        ),
    )
    agent_reconnect_max: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Ceiling of the agent worker's reconnect backoff (with jitter), seconds.",
    )

    # ---- Logging -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="`json` for one JSON object per line (Kubernetes)."
    )

    # ---- Traces ------------------------------------------------------------------------------
    trace_content: bool = Field(
        default=False,
        description=(
            "Put what people said and typed (transcripts, chat text) into the OpenTelemetry "
            "spans of turns. Off: spans carry timings, ids, models, usage and cost only. Traces "
            "themselves are on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (docs, Traces)."
        ),
    )

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object: {exc.msg}") from None
        return merge_prices(value)

    @field_validator(
        "ice_servers", "ice_host_addresses", "address_names", "room_patterns", mode="before"
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator(
        "livekit_api_secret",
        "openai_api_key",
        "ice_credential",
        "dispatch_token",
        "tools_secret",
        mode="after",
    )
    @classmethod
    def _clean_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Secrets mounted from files often end in a newline; anything else unprintable is a
        # mistake that would only surface as an HTTP error (never echo the value).
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise ValueError("contains control characters")
        return SecretStr(text)

    @field_validator("livekit_api_secret", mode="after")
    @classmethod
    def _livekit_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # livekit-server warns about shorter secrets and the JWT library refuses to sign quietly
        # with one (RFC 7518: an HS256 key of at least 32 bytes); say so here, once, by length.
        length = len(value.get_secret_value().encode()) if value is not None else 0
        if value is not None and 0 < length < MIN_LIVEKIT_SECRET:
            raise ValueError(
                f"is {length} characters; LiveKit needs at least {MIN_LIVEKIT_SECRET} (use the "
                "secret paired with LIVEKIT_API_KEY in the server's `keys`)"
            )
        return value

    @field_validator("tools_secret", mode="after")
    @classmethod
    def _tools_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_secret(value.get_secret_value())
        return value

    @field_validator("livekit_api_key")
    @classmethod
    def _clean_key(cls, value: str | None) -> str | None:
        return value.strip() if value is not None else None

    @field_validator("livekit_url")
    @classmethod
    def _livekit_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError("must start with ws://, wss://, http:// or https://")
        return value.rstrip("/")

    @field_validator("openai_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("ice_servers")
    @classmethod
    def _ice_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:/turn:/turns: URL")
        return value

    @field_validator("reasoning_effort", "parallel_tool_calls")
    @classmethod
    def _reasoning_model(cls, value: Any, info: ValidationInfo) -> Any:
        model = info.data.get("model")
        if value is not None and model and takes_reasoning(model) is False:
            raise ValueError(
                f"model {model!r} has no reasoning; {info.field_name} is taken by "
                + ", ".join(reasoning_models())
            )
        return value

    @field_validator("meeting_context_max_chars")
    @classmethod
    def _meeting_fits(cls, value: int, info: ValidationInfo) -> int:
        model = info.data.get("model")
        known = model_info(model) if isinstance(model, str) else None
        if known is None or known.context_window is None:
            return value
        assert isinstance(model, str)
        # Half the context at most: the conversation itself needs the rest.
        most = input_limit(model) // 2 * CHARS_PER_TOKEN
        if value > most:
            raise ValueError(
                f"{value} characters (~{value // CHARS_PER_TOKEN} tokens) is more than half of "
                f"model {model!r}'s context: at most {most}"
            )
        return value

    @field_validator("prompt_variables", "prompt_variable_sets", "tracing_metadata", mode="before")
    @classmethod
    def _json_table(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object: {exc.msg}") from None
        return value

    @field_validator("max_output_tokens")
    @classmethod
    def _max_tokens(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 4096:
            raise ValueError("must be between 1 and 4096, or 'inf'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.retry_backoff_initial > self.retry_backoff_max:
            raise ValueError("retry_backoff_initial must not exceed retry_backoff_max")
        if self.mode == "shared" and self.audience == "private":
            raise ValueError(
                "mode 'shared' needs audience 'room': one call answers the whole room on one "
                "track, so its answers cannot be private"
            )
        if self.response_policy == "addressed" and not self.transcription_model:
            raise ValueError(
                "response_policy 'addressed' needs transcription_model: the agent is addressed "
                "by name in the transcript"
            )
        problems = check_tools(self.tools, self.mcp_servers, self.tools_secret is not None)
        if self.tool_choice not in ("auto", "none", "required") and self.tool_choice not in {
            t.name for t in self.tools
        }:
            problems.append(f"tool_choice {self.tool_choice!r} is not auto/none/required or a tool")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the TOML file (see load_settings), so env overrides it.
        return env_settings, init_settings

    # ---- helpers -------------------------------------------------------------------------------
    def require(self, *fields: str) -> None:
        """Raise ConfigError naming every one of ``fields`` that is unset (and a variable in the
        environment that looks like a misspelling of it)."""
        missing = []
        for field in fields:
            value = getattr(self, field)
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
                name = env_name(field)
                near = difflib.get_close_matches(name, [n for n in os.environ if n != name], 1, 0.8)
                hint = f" ({near[0]} is set: a misspelling?)" if near else ""
                missing.append(f"{name} is not set (needed by this command){hint}")
        if missing:
            raise ConfigError("\n".join(missing))

    @property
    def livekit_http_url(self) -> str:
        """The server API URL (http/https) for the same LiveKit server."""
        url = self.livekit_url
        if url.startswith("ws://"):
            return "http://" + url.removeprefix("ws://")
        if url.startswith("wss://"):
            return "https://" + url.removeprefix("wss://")
        return url

    @property
    def addressed_by(self) -> list[str]:
        return self.address_names or [self.agent_name]

    @property
    def meeting_enabled(self) -> bool:
        """Meeting context is on (never under a private audience)."""
        return self.meeting_context and self.audience == "room"


def _describe(error: Any) -> str:
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    key = loc[0] if loc else "settings"
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"][1:]
    )
    field = (
        key.lower().removeprefix("bridge_")
        if key.lower() not in Settings.model_fields
        else key.lower()
    )
    if error["type"] == "extra_forbidden":
        fields = list(Settings.model_fields)
        return f"unknown setting {'.'.join(loc)!r}{_closest(key.lower(), fields)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    if error["type"] == "literal_error" and isinstance(given, str):
        # Not a secret (those are free text): the choice it most likely misspells.
        choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        near = closest(given, choices)
        message += f"; did you mean {near!r}?" if near else ""
    if field in Settings.model_fields:
        return f"invalid setting {field}{where} ({env_name(field)}): {message}"
    return "\n".join(f"invalid settings: {line}" for line in message.splitlines())


def load_settings(
    config_path: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Read settings from the environment, the TOML file and ``overrides`` (highest).

    ``config_path`` None means ``config/bridge.toml`` when it exists. Raises ConfigError with one
    line per mistake, all of them at once.
    """
    explicit = config_path is not None
    path = config_path if config_path is not None else DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    if path.exists():
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
    elif explicit:
        raise ConfigError(f"config file {path} does not exist")
    problems = _unknown_settings(data, path)
    for key, value in data.items():
        if isinstance(value, dict) and key not in TABLE_SETTINGS:
            problems.append(f"config file {path}: [{key}] tables are not settings; use keys")
    known = {
        k: v
        for k, v in data.items()
        if (k in Settings.model_fields or k in _ALIASES)
        and (k in TABLE_SETTINGS or not isinstance(v, dict))
    }
    try:
        settings = Settings(**known)
        if overrides:
            # Command-line flags beat the environment: validate them over what was read.
            settings = Settings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as exc:
        problems += [_describe(err) for err in exc.errors()]
    except SettingsError as exc:  # a list or table setting from the environment is not JSON
        problems.append(f"{exc}: lists and tables from the environment are JSON")
    if problems:
        # Every mistake at once, one line each: fixing them one run at a time is slow.
        raise ConfigError("\n".join(dict.fromkeys(problems)))
    return settings


_ALIASES = frozenset(name.upper() for name in _SHARED_ENV_NAMES)


def _edits(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) from ``a`` to ``b``."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            best = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, rows[-2][j - 2] + 1)
            row.append(best)
        rows.append(row)
    return rows[-1][-1]


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate ``name`` most likely misspells (a swap of two letters beats a dropped
    one: ``MODLE`` is ``MODEL``, not ``MODE``), or None."""
    near = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    ranked = sorted(near, key=lambda c: (sorted(c) != sorted(name), _edits(name, c)))
    return ranked[0] if ranked else None


def _closest(name: str, candidates: list[str]) -> str:
    near = closest(name, candidates)
    return f" (did you mean {near}?)" if near else ""


def _unknown_settings(data: dict[str, Any], path: Path) -> list[str]:
    """One line per setting name that is not one, with the closest real one: ``BRIDGE_*``
    variables in the environment and keys of the TOML file."""
    fields = list(Settings.model_fields)
    env_names = [env_name(f) for f in fields]
    lines = [
        f"unknown setting {name} in the environment{_closest(name.upper(), env_names)}"
        for name in sorted(os.environ)
        if name.upper().startswith("BRIDGE_")
        and name[len("BRIDGE_") :].lower() not in Settings.model_fields
    ]
    lines += [
        f"config file {path}: unknown setting {key!r}{_closest(key.lower(), fields)}"
        for key, value in data.items()
        if key not in Settings.model_fields and key not in _ALIASES and not isinstance(value, dict)
    ]
    return lines


def apply_overrides(settings: Settings, overrides: SessionOverrides | None) -> Settings:
    """A copy of ``settings`` with a room's overrides applied (already validated)."""
    if overrides is None:
        return settings
    changes = overrides.model_dump(exclude_none=True)
    if not changes:
        return settings
    if "tools" in changes:
        # A room may only narrow the configured tools, never name (or define) another one.
        wanted = changes.pop("tools")
        known = {tool.name: tool for tool in settings.tools}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise ValueError(f"tools: {unknown[0]!r} is not a configured tool")
        changes["tools"] = [known[name] for name in dict.fromkeys(wanted)]
        if settings.tool_choice not in ("auto", "none", "required") and (
            settings.tool_choice not in wanted
        ):
            changes["tool_choice"] = "auto"
    chosen = changes.pop("prompt_variable_set", None)
    if chosen is not None:
        # A room picks one of the operator's sets by name; it never gives a value itself.
        if chosen not in settings.prompt_variable_sets:
            raise ValueError(f"prompt_variable_set: {chosen!r} is not a configured set")
        changes["prompt_variables"] = {
            **settings.prompt_variables,
            **settings.prompt_variable_sets[chosen],
        }
    budget = changes.get("max_room_cost_usd")
    if budget is not None and settings.max_room_cost_usd is not None:
        # A room may spend less than the operator allows, never more.
        changes["max_room_cost_usd"] = min(budget, settings.max_room_cost_usd)
    # Validated again as a whole: an override can make settings inconsistent.
    return Settings.model_validate({**settings.model_dump(), **changes})
