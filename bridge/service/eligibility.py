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
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass

from pydantic import ValidationError

from bridge.config import SessionOverrides, Settings, apply_overrides


@dataclass(frozen=True)
class Decision:
    eligible: bool
    reason: str
    overrides: SessionOverrides | None = None


def decide(settings: Settings, room: str, metadata: str) -> Decision:  # noqa: PLR0912
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
        try:
            overrides = SessionOverrides.model_validate(flag)
            # The room's overrides must make a consistent whole with the settings (and may
            # only select among the configured tools).
            apply_overrides(settings, overrides)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or settings.metadata_key
            message = str(err["msg"]).removeprefix("Value error, ")
            return Decision(
                False, f"invalid '{settings.metadata_key}' metadata: {where}: {message}"
            )
        except ValueError as exc:
            return Decision(False, f"invalid '{settings.metadata_key}' metadata: {exc}")
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
