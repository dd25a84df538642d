"""The price table: USD per 1M tokens by model and token kind, or per minute for a model billed
by duration (``prices`` in settings).

Each built-in row names where its figures were read and when (``SOURCES``): OpenAI's standard-tier
prices, mostly its model pages (``developers.openai.com/api/docs/models/<model>``) read on
2026-12-03; rows kept from the October 2025 pricing page say so. Azure OpenAI and other models
differ: override them in TOML (``[prices."gpt-realtime-2.1"]``) or as JSON in ``BRIDGE_PRICES``.
A kind left unset (``None``) is unknown, never zero: a response that uses it has an unknown cost.
Which row a model uses comes from the model table (``bridge.billing.models``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bridge.billing.models import model_info

# The newest read date of the table (docs: settings, models and prices, benchmarks).
PRICES_READ = "2026-12-03"

# Token kinds a price may name, in the order usage reports them.
KINDS = (
    "text_in",
    "text_in_cached",
    "audio_in",
    "audio_in_cached",
    "image_in",
    "image_in_cached",
    "text_out",
    "audio_out",
)

_Price = Field(default=None, ge=0, le=10_000)


class ModelPrice(BaseModel):
    """One model's prices in USD per 1M tokens; ``per_minute`` for models billed by duration
    (whisper-1, gpt-transcribe, gpt-live-transcribe, gpt-realtime-whisper)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_in: float | None = _Price
    text_in_cached: float | None = _Price
    text_out: float | None = _Price
    audio_in: float | None = _Price
    audio_in_cached: float | None = _Price
    audio_out: float | None = _Price
    image_in: float | None = _Price
    image_in_cached: float | None = _Price
    per_minute: float | None = _Price

    def per_token(self, kind: str) -> float | None:
        """USD per token of ``kind`` (one of ``KINDS``), None if unknown. Cached image tokens
        without a cached price are priced as uncached images."""
        price: float | None = getattr(self, kind)
        if price is None and kind == "image_in_cached":
            price = self.image_in
        return None if price is None else price / 1_000_000


def _p(**prices: float) -> dict[str, float]:
    return prices


_MODEL_PAGE = "https://developers.openai.com/api/docs/models/"
_PRICING_2025 = "https://openai.com/api/pricing"
_TODAY = "2026-12-03"
_REALTIME_FULL = {
    "text_in": 4.00,
    "text_in_cached": 0.40,
    "audio_in": 32.00,
    "audio_in_cached": 0.40,
}
_REALTIME_MINI = {
    "text_in": 0.60,
    "text_in_cached": 0.06,
    "text_out": 2.40,
    "audio_in": 10.00,
    "audio_in_cached": 0.30,
    "audio_out": 20.00,
    "image_in": 0.80,
    "image_in_cached": 0.08,
}

# Standard tier, USD per 1M tokens (``per_minute``: USD per minute of audio).
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-realtime-2.1": _p(
        **_REALTIME_FULL, text_out=24.00, audio_out=64.00, image_in=5.00, image_in_cached=0.50
    ),
    "gpt-realtime-2.1-mini": _p(**_REALTIME_MINI),
    "gpt-realtime-2": _p(
        **_REALTIME_FULL, text_out=24.00, audio_out=64.00, image_in=5.00, image_in_cached=0.50
    ),
    "gpt-realtime-1.5": _p(
        **_REALTIME_FULL, text_out=16.00, audio_out=64.00, image_in=5.00, image_in_cached=0.50
    ),
    "gpt-realtime": _p(
        **_REALTIME_FULL, text_out=16.00, audio_out=64.00, image_in=5.00, image_in_cached=0.50
    ),
    "gpt-realtime-mini": _p(**_REALTIME_MINI),
    "gpt-4o-realtime-preview": _p(
        text_in=5.00,
        text_in_cached=2.50,
        text_out=20.00,
        audio_in=40.00,
        audio_in_cached=2.50,
        audio_out=80.00,
    ),
    "gpt-4o-mini-realtime-preview": _p(
        text_in=0.60,
        text_in_cached=0.30,
        text_out=2.40,
        audio_in=10.00,
        audio_in_cached=0.30,
        audio_out=20.00,
    ),
    # Input transcription (billed on conversation.item.input_audio_transcription.completed).
    "gpt-4o-transcribe": _p(text_in=2.50, audio_in=6.00, text_out=10.00),
    "gpt-4o-mini-transcribe": _p(text_in=1.25, audio_in=3.00, text_out=5.00),
    "whisper-1": _p(per_minute=0.006),
    "gpt-transcribe": _p(per_minute=0.0045),
    "gpt-live-transcribe": _p(per_minute=0.017),
    "gpt-realtime-whisper": _p(per_minute=0.017),
}

# Where each row was read, and when (YYYY-MM or YYYY-MM-DD).
SOURCES: dict[str, tuple[str, str]] = {
    "gpt-realtime-2.1": (_MODEL_PAGE + "gpt-realtime-2.1", _TODAY),
    "gpt-realtime-2.1-mini": (_MODEL_PAGE + "gpt-realtime-2.1-mini", _TODAY),
    "gpt-realtime-2": (_MODEL_PAGE + "gpt-realtime-2", _TODAY),
    "gpt-realtime-1.5": (_MODEL_PAGE + "gpt-realtime-1.5", _TODAY),
    "gpt-realtime": (_PRICING_2025, "2025-10"),
    "gpt-realtime-mini": (_PRICING_2025, "2025-10"),
    "gpt-4o-realtime-preview": (_MODEL_PAGE + "gpt-4o-realtime-preview", _TODAY),
    "gpt-4o-mini-realtime-preview": (_MODEL_PAGE + "gpt-4o-mini-realtime-preview", _TODAY),
    "gpt-4o-transcribe": (_PRICING_2025, "2025-10"),
    "gpt-4o-mini-transcribe": (_PRICING_2025, "2025-10"),
    "whisper-1": (_PRICING_2025, "2025-10"),
    "gpt-transcribe": (_MODEL_PAGE + "gpt-transcribe", _TODAY),
    "gpt-live-transcribe": (_MODEL_PAGE + "gpt-live-transcribe", _TODAY),
    "gpt-realtime-whisper": (_MODEL_PAGE + "gpt-realtime-whisper", _TODAY),
}

_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def merge_prices(value: Any) -> Any:
    """Given prices go over the defaults, model by model and kind by kind, so adding one model
    (or changing one kind) keeps the rest of the table."""
    if not isinstance(value, dict):
        return value
    merged: dict[str, Any] = {name: dict(kinds) for name, kinds in DEFAULT_PRICES.items()}
    for name, given in value.items():
        kinds = given.model_dump(exclude_none=True) if isinstance(given, ModelPrice) else given
        if isinstance(kinds, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **kinds}
        else:
            merged[name] = kinds
    return merged


def price_of(prices: dict[str, ModelPrice], model: str) -> ModelPrice | None:
    """The price of ``model``: its own row when the table has one (an operator may price any
    name), else the row the model table names (a dated snapshot's family included), else the
    family's row by name."""
    found = prices.get(model)
    if found is None:
        info = model_info(model)
        if info is not None and info.price is not None:
            found = prices.get(info.price)
    if found is None:
        found = prices.get(_SNAPSHOT.sub("", model))
    return found
