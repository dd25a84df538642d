"""Chat from the room: what a human types on ``lk.chat`` (a LiveKit text stream) becomes a text
turn in their call.

Whatever arrives is outside input: any size, any characters, a stream that stalls, or one its
sender aborts with a reason of their own. ``read_chat`` reads one stream within bounds and never
raises: it returns the message (stripped, at most ``MAX_CHAT_CHARS``, with ``cut`` set when the
rest was dropped) or a one-line ``problem``; the worker logs either as one line.

    message = await read_chat(reader)
    if message.problem: ...   # "not finished within 10 s", the SDK's reason, flattened
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from dataclasses import dataclass

from bridge.logs import one_line

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
