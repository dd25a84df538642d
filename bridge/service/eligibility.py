"""Which rooms get the AI, and with which session overrides.

Policy (``rooms`` setting):

* ``all``: every room;
* ``pattern``: rooms whose name matches one of ``room_patterns`` (shell globs, ``support-*``);
* ``metadata``: rooms whose metadata (JSON) has the ``metadata_key`` (default ``ai``) set to
  ``true`` or to an object of session overrides, e.g. ``{"ai": {"voice": "coral",
  "response_policy": "addressed", "instructions": "..."}}``.

Under every policy, a room whose metadata carries the key gets those overrides (validated
against the settings schema), and ``{"ai": false}`` opts a room out. Invalid metadata skips the
room with one clear line; it never raises.

LiveKit agent dispatches (bridge/service/agent_worker.py) carry the same override object as their
own metadata (``{"voice": "coral"}``), validated the same way by ``dispatch_overrides``.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass

from pydantic import ValidationError

from bridge.logs import one_line
from bridge.settings.config import SessionOverrides, Settings, apply_overrides


@dataclass(frozen=True)
class Decision:
    eligible: bool
    reason: str
    overrides: SessionOverrides | None = None


def decide(settings: Settings, room: str, metadata: str) -> Decision:
    flag: object = None
    if metadata.strip():
        try:
            parsed = json.loads(metadata)
        except (ValueError, RecursionError) as exc:  # not JSON, absurd numbers, deep nesting
            if settings.rooms == "metadata":
                detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                return Decision(False, f"room metadata is not usable JSON ({detail})")
            parsed = None  # metadata used by the application for something else
        if isinstance(parsed, dict):
            flag = parsed.get(settings.metadata_key)

    overrides: SessionOverrides | None = None
    if isinstance(flag, dict):
        checked = _validated(settings, flag)
        if isinstance(checked, str):
            where = checked if not checked.startswith(":") else settings.metadata_key + checked
            return Decision(
                False, one_line(f"invalid '{settings.metadata_key}' metadata: {where}", 300)
            )
        overrides = checked
    elif flag is not None and not isinstance(flag, bool):
        return Decision(
            False, f"invalid '{settings.metadata_key}' metadata: expected true, false or an object"
        )

    if flag is False:
        return Decision(False, f"room metadata sets '{settings.metadata_key}' to false")
    if settings.rooms == "metadata":
        if flag is None:
            return Decision(False, f"room metadata has no '{settings.metadata_key}' key")
        return Decision(True, "room metadata asks for the AI", overrides)
    if settings.rooms == "pattern":
        if not any(fnmatch.fnmatchcase(room, pattern) for pattern in settings.room_patterns):
            return Decision(False, "room name matches no room_patterns")
        return Decision(True, "room name matches room_patterns", overrides)
    return Decision(True, "all rooms get the AI", overrides)


# A dispatch's metadata is read only up to this size (LiveKit does not limit it).
MAX_DISPATCH_METADATA = 65_536


def _validated(settings: Settings, given: dict[str, object]) -> SessionOverrides | str:
    """The overrides, or ``"where: what is wrong"``."""
    try:
        overrides = SessionOverrides.model_validate(given)
        # The overrides must make a consistent whole with the settings (and may only select
        # among the configured tools).
        apply_overrides(settings, overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}"
    except ValueError as exc:
        return str(exc)
    return overrides


def dispatch_overrides(settings: Settings, metadata: str) -> tuple[SessionOverrides | None, str]:
    """A LiveKit dispatch's metadata as session overrides: ``(overrides, "")``, or ``(None, why)``
    when it is present but unusable (then it is ignored: the dispatch still stands)."""
    if not metadata.strip():
        return None, ""
    if len(metadata) > MAX_DISPATCH_METADATA:
        return None, f"over {MAX_DISPATCH_METADATA} characters"
    try:
        parsed = json.loads(metadata)
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        return None, f"not usable JSON ({detail})"
    if not isinstance(parsed, dict):
        return None, "not a JSON object of session overrides"
    checked = _validated(settings, parsed)
    if isinstance(checked, str):
        return None, one_line(checked, 300)
    return checked, ""


def merge_overrides(
    base: SessionOverrides | None, top: SessionOverrides | None
) -> SessionOverrides | None:
    """``top`` over ``base`` (a dispatch's own metadata over the room's)."""
    if base is None or top is None:
        return top if base is None else base
    return SessionOverrides.model_validate(
        {**base.model_dump(exclude_none=True), **top.model_dump(exclude_none=True)}
    )
