"""The meeting as the room worker sees it: who is present, what was said recently, and the fan-out
that lets every call know what the others heard.

    meeting = Meeting(settings)
    meeting.listen("bob", session)           # session.meeting_line(line), presence_changed()
    meeting.joined("carol", "Carol")         # "[meeting] Carol joined" to everyone else
    meeting.said("alice", "Alice", "I think we should ship on Friday.", spoken_at)
    meeting.answered("alice", "Alice", "Friday works.", spoken_at)
    meeting.recent()                         # what a late joiner's first call starts with

Lines are labelled with the speaker's name (LiveKit participant name, else identity) and reach
every listener but the one they came from, as context that starts no response. With meeting
context off (``meeting_context = false`` or ``audience = private``) nothing is shared: each call
knows only its own human.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

from bridge.room.conversation import RECORD_LINES, Line
from bridge.settings.config import Settings

MEETING = "meeting"


class Listener(Protocol):
    def meeting_line(self, line: Line) -> None: ...

    def presence_changed(self) -> None: ...


def label(name: str, text: str) -> str:
    return f"[{name}] {text}"


class Meeting:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.meeting_enabled
        self.max_chars = settings.meeting_context_max_chars
        self.agent_name = settings.agent_name
        self.present: dict[str, str] = {}  # identity -> name, in order of arrival
        self._listeners: dict[str, Listener] = {}
        self._recent: deque[Line] = deque(maxlen=RECORD_LINES)

    # ---- listeners -------------------------------------------------------------------------

    def listen(self, key: str, listener: Listener) -> None:
        self._listeners[key] = listener

    def unlisten(self, key: str, listener: Listener) -> None:
        if self._listeners.get(key) is listener:
            del self._listeners[key]

    # ---- presence ----------------------------------------------------------------------------

    def joined(self, identity: str, name: str, *, announce: bool = True) -> None:
        """``announce=False``: they were there before the agent (no "joined" line)."""
        if identity in self.present:
            return
        self.present[identity] = name
        if announce:
            self._share(Line(time.monotonic(), "user", label(MEETING, f"{name} joined"), identity))
        self._presence_changed()

    def left(self, identity: str) -> None:
        name = self.present.pop(identity, None)
        if name is None:
            return
        self._share(Line(time.monotonic(), "user", label(MEETING, f"{name} left"), identity))
        self._presence_changed()

    def names(self) -> list[str]:
        return list(self.present.values())

    # ---- what was said -----------------------------------------------------------------------

    def said(
        self, identity: str, name: str, text: str, spoken_at: float, *, chat: bool = False
    ) -> None:
        """A human's final transcript (or chat message) reaches every other call."""
        who = f"{name}, in chat" if chat else name
        self._share(Line(spoken_at, "user", label(who, text), identity))

    def answered(self, identity: str, name: str, text: str, spoken_at: float) -> None:
        """The agent's answer to one human reaches the others' calls as its own words."""
        self._share(Line(spoken_at, "assistant", label(f"answering {name}", text), identity))

    def recent(self) -> list[Line]:
        """The recent meeting, newest last, within ``max_chars``."""
        lines: list[Line] = []
        total = 0
        for line in reversed(self._recent):
            total += len(line.text)
            if total > self.max_chars:
                break
            lines.append(line)
        return sorted(lines, key=lambda line: line.spoken_at)

    # ---- instructions --------------------------------------------------------------------------

    def instructions(self, base: str, channel_with: str | None) -> str:
        """``base`` plus what the model must know about the meeting. ``channel_with``: the one
        person its audio channel is with (per-participant mode), None for the whole room."""
        if not self.enabled and channel_with is not None:
            return base
        present = ", ".join(self.names()) or "nobody yet"
        parts = [base, "", f"You are {self.agent_name}, taking part in a meeting."]
        parts.append(f"People present: {present}.")
        if channel_with is not None:
            parts.append(
                f"Your own audio channel is with {channel_with}: what you hear is "
                f"{channel_with}, and you answer {channel_with}."
            )
            parts.append(
                "Text lines starting with a name in brackets, like [Alice], are what others "
                "said in the meeting; [answering Alice] lines are what you told them; [meeting] "
                "lines say who joined or left. Use them as context, never answer them on "
                "their own."
            )
        else:
            parts.append(
                "Everyone shares one audio channel with you: you hear the whole room and "
                "everyone hears your answers. Lines starting with a name in brackets, like "
                "[Alice], say who spoke or wrote; [meeting] lines say who joined or left."
            )
        return "\n".join(parts)

    # ---- plumbing ----------------------------------------------------------------------------

    def _share(self, line: Line) -> None:
        if not self.enabled:
            return
        self._recent.append(line)
        for key, listener in list(self._listeners.items()):
            if key != line.source:
                listener.meeting_line(line)

    def _presence_changed(self) -> None:
        for listener in list(self._listeners.values()):
            listener.presence_changed()
