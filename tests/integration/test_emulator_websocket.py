"""The emulator's WebSocket transport, driven by OpenAI's own client (``client.realtime.connect()``
of the ``openai`` package): every server event is parsed with the SDK's own types, strictly."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

import httpx
import numpy as np
import pydantic
import pytest
import pytest_asyncio
import websockets
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent

from bridge.emulator.app import EmulatorServer
from tests.support.env import EMULATOR_KEY

SERVER_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    Annotated[RealtimeServerEvent, pydantic.Field(discriminator="type")]
)
WIRE_RATE = 24_000
# Fields the real service adds beyond the published schema.
EXTRAS = {"obfuscation"}


def pcm24(seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * WIRE_RATE)) / WIRE_RATE
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def quiet24(seconds: float) -> bytes:
    return bytes(2 * int(seconds * WIRE_RATE))


class Session:
    """One connection: what it sends, and every server event, validated as it arrives."""

    def __init__(self, connection: AsyncRealtimeConnection) -> None:
        self.connection = connection
        self.events: list[Any] = []
        self._seen = 0
        self._reader = asyncio.create_task(self._read())
        self._changed = asyncio.Event()
        self.closed: websockets.ConnectionClosed | None = None

    async def _read(self) -> None:
        while True:
            try:
                raw = await self.connection.recv_bytes()
            except websockets.ConnectionClosed as exc:
                self.closed = exc
                self._changed.set()
                return
            event = SERVER_EVENTS.validate_json(raw)  # the SDK's types, strictly
            extra = set(event.model_extra or {}) - EXTRAS
            assert not extra, f"{event.type}: fields outside the schema: {extra}"
            # The SDK's own parsing gives the same class.
            assert type(self.connection.parse_event(raw)) is type(event)
            self.events.append(event)
            self._changed.set()

    async def next(self, kind: str, timeout: float = 10.0) -> Any:
        """The next event of ``kind`` after the last one taken."""

        async def find() -> Any:
            while True:
                for index in range(self._seen, len(self.events)):
                    if self.events[index].type == kind:
                        self._seen = index + 1
                        return self.events[index]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    async def append(self, pcm: bytes, chunk_s: float = 0.1) -> None:
        step = int(chunk_s * WIRE_RATE) * 2
        for start in range(0, len(pcm), step):
            chunk = base64.b64encode(pcm[start : start + step]).decode()
            await self.connection.input_audio_buffer.append(audio=chunk)

    async def aclose(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@pytest_asyncio.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[AsyncOpenAI]:
    emulator.emulator.options.answer_delay_ms = 50
    emulator.emulator.options.generation_speed = 4.0
    async with AsyncOpenAI(api_key=EMULATOR_KEY, base_url=emulator.base_url) as openai:
        yield openai


@contextlib.asynccontextmanager
async def connect(client: AsyncOpenAI, **kwargs: Any) -> AsyncIterator[Session]:
    async with client.realtime.connect(model="gpt-realtime", **kwargs) as connection:
        session = Session(connection)
        try:
            yield session
        finally:
            await session.aclose()


def snapshot(emulator: EmulatorServer) -> dict[str, Any]:
    (live,) = [c for c in emulator.emulator.calls.values() if c.transport == "websocket"][-1:]
    result: dict[str, Any] = live.snapshot()
    return result


async def text_item_and_bad_event(s: Session) -> None:
    # A text item, created then deleted.
    await s.connection.conversation.item.create(
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hello there"}],
        }
    )
    added = await s.next("conversation.item.added")
    await s.next("conversation.item.done")
    assert added.item.content[0].text == "hello there"
    await s.connection.conversation.item.delete(item_id=added.item.id)
    deleted = await s.next("conversation.item.deleted")
    assert deleted.item_id == added.item.id

    # A bad event: an error, and the session goes on.
    await s.connection.send(cast(Any, {"type": "response.create", "response": {"voice": "alloy"}}))
    error = await s.next("error")
    assert error.error.code == "invalid_event"
    assert "response.voice" in error.error.message


async def test_a_conversation_with_openais_client(
    emulator: EmulatorServer, client: AsyncOpenAI
) -> None:
    async with connect(client) as s:
        created = await s.next("session.created")
        assert created.session.model == "gpt-realtime"
        await s.connection.session.update(
            session={
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {
                    "input": {"transcription": {"model": "gpt-4o-mini-transcribe"}},
                    "output": {"voice": "coral"},
                },
            }
        )
        updated = await s.next("session.updated")
        assert updated.session.audio.output.voice == "coral"

        # No VAD: audio appended, then committed by the client.
        await s.connection.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await s.next("session.updated")
        await s.append(pcm24(0.5))
        await s.connection.input_audio_buffer.commit()
        committed = await s.next("input_audio_buffer.committed")
        user = await s.next("conversation.item.added")
        assert user.item.id == committed.item_id and user.item.role == "user"
        transcript = await s.next("conversation.item.input_audio_transcription.completed")
        assert transcript.item_id == committed.item_id

        # response.create with metadata: echoed on response.created; audio as deltas,
        # interleaved with the transcript; no output_audio_buffer events on a WebSocket.
        await s.connection.response.create(response={"metadata": {"client_event_id": "abc"}})
        started = await s.next("response.created")
        assert started.response.metadata == {"client_event_id": "abc"}
        done = await s.next("response.done", timeout=20)
        assert done.response.status == "completed"
        assert done.response.metadata == {"client_event_id": "abc"}
        answer = [e for e in s.events if getattr(e, "response_id", None) == started.response.id]
        kinds = [e.type for e in answer]
        audio = [e for e in answer if e.type == "response.output_audio.delta"]
        assert len(audio) >= 2
        assert kinds.index("response.output_audio.delta") < kinds.index(
            "response.output_audio_transcript.done"
        )
        first_word = kinds.index("response.output_audio_transcript.delta")
        last_audio = len(kinds) - 1 - kinds[::-1].index("response.output_audio.delta")
        assert first_word < last_audio, "audio and transcript deltas are interleaved"
        assert kinds.index("response.output_audio.done") < kinds.index(
            "response.output_audio_transcript.done"
        )
        pcm = b"".join(base64.b64decode(e.delta) for e in audio)
        transcript_done = next(
            e for e in answer if e.type == "response.output_audio_transcript.done"
        )
        # The answer lasts len(text) / chars_per_second, at 24 kHz PCM16.
        seconds = len(pcm) / 2 / WIRE_RATE
        expected = max(0.3, len(transcript_done.transcript) / 15.0)
        assert abs(seconds - expected) < 0.05
        assert not any(t.startswith("output_audio_buffer.") for t in s.types())

        # The client played 300 ms of it: truncate.
        await s.connection.conversation.item.truncate(
            item_id=done.response.output[0].id, content_index=0, audio_end_ms=300
        )
        truncated = await s.next("conversation.item.truncated")
        assert truncated.audio_end_ms == 300

        await text_item_and_bad_event(s)

        inside = snapshot(emulator)
        assert inside["state"] == "active"
        assert inside["events_in"]["input_audio_buffer.append"] == 5
        assert inside["items"][0]["text"].startswith("utterance 1")
        assert inside["responses"][0]["usage"]["output_token_details"]["audio_tokens"] > 0


async def test_server_vad_turn_and_barge_in(emulator: EmulatorServer, client: AsyncOpenAI) -> None:
    async with connect(client) as s:
        await s.next("session.created")
        await s.append(quiet24(0.6) + pcm24(0.8) + quiet24(0.6))
        speech = await s.next("input_audio_buffer.speech_started")
        stopped = await s.next("input_audio_buffer.speech_stopped")
        assert stopped.item_id == speech.item_id
        # Speech began at 600 ms; the turn starts prefix_padding_ms (300) before it.
        assert 250 <= speech.audio_start_ms <= 350
        await s.next("input_audio_buffer.committed")
        created = await s.next("response.created")
        assert created.response.metadata is None
        await s.next("response.output_audio.delta")
        # Speech while the answer is being generated: the server cancels it (no truncation of
        # its own: on a WebSocket, the client knows what it played).
        await s.append(pcm24(0.4))
        await s.next("input_audio_buffer.speech_started")
        done = await s.next("response.done")
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "turn_detected"
        assert "conversation.item.truncated" not in s.types()
        assert not any(t.startswith("output_audio_buffer.") for t in s.types())


async def test_loopback_voice(emulator: EmulatorServer, client: AsyncOpenAI) -> None:
    emulator.emulator.options.voice_mode = "loopback"
    async with connect(client) as s:
        await s.next("session.created")
        sent = pcm24(0.3)
        await s.append(sent)
        await s.next("response.created")
        deltas = [await s.next("response.output_audio.delta") for _ in range(3)]
        assert b"".join(base64.b64decode(d.delta) for d in deltas) == sent
        assert "input_audio_buffer.speech_started" not in s.types()
        assert snapshot(emulator)["loopback"]["packets"] == 3
        # The answer is an item like any other: a client that stopped playing truncates it.
        await s.connection.conversation.item.truncate(
            item_id=deltas[0].item_id, content_index=0, audio_end_ms=100
        )
        truncated = await s.next("conversation.item.truncated")
        assert truncated.item_id == deltas[0].item_id
        assert snapshot(emulator)["errors"] == []


async def test_ephemeral_key(emulator: EmulatorServer) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        minted = await http.post(
            f"{emulator.base_url}/realtime/client_secrets",
            headers={"Authorization": f"Bearer {EMULATOR_KEY}"},
            json={"session": {"type": "realtime", "audio": {"output": {"voice": "sage"}}}},
        )
    key = minted.json()["value"]
    async with (
        AsyncOpenAI(api_key=key, base_url=emulator.base_url) as openai,
        connect(openai) as s,
    ):
        created = await s.next("session.created")
        assert created.session.audio.output.voice == "sage"


def ws_url(emulator: EmulatorServer, query: str = "model=gpt-realtime") -> str:
    return emulator.base_url.replace("http://", "ws://") + f"/realtime?{query}"


@pytest.mark.parametrize(
    ("headers", "query", "status", "code"),
    [
        ({}, "model=gpt-realtime", 401, "missing_api_key"),
        ({"Authorization": "Bearer sk-wrong-0000000000"}, "model=gpt-realtime", 401, None),
        ({"Authorization": "Bearer ek_unknown"}, "model=gpt-realtime", 401, None),
        ({"Authorization": f"Bearer {EMULATOR_KEY}"}, "", 400, "missing_required_parameter"),
        ({"Authorization": f"Bearer {EMULATOR_KEY}"}, "call_id=rtc_0123", 400, None),
    ],
)
async def test_refused_before_the_upgrade(
    emulator: EmulatorServer, headers: dict[str, str], query: str, status: int, code: str | None
) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url(emulator, query), additional_headers=headers):
            pass
    response = refused.value.response
    assert response.status_code == status
    error = json.loads(response.body or b"{}")["error"]
    if code is not None:
        assert error["code"] == code
    assert "sk-wrong" not in error["message"]


async def test_beta_header_gets_the_apis_error(emulator: EmulatorServer) -> None:
    headers = {"Authorization": f"Bearer {EMULATOR_KEY}", "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(ws_url(emulator), additional_headers=headers) as ws:
        event = SERVER_EVENTS.validate_json(await asyncio.wait_for(ws.recv(), 5))
        assert event.type == "error"
        assert event.error.code == "beta_api_shape_disabled"
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_faults_close_the_socket(emulator: EmulatorServer, client: AsyncOpenAI) -> None:
    async with connect(client) as s:
        await s.next("session.created")
        session_id = snapshot(emulator)["id"]
        async with httpx.AsyncClient(timeout=5) as http:
            expired = await http.post(f"{emulator.base_url}/_emulator/calls/{session_id}/expire")
        assert expired.json()["ended_reason"] == "session_expired"
        error = await s.next("error")
        assert error.error.code == "session_expired"
        await asyncio.wait_for(asyncio.shield(s._reader), 5)
        assert s.closed is not None and s.closed.rcvd is not None
        assert s.closed.rcvd.code == 1001
