"""What the emulated service bills: per-response usage computed from the conversation.

Per docs/protocol-notes.md ("Limits and usage"): every response bills the whole
context again as input (the instructions, then every item in order): user audio at 1 token per
100 ms, model audio at 1 token per 50 ms, text at about 4 characters per token, a video snapshot
at 765 tokens. The part of that input that is unchanged since the previous response (the same
items, with the same content, in the same order from the start) is reported as
``cached_tokens``, detailed by kind. When the context passes the model's input limit (its context
window from the model table, less its largest response and the service's reserve: 28,224 tokens
for a 32k model, 95,552 for a 128k one), the session's ``truncation`` drops the oldest items:
``auto`` just enough to fit (so the prefix, and its cache, shifts on every response from then
on), ``retention_ratio`` down to that share of the limit (the prefix then stays stable for many
responses).

Input transcription is billed apart, on ``...input_audio_transcription.completed``: tokens for
the gpt-4o transcribe models, seconds for the models billed by duration (``whisper-1``,
``gpt-transcribe``, ...; the model table's ``billed_by``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from bridge.billing.models import input_limit as model_input_limit
from bridge.billing.models import model_info
from bridge.emulator.conversation import Entry

IMAGE_TOKENS = 765


def text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class Block:
    """One piece of the input in order: what it is (for the cache) and its tokens by kind."""

    key: tuple[Any, ...]
    text: int = 0
    audio: int = 0
    image: int = 0

    @property
    def tokens(self) -> int:
        return self.text + self.audio + self.image


def entry_block(entry: Entry) -> Block:
    if entry.audio_ms > 0 and entry.role in ("user", "assistant"):
        per_token_ms = 100 if entry.role == "user" else 50
        audio = entry.audio_ms // per_token_ms
        return Block(
            (entry.id, "audio", entry.audio_ms, entry.image_tokens),
            audio=audio,
            image=entry.image_tokens,
        )
    return Block(
        (entry.id, "text", entry.text, entry.image_tokens),
        text=text_tokens(entry.text),
        image=entry.image_tokens,
    )


def input_limit(session: dict[str, Any]) -> int:
    """Input tokens that fit before truncation: the session model's window less the response
    reserve (``max_output_tokens``, or the model's largest response for ``inf``)."""
    max_out = session.get("max_output_tokens")
    return model_input_limit(
        str(session.get("model") or ""), max_out if isinstance(max_out, int) else None
    )


def output_usage(out_audio_ms: int, out_text: str) -> tuple[int, int]:
    """(text, audio) output tokens: the transcript of spoken answers is billed as text too."""
    return text_tokens(out_text), out_audio_ms // 50


class Bill:
    """The usage of every response of one call, and of every input transcription."""

    def __init__(self) -> None:
        self._previous: list[Block] = []
        self._dropped: set[str] = set()  # item ids truncation took out of the context
        self.responses: list[dict[str, Any]] = []
        self.transcriptions: list[dict[str, Any]] = []

    def response(
        self,
        *,
        response_id: str,
        status: str,
        session: dict[str, Any],
        entries: list[Entry],
        exclude: Collection[str],
        out_audio_ms: int,
        out_text: str,
    ) -> dict[str, Any]:
        """The ``usage`` of a response whose input is ``entries`` less its own output items
        (``exclude``)."""
        instructions = str(session.get("instructions") or "")
        head = Block(("instructions", instructions), text=text_tokens(instructions))
        items = [e for e in entries if e.id not in exclude and e.id not in self._dropped]
        blocks = self._truncate(session, head, [(e.id, entry_block(e)) for e in items])
        cached = self._cached(blocks)
        self._previous = blocks
        text = sum(b.text for b in blocks)
        audio = sum(b.audio for b in blocks)
        image = sum(b.image for b in blocks)
        c_text = sum(b.text for b in cached)
        c_audio = sum(b.audio for b in cached)
        c_image = sum(b.image for b in cached)
        text_out, audio_out = output_usage(out_audio_ms, out_text)
        input_tokens = text + audio + image
        usage = {
            "total_tokens": input_tokens + text_out + audio_out,
            "input_tokens": input_tokens,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "text_tokens": text,
                "audio_tokens": audio,
                "image_tokens": image,
                "cached_tokens": c_text + c_audio + c_image,
                "cached_tokens_details": {
                    "text_tokens": c_text,
                    "audio_tokens": c_audio,
                    "image_tokens": c_image,
                },
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }
        self.responses.append({"id": response_id, "status": status, "usage": usage})
        return usage

    def _truncate(
        self, session: dict[str, Any], head: Block, items: list[tuple[str, Block]]
    ) -> list[Block]:
        limit = input_limit(session)
        total = head.tokens + sum(b.tokens for _, b in items)
        if total > limit:
            truncation = session.get("truncation")
            if truncation == "disabled":
                pass  # the service would refuse the response; the emulator bills it as is
            else:
                target = limit
                if isinstance(truncation, dict) and truncation.get("type") == "retention_ratio":
                    ratio = float(truncation.get("retention_ratio") or 1.0)
                    target = head.tokens + int((limit - head.tokens) * ratio)
                while items and total > target:
                    item_id, block = items.pop(0)
                    self._dropped.add(item_id)
                    total -= block.tokens
        return [head, *(b for _, b in items)]

    def _cached(self, blocks: list[Block]) -> list[Block]:
        """The blocks the previous response's input started with, unchanged and in order."""
        same: list[Block] = []
        for now, before in zip(blocks, self._previous, strict=False):
            if now != before:
                break
            same.append(now)
        return same

    def transcription(self, model: str, transcript: str, duration_ms: int) -> dict[str, Any]:
        info = model_info(model)
        if info is not None and info.billed_by == "duration":
            usage: dict[str, Any] = {"type": "duration", "seconds": round(duration_ms / 1000, 3)}
        else:
            audio, out = duration_ms // 100, text_tokens(transcript)
            usage = {
                "type": "tokens",
                "total_tokens": audio + out,
                "input_tokens": audio,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio},
                "output_tokens": out,
            }
        self.transcriptions.append(usage)
        return usage
