"""The model table: what each Realtime and transcription model takes, holds and costs, and
whether OpenAI is retiring it.

One table for the whole package: the settings check ``reasoning_effort`` against it, the session
config sends ``reasoning``/``parallel_tool_calls`` only where a model takes them, the meeting
context and the emulator's truncation are bounded by its context window, the cost reads its
price row, and a deprecated model is reported at start and in ``/status``. It lives beside the
prices because every side may import ``bridge.billing``.

Sources, read 2026-12-03: openai-python 3.57 (``types/realtime/realtime_session_create_request_
param.py``: the model list and the deprecated ones, shutdown 2027-01-20; ``audio_transcription_
param.py``: the transcription models, shutdown 2027-02-26) and OpenAI's model pages
(``developers.openai.com/api/docs/models/<model>``: context window, max output, reasoning).
``replacement`` is our advice (the newest model of the same size); OpenAI's own deprecation row
was not readable. A dated snapshot (``gpt-realtime-2025-08-28``) falls back to its family unless
it has a row of its own. A model not in the table is unknown: nothing is assumed about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

DEFAULT_MODEL = "gpt-realtime-2.1"

# The service keeps this much of a 32k context to itself: the session docstring's "A 32k
# context model with 4,096 max output tokens can only include 28,224 tokens in the context".
RESERVED_TOKENS = 32_768 - 28_224 - 4_096
# When a model's window is unknown, bound by the smallest one in use.
FALLBACK_CONTEXT = 32_768
FALLBACK_MAX_OUTPUT = 4_096

Kind = Literal["realtime", "transcription"]
Billing = Literal["tokens", "duration"]
Status = Literal["current", "deprecated", "shut down", "unknown"]


@dataclass(frozen=True)
class ModelInfo:
    """One model. ``None`` is unknown, never zero."""

    name: str
    kind: Kind
    context_window: int | None = None
    max_output_tokens: int | None = None
    reasoning: bool | None = False  # takes ``reasoning``/``parallel_tool_calls``; None: unknown
    price: str | None = None  # its row in the price table (``bridge.billing.prices``)
    billed_by: Billing = "tokens"
    shutdown: date | None = None  # announced by OpenAI
    shut_down: bool = False  # already gone (OpenAI's model page says so; date not read)
    replacement: str | None = None

    def status(self, today: date) -> Status:
        if self.shut_down or (self.shutdown is not None and today >= self.shutdown):
            return "shut down"
        return "deprecated" if self.shutdown is not None else "current"


_REALTIME_2027 = date(2027, 1, 20)
_TRANSCRIBE_2027 = date(2027, 2, 26)


def _realtime(name: str, **kwargs: object) -> ModelInfo:
    return ModelInfo(name, "realtime", **kwargs)  # type: ignore[arg-type]


def _big(name: str, price: str) -> ModelInfo:
    return _realtime(
        name, context_window=128_000, max_output_tokens=32_000, reasoning=True, price=price
    )


def _small(name: str, price: str, **kwargs: object) -> ModelInfo:
    return _realtime(name, context_window=32_768, max_output_tokens=4_096, price=price, **kwargs)


def _transcribe(name: str, billed_by: Billing, **kwargs: object) -> ModelInfo:
    kwargs.setdefault("price", name)
    return ModelInfo(name, "transcription", billed_by=billed_by, **kwargs)  # type: ignore[arg-type]


_ROWS = [
    # The reasoning models (128k context, 32k output, ``reasoning.effort``).
    _big("gpt-realtime-2.1", "gpt-realtime-2.1"),
    _big("gpt-realtime-2.1-mini", "gpt-realtime-2.1-mini"),
    _big("gpt-realtime-2", "gpt-realtime-2"),
    # 32k context, no reasoning.
    _small("gpt-realtime-1.5", "gpt-realtime-1.5"),
    _small("gpt-realtime", "gpt-realtime", shutdown=_REALTIME_2027, replacement="gpt-realtime-2.1"),
    _small(
        "gpt-realtime-mini",
        "gpt-realtime-mini",
        shutdown=_REALTIME_2027,
        replacement="gpt-realtime-2.1-mini",
    ),
    # Listed by openai 3.57 without a deprecation, unlike the alias and the -2025-12-15 snapshot.
    _small("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
    _small(
        "gpt-4o-realtime-preview",
        "gpt-4o-realtime-preview",
        shut_down=True,
        replacement=DEFAULT_MODEL,
    ),
    _realtime(
        "gpt-4o-mini-realtime-preview",
        context_window=16_000,
        max_output_tokens=4_096,
        price="gpt-4o-mini-realtime-preview",
        shut_down=True,
        replacement="gpt-realtime-2.1-mini",
    ),
    # Audio models the Realtime model list names; their realtime capabilities were not read.
    _realtime("gpt-audio-1.5", reasoning=None),
    _realtime(
        "gpt-audio-mini",
        reasoning=None,
        shutdown=_REALTIME_2027,
        replacement="gpt-realtime-2.1-mini",
    ),
    _realtime("gpt-audio-mini-2025-10-06", reasoning=None),
    # Input transcription. The 2027-02-26 replacements OpenAI names are for transcription
    # sessions; which of them a Realtime conversation accepts over WebRTC was not found.
    _transcribe(
        "gpt-4o-transcribe", "tokens", shutdown=_TRANSCRIBE_2027, replacement="gpt-transcribe"
    ),
    _transcribe(
        "gpt-4o-mini-transcribe", "tokens", shutdown=_TRANSCRIBE_2027, replacement="gpt-transcribe"
    ),
    _transcribe(
        "gpt-4o-transcribe-diarize",
        "tokens",
        price=None,  # not read
        shutdown=_TRANSCRIBE_2027,
        replacement="gpt-transcribe",
    ),
    _transcribe("whisper-1", "duration", shutdown=_TRANSCRIBE_2027, replacement="gpt-transcribe"),
    _transcribe("gpt-transcribe", "duration"),
    _transcribe("gpt-live-transcribe", "duration"),
    _transcribe("gpt-realtime-whisper", "duration"),
]

MODELS: dict[str, ModelInfo] = {row.name: row for row in _ROWS}

_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def model_info(name: str) -> ModelInfo | None:
    """The row of ``name``, a dated snapshot's own row or else its family's; None if unknown."""
    found = MODELS.get(name)
    if found is None:
        family = MODELS.get(_SNAPSHOT.sub("", name))
        if family is not None:
            found = replace(family, name=name)
    return found


def input_limit(model: str, max_output_tokens: int | None = None) -> int:
    """Tokens of context before the service truncates: ``model``'s window less the service's
    reserve and the response's (``max_output_tokens``, else the model's largest response). A
    model the table does not know is bounded like the smallest window in use."""
    info = model_info(model)
    window = (info.context_window if info else None) or FALLBACK_CONTEXT
    largest = (info.max_output_tokens if info else None) or FALLBACK_MAX_OUTPUT
    return window - RESERVED_TOKENS - (max_output_tokens or largest)


def reasoning_models() -> list[str]:
    """The models that take ``reasoning`` and ``parallel_tool_calls``, newest first."""
    return [m.name for m in _ROWS if m.reasoning]


def takes_reasoning(name: str) -> bool | None:
    """True/False from the table; None for a model the table does not know."""
    info = model_info(name)
    return None if info is None else info.reasoning


def describe(name: str, today: date) -> dict[str, object]:
    """What ``/status`` shows of a model (and what the start-up warning says)."""
    info = model_info(name)
    if info is None:
        return {"name": name, "status": "unknown"}
    return {
        "name": name,
        "status": info.status(today),
        "shutdown": info.shutdown.isoformat() if info.shutdown else None,
        "replacement": info.replacement if info.status(today) != "current" else None,
        "context_window": info.context_window,
        "reasoning": info.reasoning,
    }


def deprecation_warning(setting: str, name: str, today: date) -> str | None:
    """One line when ``name`` (the value of ``setting``) is deprecated or shut down, else None."""
    info = model_info(name)
    if info is None:
        return None
    status = info.status(today)
    if status == "current":
        return None
    use = f"; use {info.replacement!r}" if info.replacement else ""
    if info.shutdown is None:
        return f"{setting} {name!r} is shut down by OpenAI{use}"
    when = info.shutdown.isoformat()
    if status == "shut down":
        return f"{setting} {name!r} was shut down by OpenAI on {when} (past){use}"
    days = (info.shutdown - today).days
    return f"{setting} {name!r} is deprecated: OpenAI shuts it down on {when} (in {days} days){use}"
