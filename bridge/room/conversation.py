"""What a session's model calls know, in both modes: the recent conversation and, in a meeting,
what everybody else said, kept under a character bound.

    state = ConversationState(max_chars=6000, extra=...)
    state.start_call(call)                  # a new call: the record replayed as text, oldest first
    state.own("user", transcript, spoken_at)  # said on the call itself (it already holds it)
    state.add(line)                         # from the meeting: recorded and added to the call
    state.item_added(item_id, previous)     # the service added an item (a turn, an answer)
    state.end_call()

Text we add to a call (meeting lines, history carried over from the previous call) never starts
a response and is placed in the order the words were spoken (``previous_item_id``). Past
``max_chars`` of added text the oldest added items are deleted from the call
(``conversation.item.delete``), so a long meeting does not bill an ever-growing context on every
response; what was trimmed is logged and counted.
"""

from __future__ import annotations

import bisect
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from bridge.metrics import CONTEXT_ITEMS_ADDED, CONTEXT_ITEMS_TRIMMED
from bridge.realtime import events as ev

logger = logging.getLogger(__name__)

Role = Literal["user", "assistant"]
# The record a new call is seeded from: at most this many lines (and max_chars characters).
RECORD_LINES = 200
SPOKEN_KEPT = 64  # speech start times of the latest turns (a transcript arrives after its turn)


@dataclass(frozen=True)
class Line:
    """One thing said, as the model should read it."""

    spoken_at: float  # time.monotonic() when the words began
    role: Role
    text: str  # labelled ("[Alice] ...") when someone other than this call's human said it
    source: str = ""  # identity it came from; "" for the meeting itself (joins, leaves)

    @property
    def item(self) -> dict[str, object]:
        kind = "input_text" if self.role == "user" else "output_text"
        return {
            "type": "message",
            "role": self.role,
            "content": [{"type": kind, "text": self.text}],
        }


class Sender(Protocol):
    def send(self, event: ev.ClientEvent) -> None: ...


@dataclass
class _Item:
    id: str
    spoken_at: float
    chars: int  # 0 for items the service added (our bound counts only what we added)
    added: bool


def new_item_id() -> str:
    # Client-chosen ids (at most 32 characters) let us place later items after this one.
    return "ctx_" + secrets.token_hex(12)


class ConversationState:
    def __init__(self, *, max_chars: int, extra: dict[str, str] | None = None) -> None:
        self.max_chars = max_chars
        self._extra = extra or {}
        self._record: deque[Line] = deque(maxlen=RECORD_LINES)
        self._record_chars = 0
        self._call: Sender | None = None
        self._items: list[_Item] = []  # the current call's conversation, in order
        self._spoken: dict[str, float] = {}  # item id -> when its speech began
        self.added = 0
        self.trimmed = 0
        self.trimmed_chars = 0

    # ---- the record (what a new call starts with) --------------------------------------------

    def seed(self, lines: list[Line]) -> None:
        """Start from the recent meeting (a late joiner's first call gets it)."""
        for line in sorted(lines, key=lambda line: line.spoken_at):
            self._remember(line)

    def record(self) -> list[Line]:
        return list(self._record)

    def _remember(self, line: Line) -> None:
        self._record.append(line)
        self._record_chars += len(line.text)
        while self._record and self._record_chars > self.max_chars:
            self._record_chars -= len(self._record.popleft().text)
        if len(self._record) == self._record.maxlen:
            self._record_chars = sum(len(line.text) for line in self._record)

    # ---- calls ---------------------------------------------------------------------------------

    @property
    def in_call(self) -> bool:
        return self._call is not None

    def start_call(self, call: Sender) -> None:
        """A new call: carry the record over (own turns and the meeting), oldest first."""
        self._call = call
        self._items.clear()
        self._spoken.clear()
        for line in self._record:
            self._send(line)
        self._trim()

    def end_call(self) -> None:
        self._call = None
        self._items.clear()
        self._spoken.clear()

    def own(self, role: Role, text: str, spoken_at: float | None = None) -> None:
        """Said on the call itself (the human's turn, the model's answer, a chat text the
        session sent): recorded for the next call, not added to this one."""
        if text:
            self._remember(Line(spoken_at or time.monotonic(), role, text))

    def add(self, line: Line) -> None:
        """Something said elsewhere in the meeting: recorded, and added to the current call as
        context (no response)."""
        if not line.text:
            return
        self._remember(line)
        if self._call is not None:
            self._send(line)
            self._trim()

    # ---- what the service tells us -------------------------------------------------------------

    def speech_started(self, item_id: str, at: float | None = None) -> None:
        self._spoken[item_id] = at if at is not None else time.monotonic()
        while len(self._spoken) > SPOKEN_KEPT:
            del self._spoken[next(iter(self._spoken))]

    def spoken_at(self, item_id: str) -> float:
        """When the speech of ``item_id`` began (now, if we never saw it start)."""
        return self._spoken.get(item_id, time.monotonic())

    def item_added(self, item_id: str, previous_item_id: str | None) -> None:
        if any(item.id == item_id for item in self._items):
            return  # one of ours
        item = _Item(item_id, self._spoken.get(item_id, time.monotonic()), 0, added=False)
        index = self._index(previous_item_id)
        self._items.insert(len(self._items) if index is None else index + 1, item)

    def item_deleted(self, item_id: str) -> None:
        self._items = [item for item in self._items if item.id != item_id]

    def added_chars(self) -> int:
        return sum(item.chars for item in self._items if item.added)

    def item_ids(self) -> list[str]:
        return [item.id for item in self._items]

    # ---- plumbing ------------------------------------------------------------------------------

    def _index(self, item_id: str | None) -> int | None:
        if item_id is None:
            return None
        for index, item in enumerate(self._items):
            if item.id == item_id:
                return index
        return None

    def _send(self, line: Line) -> None:
        assert self._call is not None
        item_id = new_item_id()
        # After the last item spoken no later than this line (appended when that is the end).
        times = [item.spoken_at for item in self._items]
        position = bisect.bisect_right(times, line.spoken_at)
        previous: str | None = None
        if position < len(self._items):
            previous = self._items[position - 1].id if position > 0 else "root"
        self._call.send(
            ev.ConversationItemCreate(item={"id": item_id, **line.item}, previous_item_id=previous)
        )
        self._items.insert(position, _Item(item_id, line.spoken_at, len(line.text), added=True))
        self.added += 1
        CONTEXT_ITEMS_ADDED.inc()

    def _trim(self) -> None:
        """Delete the oldest items we added until what we added fits ``max_chars``."""
        assert self._call is not None
        total = self.added_chars()
        if total <= self.max_chars:
            return
        deleted = chars = 0
        for item in list(self._items):
            if total <= self.max_chars:
                break
            if not item.added:
                continue
            self._call.send(ev.ConversationItemDelete(item_id=item.id))
            self._items.remove(item)
            total -= item.chars
            deleted += 1
            chars += item.chars
        self.trimmed += deleted
        self.trimmed_chars += chars
        CONTEXT_ITEMS_TRIMMED.inc(deleted)
        logger.info(
            "context over %d characters: deleted the %d oldest added items (%d characters)",
            self.max_chars,
            deleted,
            chars,
            extra=self._extra,
        )
