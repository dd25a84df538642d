"""One response of the fake model as the service streams it: the event sequences of a message
(text or audio with its transcript) and of function calls, up to the last ``output_item.done``.
Starting, finishing (``response.done``) and cancelling a response is the responder's."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from bridge.audio import SAMPLE_RATE, Pcm
from bridge.emulator.context import ModelContext
from bridge.emulator.voice import Speaker


@dataclass
class Response:
    id: str
    item_id: str
    text: str
    audio: Pcm | None
    modalities: list[str]
    task: asyncio.Task[None] | None = None
    said: list[str] = field(default_factory=list)
    done: bool = False
    # A function-call response: these ``function_call`` items instead of a message.
    calls: list[dict[str, Any]] = field(default_factory=list)
    # ``response.create``'s metadata, echoed on the response (clients match replies by it).
    metadata: dict[str, str] | None = None

    def body(self, status: str, **extra: Any) -> dict[str, Any]:
        """The ``response`` object of response.created/done."""
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "output_modalities": self.modalities,
            "conversation_id": "conv_emulator",
            **({"metadata": self.metadata} if self.metadata is not None else {}),
            **extra,
        }

    def item(self, status: str, text: str) -> dict[str, Any]:
        """The assistant message item (content once it is no longer in progress)."""
        content: list[dict[str, Any]] = []
        if status != "in_progress":
            kind = "output_audio" if self.audio is not None else "output_text"
            key = "transcript" if self.audio is not None else "text"
            content = [{"type": kind, key: text}]
        return {
            "id": self.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def duration_s(self, chars_per_second: float) -> float:
        """How long it plays: its audio, or its text read at ``chars_per_second``."""
        if self.audio is not None:
            return len(self.audio) / SAMPLE_RATE
        return len(self.text) / chars_per_second


class ResponseStream:
    """Emits a response's events (``response.created`` to its last ``output_item.done``)."""

    def __init__(self, context: ModelContext, voice: Speaker) -> None:
        self._ctx = context
        self._voice = voice

    # ---- a message ---------------------------------------------------------------------------

    def open_message(self, response: Response) -> dict[str, Any]:
        """``response.created`` to ``content_part.added``; returns the content part's ids."""
        ctx = self._ctx
        where = {
            "response_id": response.id,
            "item_id": response.item_id,
            "output_index": 0,
            "content_index": 0,
        }
        ctx.emit({"type": "response.created", "response": response.body("in_progress", output=[])})
        item = response.item("in_progress", "")
        ctx.emit(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": 0,
                "item": item,
            }
        )
        after = ctx.conversation.add(item)
        ctx.emit({"type": "conversation.item.added", "item": item, "previous_item_id": after})
        ctx.emit({"type": "response.content_part.added", **where, "part": self._part(response, "")})
        return where

    async def stream_words(self, response: Response, where: dict[str, Any]) -> None:
        """The text (or the audio's transcript) word by word, paced by the generation speed;
        over a WebSocket the audio generated so far goes out with the words."""
        options = self._ctx.options
        audio = response.audio is not None
        duration = response.duration_s(options.chars_per_second)
        words = re.findall(r"\S+\s*", response.text) or [response.text]
        step = duration / options.generation_speed / len(words)
        delta_type = (
            "response.output_audio_transcript.delta" if audio else "response.output_text.delta"
        )
        for index, word in enumerate(words):
            await asyncio.sleep(step)
            response.said.append(word)
            if audio:
                self._voice.generated(where, (index + 1) / len(words))
            self._ctx.emit(
                {"type": delta_type, **where, "delta": word, "obfuscation": secrets.token_hex(2)}
            )

    def close_message(self, response: Response, where: dict[str, Any]) -> dict[str, Any]:
        """The text's ``.done`` to ``conversation.item.done``; returns the finished item."""
        ctx = self._ctx
        text = response.text
        if response.audio is not None:
            ctx.emit({"type": "response.output_audio_transcript.done", **where, "transcript": text})
        else:
            ctx.emit({"type": "response.output_text.done", **where, "text": text})
        ctx.emit(
            {"type": "response.content_part.done", **where, "part": self._part(response, text)}
        )
        done_item = response.item("completed", text)
        ctx.emit(
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": 0,
                "item": done_item,
            }
        )
        ctx.emit({"type": "conversation.item.done", "item": done_item})
        return done_item

    @staticmethod
    def _part(response: Response, text: str) -> dict[str, Any]:
        if response.audio is not None:
            return {"type": "audio", "transcript": text}
        return {"type": "text", "text": text}

    # ---- function calls ----------------------------------------------------------------------

    async def calls(self, response: Response) -> None:
        """A function-call response, with the service's event sequence: per call, output item
        added, argument deltas, arguments done, output item done. No audio."""
        self._ctx.emit(
            {"type": "response.created", "response": response.body("in_progress", output=[])}
        )
        for index, call in enumerate(response.calls):
            await self._call(response, index, call)

    async def _call(self, response: Response, index: int, call: dict[str, Any]) -> None:
        ctx = self._ctx
        ids = {"response_id": response.id, "item_id": call["id"], "output_index": index}
        added = {**call, "arguments": ""}
        ctx.emit(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": index,
                "item": added,
            }
        )
        after = ctx.conversation.add(added)
        ctx.emit({"type": "conversation.item.added", "item": added, "previous_item_id": after})
        arguments = call["arguments"]
        step = max(1, len(arguments) // 3)
        for start in range(0, len(arguments), step):
            await asyncio.sleep(0.01)
            response.said.append(arguments[start : start + step])
            ctx.emit(
                {
                    "type": "response.function_call_arguments.delta",
                    **ids,
                    "call_id": call["call_id"],
                    "delta": arguments[start : start + step],
                }
            )
        ctx.emit(
            {
                "type": "response.function_call_arguments.done",
                **ids,
                "call_id": call["call_id"],
                "name": call["name"],
                "arguments": arguments,
            }
        )
        call["status"] = "completed"
        ctx.emit(
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": index,
                "item": call,
            }
        )
        ctx.emit({"type": "conversation.item.done", "item": call})
        entry = ctx.conversation.get(call["id"])
        if entry is not None:
            entry.text = f"{call['name']}({arguments})"
