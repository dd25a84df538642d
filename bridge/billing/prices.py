"""The price table: USD per 1M tokens by model and token kind (``prices`` in settings).

Defaults are OpenAI's published standard-tier prices as listed on openai.com/api/pricing in
October 2025 (gpt-realtime GA of 2025-08-28, gpt-realtime-mini of 2025-10-06, the gpt-4o
transcribe models); Azure OpenAI and newer models differ: override them in TOML
(``[prices."gpt-realtime"]``) or as JSON in ``BRIDGE_PRICES``. A kind left unset (``None``) is
unknown, never zero: a response that uses it has an unknown cost.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PRICES_READ = "2025-10"

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
    (whisper-1 transcription)."""

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


# Read from openai.com/api/pricing, October 2025 (standard tier, USD per 1M tokens).
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-realtime": _p(
        text_in=4.00,
        text_in_cached=0.40,
        text_out=16.00,
        audio_in=32.00,
        audio_in_cached=0.40,
        audio_out=64.00,
        image_in=5.00,
        image_in_cached=0.50,
    ),
    "gpt-realtime-mini": _p(
        text_in=0.60,
        text_in_cached=0.06,
        text_out=2.40,
        audio_in=10.00,
        audio_in_cached=0.30,
        audio_out=20.00,
        image_in=0.80,
        image_in_cached=0.08,
    ),
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
    """The price of ``model``; a dated snapshot (``gpt-realtime-2025-08-28``) falls back to its
    family's price when the table has no entry of its own."""
    found = prices.get(model)
    if found is None:
        found = prices.get(_SNAPSHOT.sub("", model))
    return found
