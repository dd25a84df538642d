"""What both sides of the fake model (``listener.py``: what it hears; ``responder.py``: what it
says) share: the session as last updated, the conversation, the bill, what it understood of the
user, and where its events and errors go."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.aio import TaskSet
from bridge.audio import Pcm
from bridge.emulator.billing import Bill
from bridge.emulator.conversation import Conversation
from bridge.emulator.options import EmulatorOptions

Emit = Callable[[dict[str, Any]], None]


class ErrorSink(Protocol):
    def __call__(
        self,
        error_type: str,
        message: str,
        param: str | None,
        event_id: str | None,
        *,
        code: str | None = None,
    ) -> None: ...


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass
class ModelContext:
    options: EmulatorOptions
    # The session as the service reports it (session.created/updated), replaced on each update.
    session: dict[str, Any]
    # Every server event goes out through ``emit`` (checked against the server schema there).
    emit: Emit
    error: ErrorSink
    # The model's tasks (responses, transcriptions, timers), awaited on close.
    tasks: TaskSet
    conversation: Conversation = field(default_factory=Conversation)
    bill: Bill = field(default_factory=Bill)
    # What the model understood of the user's latest turn (spoken or typed) and the audio of
    # their latest utterance (echo answers).
    heard: str = ""
    echo: Pcm | None = None
    # User turns so far; each may trigger the scripted tool calls once.
    turns: int = 0

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        value = self.session["audio"]["input"].get("turn_detection")
        return value if isinstance(value, dict) else None

    @property
    def idle_timeout_ms(self) -> int | None:
        """Server VAD's ``idle_timeout_ms`` when set (the only turn detection that has one)."""
        td = self.turn_detection or {}
        idle = td.get("idle_timeout_ms")
        if td.get("type") != "server_vad" or not isinstance(idle, int) or idle <= 0:
            return None
        return idle

    def add_item(
        self, item: dict[str, Any], previous_item_id: str | None = None, *, audio_ms: int = 0
    ) -> None:
        """Put a whole item into the conversation: ``conversation.item.added`` then ``.done``.
        Raises ``UnknownItemError`` for an unknown ``previous_item_id``."""
        after = self.conversation.add(item, previous_item_id, audio_ms=audio_ms)
        self.emit({"type": "conversation.item.added", "item": item, "previous_item_id": after})
        self.emit({"type": "conversation.item.done", "item": item})
