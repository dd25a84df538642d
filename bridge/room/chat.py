"""Chat from the room: what a human types on ``lk.chat`` (a LiveKit text stream) becomes a text
turn in their call (``ChatRouter``; in shared mode, a labelled turn in the room's call), and a
line of the meeting for the others.

Whatever arrives is outside input: any size, any characters, a stream that stalls, or one its
sender aborts with a reason of their own. ``read_chat`` reads one stream within bounds and never
raises: it returns the message (stripped, at most ``MAX_CHAT_CHARS``, with ``cut`` set when the
rest was dropped) or a one-line ``problem``; the worker logs either as one line.

    message = await read_chat(reader)
    if message.problem: ...   # "not finished within 10 s", the SDK's reason, flattened
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from livekit import rtc

from bridge.logs import one_line
from bridge.room.meeting import Meeting
from bridge.room.session import ParticipantSession
from bridge.room.shared import SHARED, SharedSession

logger = logging.getLogger(__name__)

CHAT_TOPIC = "lk.chat"
CHAT_READ_TIMEOUT = 10.0
MAX_CHAT_CHARS = 8_000
MAX_CHATS_IN_FLIGHT = 8


@dataclass(frozen=True)
class ChatMessage:
    text: str = ""  # stripped; "" when there is nothing to bridge
    cut: bool = False  # longer than the limit: what followed was dropped
    problem: str | None = None  # one line: why it could not be read (then nothing is bridged)


async def read_chat(
    chunks: AsyncIterable[str],
    *,
    limit: int = MAX_CHAT_CHARS,
    timeout: float = CHAT_READ_TIMEOUT,
) -> ChatMessage:
    """One chat stream, read until its end, ``limit`` characters or ``timeout`` seconds."""
    parts: list[str] = []
    size = 0
    cut = False
    try:
        async with asyncio.timeout(timeout):
            async for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    cut = True
                    break
    except TimeoutError:
        return ChatMessage(problem=f"not finished within {timeout:g} s")
    except Exception as exc:  # the SDK's StreamError: aborted by the sender, too big, disconnected
        return ChatMessage(problem=one_line(str(exc) or type(exc).__name__))
    text = "".join(parts).strip()
    if len(text) > limit:
        cut = True
        text = text[:limit].rstrip()
    return ChatMessage(text=text, cut=cut)


class ChatRouter:
    """The room's chat streams to the sessions: at most ``MAX_CHATS_IN_FLIGHT`` read at once
    (more are closed unread), each read within bounds (``read_chat``), then sent as a text turn
    in the sender's call (shared mode: the room's call) and shared with the meeting."""

    def __init__(
        self,
        *,
        room: rtc.Room,
        sessions: Mapping[str, ParticipantSession],
        meeting: Meeting,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        log_extra: dict[str, str],
    ) -> None:
        self._room = room
        self._sessions = sessions
        self._meeting = meeting
        self._spawn = spawn  # a task the room worker owns
        self._extra = log_extra
        self._in_flight = 0

    def on_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        """The SDK's text stream handler for ``CHAT_TOPIC``."""
        if self._in_flight >= MAX_CHATS_IN_FLIGHT:
            logger.warning(
                "chat from %s dropped: too many chat streams open",
                one_line(sender),
                extra=self._extra,
            )
            reader.close()
            return
        self._in_flight += 1
        self._spawn(self._read(reader, sender), f"chat-{sender}")

    async def _read(self, reader: rtc.TextStreamReader, sender: str) -> None:
        try:
            message = await read_chat(reader)
        finally:
            reader.close()  # a reader left open keeps an SDK subscription alive
            self._in_flight -= 1
        if message.problem is not None:
            logger.warning(
                "chat from %s could not be read: %s",
                one_line(sender),
                message.problem,
                extra=self._extra,
            )
            return
        if message.cut:
            logger.info(
                "chat from %s cut at %d characters",
                one_line(sender),
                MAX_CHAT_CHARS,
                extra=self._extra,
            )
        if message.text:
            self._route(sender, message.text)

    def _route(self, sender: str, text: str) -> None:
        who = self._room.remote_participants.get(sender)
        name = (who.name if who is not None else "") or sender
        shared = self._sessions.get(SHARED)
        if isinstance(shared, SharedSession):
            shared.chat(sender, name, text)
            return
        session = self._sessions.get(sender)
        if session is None:
            logger.info(
                "chat from %s not bridged: they have no session (no microphone published)",
                one_line(sender),
                extra=self._extra,
            )
            return
        session.send_text(text)
        self._meeting.said(sender, name, text, time.monotonic(), chat=True)


__all__ = ["CHAT_TOPIC", "MAX_CHAT_CHARS", "ChatMessage", "ChatRouter", "read_chat"]
