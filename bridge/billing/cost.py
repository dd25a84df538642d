"""Dollars from usage: what each response and each input transcription costs, added up.

The Realtime API reports ``response.done.response.usage`` (cached tokens are *part of* the input
tokens, detailed by kind in ``input_token_details.cached_tokens_details``) and, separately,
``conversation.item.input_audio_transcription.completed.usage`` (tokens, or seconds for
whisper-1). Each is split into the price table's kinds (``bridge.billing.prices.KINDS``), so a
cached token is priced once, as cached. A model or kind with no price makes the cost unknown (logged
once per model), never zero.

The usage ledger: ``Pricer`` turns usage into a ``Charge`` (tokens by price kind, dollars), and
``post`` books each charge once, into every ``Spend`` it belongs to (a session's and its room's:
what the budget, ``GET /rooms`` and the end-of-session logs read) and into the process metrics.
Nothing else counts tokens or dollars.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.billing.prices import KINDS, ModelPrice, price_of
from bridge.metrics import COST_USD, TOKENS, TOKENS_USED

logger = logging.getLogger(__name__)

_warned: set[str] = set()


def _int(mapping: Mapping[str, Any] | None, key: str) -> int:
    if not isinstance(mapping, Mapping):
        return 0
    value = mapping.get(key)
    return value if isinstance(value, int) and value > 0 else 0


def response_tokens(usage: Mapping[str, Any]) -> dict[str, int]:
    """A ``response.done`` usage object as tokens by kind; cached tokens taken out of their
    uncached kind. Without ``cached_tokens_details`` the cached tokens are counted from the text
    (the instructions open the prefix), then audio, then images."""
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    text, audio, image = (_int(inp, k) for k in ("text_tokens", "audio_tokens", "image_tokens"))
    details = inp.get("cached_tokens_details") if isinstance(inp, Mapping) else None
    if isinstance(details, Mapping) and details:
        cached = [_int(details, k) for k in ("text_tokens", "audio_tokens", "image_tokens")]
    else:
        left = _int(inp, "cached_tokens")
        cached = []
        for total in (text, audio, image):
            take = min(left, total)
            cached.append(take)
            left -= take
    c_text, c_audio, c_image = (
        min(c, t) for c, t in zip(cached, (text, audio, image), strict=True)
    )
    return {
        "text_in": text - c_text,
        "text_in_cached": c_text,
        "audio_in": audio - c_audio,
        "audio_in_cached": c_audio,
        "image_in": image - c_image,
        "image_in_cached": c_image,
        "text_out": _int(out, "text_tokens"),
        "audio_out": _int(out, "audio_tokens"),
    }


def transcription_tokens(usage: Mapping[str, Any]) -> tuple[dict[str, int], float]:
    """Input-transcription usage as (tokens by kind, seconds billed by duration)."""
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        return {}, float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else 0.0
    details = usage.get("input_token_details")
    if isinstance(details, Mapping):
        text, audio = _int(details, "text_tokens"), _int(details, "audio_tokens")
    else:
        text, audio = 0, _int(usage, "input_tokens")  # no split: transcription input is audio
    return {"text_in": text, "audio_in": audio, "text_out": _int(usage, "output_tokens")}, 0.0


def price(
    tokens: Mapping[str, int], seconds: float, model_price: ModelPrice | None
) -> float | None:
    """USD for ``tokens`` (and ``seconds`` billed per minute); None if any part is unpriced."""
    if model_price is None:
        return None if any(tokens.values()) or seconds else 0.0
    total = 0.0
    for kind, count in tokens.items():
        if not count:
            continue
        each = model_price.per_token(kind)
        if each is None:
            return None
        total += count * each
    if seconds:
        if model_price.per_minute is None:
            return None
        total += seconds / 60 * model_price.per_minute
    return total


TRANSCRIPTION = "transcription_"  # the prefix of the input transcription model's kinds


@dataclass(frozen=True)
class Charge:
    """One response's or one input transcription's usage, priced."""

    model: str
    tokens: dict[str, int]  # by price kind; the transcription model's prefixed TRANSCRIPTION
    usd: float | None  # None: unpriced
    response: bool  # a response (else an input transcription)


@dataclass
class Spend:
    """What a session, a room or a process spent: tokens by kind, responses, dollars.

    ``cost_usd`` is None once anything was unpriced (``unpriced`` names the models)."""

    tokens: Counter[str] = field(default_factory=Counter)
    responses: int = 0
    transcriptions: int = 0
    priced_usd: float = 0.0
    unpriced: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def cost_usd(self) -> float | None:
        return None if self.unpriced else self.priced_usd

    @property
    def duration_s(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def add(self, charge: Charge) -> None:
        self.tokens.update({k: v for k, v in charge.tokens.items() if v})
        if charge.usd is None:
            self.unpriced.add(charge.model)
        else:
            self.priced_usd += charge.usd
        if charge.response:
            self.responses += 1
        else:
            self.transcriptions += 1

    def summary(self) -> dict[str, Any]:
        """Flat fields for a log record's ``extra`` and for ``GET /rooms``."""
        cost = self.cost_usd
        minutes = self.duration_s / 60
        return {
            "tokens": dict(self.tokens),
            "responses": self.responses,
            "duration_s": round(self.duration_s, 1),
            "cost_usd": None if cost is None else round(cost, 6),
            "cost_per_minute_usd": None
            if cost is None or minutes <= 0
            else round(cost / minutes, 6),
        }

    def log_extra(self) -> dict[str, Any]:
        summary = self.summary()
        summary["tokens"] = json.dumps(summary["tokens"], sort_keys=True)
        return summary

    def describe(self) -> str:
        cost = self.cost_usd
        shown = f"${cost:.4f}" if cost is not None else "unknown (no price for "
        if cost is None:
            shown += ", ".join(sorted(self.unpriced)) + ")"
        return shown


def _unpriced_once(model: str, what: str) -> None:
    if model not in _warned:
        _warned.add(model)
        logger.warning(
            "no price for %s model %r: its cost is unknown (add it to `prices`)", what, model
        )


class Pricer:
    """Prices usage for one session's model and transcription model (see ``post``)."""

    def __init__(self, prices: dict[str, ModelPrice], model: str, transcription_model: str) -> None:
        self.model = model
        self.transcription_model = transcription_model
        self._model_price = price_of(prices, model)
        self._transcription_price = price_of(prices, transcription_model)

    @property
    def transcription_priced(self) -> bool:
        p = self._transcription_price
        return p is not None and (p.per_minute is not None or p.audio_in is not None)

    def charge_response(self, usage: Mapping[str, Any]) -> Charge:
        tokens = response_tokens(usage)
        usd = price(tokens, 0.0, self._model_price)
        return Charge(self.model, tokens, usd, response=True)

    def charge_transcription(self, usage: Mapping[str, Any]) -> Charge:
        tokens, seconds = transcription_tokens(usage)
        usd = price(tokens, seconds, self._transcription_price)
        prefixed = {TRANSCRIPTION + kind: count for kind, count in tokens.items()}
        return Charge(self.transcription_model, prefixed, usd, response=False)

    def response(self, usage: Mapping[str, Any], *spends: Spend) -> float | None:
        """Price a response's usage and add it to ``spends`` (not to the metrics: ``post``)."""
        charge = self.charge_response(usage)
        for spend in spends:
            spend.add(charge)
        return charge.usd

    def transcription(self, usage: Mapping[str, Any], *spends: Spend) -> float | None:
        """Price a transcription's usage and add it to ``spends`` (not to the metrics)."""
        charge = self.charge_transcription(usage)
        for spend in spends:
            spend.add(charge)
        return charge.usd


def _deprecated_kinds(charge: Charge) -> dict[str, int]:
    """``bridge_tokens_total{kind}``'s kinds (kept for one release; remove with it): a response's
    as the API names them (cached tokens also in their kind), transcriptions' as the ledger's."""
    if not charge.response:
        return charge.tokens
    t = charge.tokens
    return {
        "input_text": t["text_in"] + t["text_in_cached"],
        "input_audio": t["audio_in"] + t["audio_in_cached"],
        "input_image": t["image_in"] + t["image_in_cached"],
        "input_cached": t["text_in_cached"] + t["audio_in_cached"] + t["image_in_cached"],
        "output_text": t["text_out"],
        "output_audio": t["audio_out"],
    }


def post(charge: Charge, *spends: Spend) -> None:
    """Book ``charge`` into each of ``spends`` and into the process metrics
    (``bridge_tokens_used_total{model,kind}``, ``bridge_cost_usd_total{model}``)."""
    for spend in spends:
        spend.add(charge)
    for kind, count in charge.tokens.items():
        if count:
            TOKENS_USED.labels(charge.model, kind).inc(count)
    for kind, count in _deprecated_kinds(charge).items():
        if count:
            TOKENS.labels(kind).inc(count)
    if charge.usd is None:
        _unpriced_once(charge.model, "realtime" if charge.response else "transcription")
    elif charge.usd:
        COST_USD.labels(charge.model).inc(charge.usd)


__all__ = [
    "KINDS",
    "TRANSCRIPTION",
    "Charge",
    "Pricer",
    "Spend",
    "post",
    "price",
    "response_tokens",
    "transcription_tokens",
]
