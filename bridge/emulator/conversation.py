"""The emulated conversation: the items a call holds, in order, as the service keeps them.

Items are added by the model (user turns, answers) and by the client
(``conversation.item.create``, optionally after ``previous_item_id``), deleted by
``conversation.item.delete`` and truncated by ``conversation.item.truncate``. Inspection
(``GET /v1/_emulator/calls/{id}``) lists them as ``{"id", "role", "type", "text"}`` so a test can
see what the model knew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class UnknownItemError(LookupError):
    """An item id the conversation does not hold (the service answers with an ``error``)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id


@dataclass
class Entry:
    id: str
    role: str  # user | assistant | system | "" (function calls and outputs have no role)
    type: str  # message | function_call | function_call_output | ...
    text: str
    audio_ms: int = 0  # audio the item carries (user input or model output), for usage
    call_id: str = ""  # function_call / function_call_output
    image_tokens: int = 0  # video snapshots the model took in with this item

    def listing(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "type": self.type, "text": self.text}


def item_text(item: dict[str, Any]) -> str:
    """The words an item carries: message text and transcripts, a function call's name and
    arguments, a function call output."""
    kind = item.get("type")
    if kind == "function_call":
        return f"{item.get('name', '')}({item.get('arguments', '')})"
    if kind == "function_call_output":
        return str(item.get("output", ""))
    parts = []
    for content in item.get("content") or []:
        if not isinstance(content, dict):
            continue
        text = content.get("text") or content.get("transcript")
        if text:
            parts.append(str(text))
    return " ".join(parts)


class Conversation:
    def __init__(self) -> None:
        self._entries: list[Entry] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def last_id(self) -> str | None:
        return self._entries[-1].id if self._entries else None

    def add(
        self, item: dict[str, Any], previous_item_id: str | None = None, *, audio_ms: int = 0
    ) -> str | None:
        """Insert ``item`` after ``previous_item_id`` (``None``: append; ``"root"``: first).
        Returns the id of the item it now follows. Raises ``UnknownItemError``."""
        entry = Entry(
            id=item["id"],
            role=str(item.get("role") or ""),
            type=str(item.get("type") or ""),
            text=item_text(item),
            audio_ms=audio_ms,
            call_id=str(item.get("call_id") or ""),
        )
        if previous_item_id is None:
            after = self.last_id
            self._entries.append(entry)
            return after
        if previous_item_id == "root":
            self._entries.insert(0, entry)
            return None
        index = self._index(previous_item_id)
        self._entries.insert(index + 1, entry)
        return previous_item_id

    def delete(self, item_id: str) -> None:
        del self._entries[self._index(item_id)]

    def get(self, item_id: str) -> Entry | None:
        for entry in self._entries:
            if entry.id == item_id:
                return entry
        return None

    def set_text(self, item_id: str, text: str) -> None:
        entry = self.get(item_id)
        if entry is not None:
            entry.text = text

    def truncate_audio(self, item_id: str, audio_end_ms: int) -> None:
        entry = self.get(item_id)
        if entry is None:
            raise UnknownItemError(item_id)
        entry.audio_ms = min(entry.audio_ms, audio_end_ms)

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def listing(self) -> list[dict[str, Any]]:
        return [entry.listing() for entry in self._entries]

    def _index(self, item_id: str) -> int:
        for index, entry in enumerate(self._entries):
            if entry.id == item_id:
                return index
        raise UnknownItemError(item_id)
