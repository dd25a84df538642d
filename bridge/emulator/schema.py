"""Strict checks of events and sessions against the official ``openai`` types.

The openai models accept unknown fields (``extra="allow"``); the service does not ("Unknown
parameter: 'session.voice'"). So after validating we walk the model and reject any field the
schema does not define.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import pydantic

from bridge.billing.models import DEFAULT_MODEL, takes_reasoning

try:
    from openai.types.realtime import (
        RealtimeClientEvent,
        RealtimeServerEvent,
        RealtimeSessionCreateRequest,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the emulator validates events with the openai package: "
        "pip install 'realtime-room-bridge[emulator]'"
    ) from exc

CLIENT_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    Annotated[RealtimeClientEvent, pydantic.Field(discriminator="type")]
)
SERVER_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    Annotated[RealtimeServerEvent, pydantic.Field(discriminator="type")]
)
SESSION: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeSessionCreateRequest)

# Fields the real service adds beyond the published schema.
SERVER_EXTRAS = frozenset({"obfuscation"})


@dataclass(frozen=True)
class Problem:
    message: str
    param: str | None = None
    code: str = "invalid_value"


def unknown_fields(value: Any, path: str) -> list[str]:
    """Dotted paths of fields the schema does not define, anywhere inside ``value``."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        for key in value.__pydantic_extra__ or {}:
            found.append(f"{path}.{key}" if path else key)
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += unknown_fields(item, f"{path}[{i}]")
    return found


def _first_error(exc: pydantic.ValidationError, prefix: str = "") -> Problem:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # Drop discriminator tags from the path: ('session.update', 'session', 'audio') -> session.audio
    if loc and "." in loc[0] and not prefix:
        loc = loc[1:]
    param = ".".join(([prefix] if prefix else []) + loc) or None
    if err["type"] == "missing":
        return Problem(
            f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
        )
    if err["type"] == "union_tag_invalid":
        return Problem(f"Invalid value: '{err['input'].get('type')}'. Unknown event type.", "type")
    return Problem(f"Invalid value for '{param}': {err['msg']}.", param)


def check_client_event(data: Any) -> tuple[Any, Problem | None]:
    """(validated event, None) or (None, problem) for one decoded client message."""
    if not isinstance(data, dict) or "type" not in data:
        return None, Problem("The event is missing the required 'type' field.", "type")
    try:
        event = CLIENT_EVENTS.validate_python(data)
    except pydantic.ValidationError as exc:
        return None, _first_error(exc)
    extra = [p for p in unknown_fields(event, "") if p != "type"]
    if extra:
        return None, Problem(f"Unknown parameter: '{extra[0]}'.", extra[0], "unknown_parameter")
    return event, None


def check_session(data: Any, prefix: str = "session") -> Problem | None:
    """None when ``data`` is a valid GA session object with no unknown fields and nothing its
    model does not take (a request without ``model`` gets the service's default model)."""
    if not isinstance(data, dict):
        return Problem(f"Invalid type for '{prefix}': expected an object.", prefix)
    try:
        session = SESSION.validate_python(data)
    except pydantic.ValidationError as exc:
        return _first_error(exc, prefix)
    extra = unknown_fields(session, prefix)
    if extra:
        return Problem(f"Unknown parameter: '{extra[0]}'.", extra[0], "unknown_parameter")
    return check_model_options(data, str(data.get("model") or DEFAULT_MODEL), prefix)


# Session (and response) fields only reasoning models take (the types: "Only supported by
# reasoning Realtime models such as gpt-realtime-2").
REASONING_FIELDS = ("reasoning", "parallel_tool_calls")


def check_model_options(fields: dict[str, Any], model: str, prefix: str) -> Problem | None:
    """A reasoning-only field sent for a model without reasoning, refused as the API refuses a
    parameter a model does not support (its ``unsupported_parameter`` shape; the exact text
    for these two fields is UNVERIFIED). A model the table does not know is not judged."""
    if takes_reasoning(model) is not False:
        return None
    for name in REASONING_FIELDS:
        if name in fields:
            param = f"{prefix}.{name}"
            return Problem(
                f"Unsupported parameter: '{param}' is not supported with this model.",
                param,
                "unsupported_parameter",
            )
    return None


def check_server_event(data: dict[str, Any]) -> str | None:
    """None when ``data`` is a valid server event; else what is wrong (an emulator bug)."""
    try:
        event = SERVER_EVENTS.validate_python(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        return f"{data.get('type')}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    extra = [p for p in unknown_fields(event, "") if p.rsplit(".", 1)[-1] not in SERVER_EXTRAS]
    if extra:
        return f"{data.get('type')}: field {extra[0]} is not in the schema"
    return None
