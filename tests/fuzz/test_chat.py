"""Chat from the room (``lk.chat`` text streams): any text, any chunking, huge, control
characters, a stream that stalls or that its sender aborts with a reason of their own, from any
identity.

``read_chat`` never raises and returns the text (stripped, cut at the limit and marked so) or one
line saying why it could not be read; the worker then hands the text to the sender's call, or
logs exactly one line (cut, unreadable, no session), never a traceback and never a secret. The
SDK's ``TextStreamReader`` is stood in for by an async iterator yielding the same ``str`` chunks
and raising the SDK's own ``StreamError`` (the real stream is in
tests/integration/test_room_worker.py::test_chat_is_a_text_turn).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from livekit import rtc
from pydantic import SecretStr

from bridge.room.chat import MAX_CHAT_CHARS, read_chat
from bridge.room.worker import RoomWorker
from bridge.settings.config import Settings
from tests.fuzz.strategies import LIVEKIT_SECRET, OPENAI_KEY, hostile_text, no_secret

# How a stream ends: normally, aborted (the SDK raises StreamError with the sender's reason), or
# never (the sender stalls; the read times out).
endings = st.one_of(
    st.just("end"),
    st.just("stall"),
    hostile_text.map(lambda reason: f"abort:{reason}"),
)
chunk_lists = st.lists(hostile_text, max_size=12)
# Text streams arrive split in chunks; huge ones as many chunks, not one.
huge_chunked = st.integers(min_value=1, max_value=40).map(lambda n: ["y" * 1000] * n)


class Stream:
    """Stands in for ``rtc.TextStreamReader``: async iteration over ``str`` chunks, ``close()``."""

    def __init__(self, chunks: list[str], ending: str) -> None:
        self.chunks = chunks
        self.ending = ending
        self.closed = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._read()

    async def _read(self) -> AsyncIterator[str]:
        for chunk in self.chunks:
            await asyncio.sleep(0)
            yield chunk
        if self.ending == "stall":
            await asyncio.Event().wait()
        if self.ending.startswith("abort:"):
            raise rtc.StreamError(self.ending.removeprefix("abort:"))

    def close(self) -> None:
        self.closed = True


def expected_text(chunks: list[str], limit: int) -> tuple[str, bool]:
    """What the reader should make of a stream that ended normally: (text, cut)."""
    read: list[str] = []
    size = 0
    for chunk in chunks:
        read.append(chunk)
        size += len(chunk)
        if size > limit:
            text = "".join(read).strip()
            return text[:limit].rstrip(), True
    return "".join(read).strip(), False


@given(
    chunks=st.one_of(chunk_lists, huge_chunked),
    ending=endings,
    limit=st.sampled_from([MAX_CHAT_CHARS, 40]),
)
@example(chunks=["\x00\r\n", "\u202e\ufeff"], ending="abort:sender\nsaid\rno", limit=40)
def test_a_chat_stream_is_its_text_or_one_problem(
    chunks: list[str], ending: str, limit: int
) -> None:
    message = asyncio.run(read_chat(Stream(chunks, ending), limit=limit, timeout=0.01))
    text, cut = expected_text(chunks, limit)
    if ending == "end" or cut:  # a cut stops reading: how the stream would have ended is moot
        assert message.problem is None
        assert (message.text, message.cut) == (text, cut)
        assert len(message.text) <= limit
    else:
        assert message.problem is not None and message.text == ""
        assert "\n" not in message.problem and "\r" not in message.problem
        assert 0 < len(message.problem) <= 200


# ---- the worker: the text reaches the sender's call, or one line says why not ------------------


class Call:
    """Stands in for the sender's session: records the text turns it is handed."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def send_text(self, text: str) -> None:
        self.texts.append(text)


SETTINGS = Settings(
    livekit_api_key="APIfuzzkey",
    livekit_api_secret=SecretStr(LIVEKIT_SECRET),
    openai_api_key=SecretStr(OPENAI_KEY),
)
SENDER = "alice"
identities = st.one_of(
    st.just(SENDER), st.just("bob\nINFO forged line"), hostile_text.filter(lambda s: s != SENDER)
)


async def deliver(stream: Stream, sender: str) -> tuple[RoomWorker, Call]:
    worker = RoomWorker(SETTINGS, "fuzz-room")
    call = Call()
    worker.sessions[SENDER] = cast(Any, call)
    worker._chat._in_flight = 1  # as on_chat leaves it
    await worker._chat._read(cast(rtc.TextStreamReader, stream), sender)
    assert worker._chat._in_flight == 0
    return worker, call


@hyp_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.one_of(chunk_lists, huge_chunked), ending=endings, sender=identities)
# Found: the identity and the sender's abort reason went into the log verbatim (a forged line).
@example(chunks=["hello"], ending="end", sender="bob\nERROR forged")
@example(chunks=["hello"], ending="abort:a\nERROR forged", sender=SENDER)
def test_chat_reaches_the_call_or_one_log_line(
    caplog: pytest.LogCaptureFixture, chunks: list[str], ending: str, sender: str
) -> None:
    caplog.clear()
    stream = Stream(chunks, ending if ending != "stall" else "end")
    with caplog.at_level(logging.INFO, logger="bridge"):
        _worker, call = asyncio.run(deliver(stream, sender))
    assert stream.closed  # a reader left open keeps an SDK subscription alive
    records = [r for r in caplog.records if r.name.startswith("bridge")]
    for record in records:
        line = record.getMessage()
        assert "\n" not in line and "\r" not in line, line
        assert record.exc_info is None
        assert no_secret(line)
    messages = [r.getMessage() for r in records]
    text, cut = expected_text(chunks, MAX_CHAT_CHARS)
    if ending.startswith("abort:") and not cut:
        assert call.texts == []
        assert any("could not be read" in m for m in messages)
    elif sender == SENDER and text:
        assert call.texts == [text]  # nothing lost but what the cut line says
        assert cut == any(f"cut at {MAX_CHAT_CHARS}" in m for m in messages)
    elif text:
        assert call.texts == []
        assert any("not bridged" in m for m in messages)
    else:
        assert call.texts == []  # an empty message: nothing to bridge, nothing lost
