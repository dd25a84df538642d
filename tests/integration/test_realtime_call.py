"""RealtimeCall against the emulator over real WebRTC on loopback: no mocks across the wire."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import av
import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.schema import SERVER_EVENTS, check_server_event
from bridge.realtime import (
    RealtimeAPIError,
    RealtimeCall,
    RealtimeClosedError,
    RealtimeTimeoutError,
    build_session,
    mint_client_secret,
)
from bridge.realtime.events import (
    ConversationItemCreate,
    ConversationItemDelete,
    ErrorEvent,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    ItemDeleted,
    ResponseCreate,
    ResponseCreated,
    ResponseDone,
    SessionUpdated,
    UnknownEvent,
)
from bridge.realtime.tracks import PcmAudioTrack, VideoFrameTrack
from tests.support.calls import Recorder, recorded_call, settings_for
from tests.support.emulator_process import emulator_process
from tests.support.env import test_settings
from tests.support.signals import silence, tone
from tests.support.speaker import play
from tests.support.waits import eventually

pytestmark = pytest.mark.timeout(60)


async def speak(track: PcmAudioTrack, seconds: float, freq: float = 440.0) -> None:
    await play(track.push, tone(freq, seconds))


async def test_utterance_gets_vad_transcripts_and_audio_answer(emulator: EmulatorServer) -> None:
    async with recorded_call(emulator) as (call, rec, track):
        assert call.call_id and call.call_id.startswith("rtc_")
        assert call.session["audio"]["input"]["transcription"]["model"]
        await speak(track, 1.0)
        await play(track.push, silence(0.6))
        await rec.wait_for("output_audio_buffer.stopped")
        loud_during_answer = rec.loud_frames

    expected_order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "output_audio_buffer.started",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.done",
        "output_audio_buffer.stopped",
    ]
    types = rec.types()
    positions = [types.index(t) for t in expected_order]
    assert positions == sorted(positions), types
    transcript = next(
        e for e in rec.events if e.type == "conversation.item.input_audio_transcription.completed"
    )
    assert transcript.transcript.startswith("utterance 1, ")  # type: ignore[attr-defined]
    # The answer ("Answer 1. I heard: utterance 1, 1.0x s.") lasts ~2.5 s at 15 chars/s.
    assert loud_during_answer > 50, loud_during_answer
    snapshot = emulator.emulator.calls[call.call_id].snapshot()
    assert snapshot["state"] == "ended" and snapshot["ended_reason"] == "hangup"
    assert snapshot["audio_in_s"] > 1.5
    assert snapshot["errors"] == []


async def test_barge_in_cancels_and_clears(emulator: EmulatorServer) -> None:
    emulator.emulator.options.generation_speed = 0.5  # still generating when we interrupt
    async with recorded_call(emulator) as (_call, rec, track):
        await speak(track, 0.6)
        await play(track.push, silence(0.6))
        await rec.wait_for("output_audio_buffer.started")
        await asyncio.sleep(0.5)
        await speak(track, 0.3, freq=300.0)
        cleared = await rec.wait_for("output_audio_buffer.cleared")
        done = await rec.wait_for("response.done")
        assert isinstance(done, ResponseDone)
        assert done.response.status == "cancelled"
        assert done.response.reason == "turn_detected"
        truncated = await rec.wait_for("conversation.item.truncated")
        assert 300 <= truncated.audio_end_ms <= 2000  # type: ignore[attr-defined]
        assert cleared.response_id == done.response.id  # type: ignore[attr-defined]
        # Audio stops at once: a few frames in flight at most after the clear.
        loud_at_clear = rec.loud_frames
        await asyncio.sleep(0.4)
        assert rec.loud_frames - loud_at_clear <= 8
        assert "output_audio_buffer.stopped" not in rec.types()


async def test_text_turn_and_manual_cancel(emulator: EmulatorServer) -> None:
    async with recorded_call(emulator) as (call, rec, _track):
        call.send(ConversationItemCreate.user_text("what is the weather"))
        call.send(ResponseCreate())
        delta = await rec.wait_for("response.output_audio_transcript.delta")
        call.cancel_response()
        done = await rec.wait_for("response.done")
        assert isinstance(done, ResponseDone)
        assert done.response.status == "cancelled"
        assert done.response.reason == "client_cancelled"
        await rec.wait_for("output_audio_buffer.cleared")
        assert delta.response_id == done.response.id  # type: ignore[attr-defined]
        item_added = next(e for e in rec.events if e.type == "conversation.item.added")
        assert item_added.item["content"][0]["text"] == "what is the weather"  # type: ignore[attr-defined]

        # The response's metadata comes back on response.created (and response.done).
        call.send(ResponseCreate(response={"output_modalities": ["text"], "metadata": {"n": "2"}}))
        text_done = await rec.wait_for("response.output_text.done")
        assert "what is the weather" in text_done.text  # type: ignore[attr-defined]
        created = [e for e in rec.events if isinstance(e, ResponseCreated)]
        assert (created[0].response.model_extra or {}).get("metadata") is None
        assert (created[-1].response.model_extra or {}).get("metadata") == {"n": "2"}


async def test_session_update_round_trip_and_invalid_event(emulator: EmulatorServer) -> None:
    async with recorded_call(emulator) as (call, rec, _track):
        call.update_session(instructions="Speak like a pirate.")
        updated = await rec.wait_for("session.updated")
        assert isinstance(updated, SessionUpdated)
        assert updated.session["instructions"] == "Speak like a pirate."
        assert updated.session["audio"]["output"]["voice"] == "alloy"  # merged, not replaced

        call.send({"type": "session.update", "session": {"type": "realtime", "voice": "ash"}})
        error = await rec.wait_for("error")
        assert isinstance(error, ErrorEvent)
        assert error.error.code == "invalid_event"
        assert "session.voice" in error.error.message
        call.send({"type": "no.such.event"})
        second = await rec.wait_for("error", count=2)
        assert isinstance(second, ErrorEvent) and second.error.code == "invalid_event"
        # The call is still alive after bad input.
        call.update_session(instructions="Back to normal.")
        await rec.wait_for("session.updated", count=2)


async def test_wrong_key_is_401_not_retryable_and_never_shown(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk-wrong-key-value-123456789"
    settings = settings_for(emulator, openai_api_key=SecretStr(secret))
    call = RealtimeCall(settings, session=build_session(settings))
    with pytest.raises(RealtimeAPIError) as info:
        await call.connect()
    assert info.value.status == 401
    assert info.value.code == "invalid_api_key"
    assert info.value.retryable is False
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert secret not in repr(call)
    assert secret not in caplog.text


@pytest.mark.parametrize("status", [429, 500])
async def test_refused_calls_are_retryable(emulator: EmulatorServer, status: int) -> None:
    emulator.emulator.options.fail_calls_status = status
    emulator.emulator.options.fail_calls_count = 1
    settings = settings_for(emulator)
    with pytest.raises(RealtimeAPIError) as info:
        async with RealtimeCall(settings, session=build_session(settings)):
            pass
    assert info.value.status == status and info.value.retryable
    # The next attempt goes through.
    async with RealtimeCall(settings, session=build_session(settings)) as call:
        assert call.call_id


async def test_answer_timeout_is_retryable() -> None:
    # A server that accepts the connection and never answers.
    writers: list[asyncio.StreamWriter] = []

    async def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = test_settings(openai_base_url=f"http://127.0.0.1:{port}/v1", connect_timeout=0.5)
        with pytest.raises(RealtimeTimeoutError) as info:
            async with RealtimeCall(settings, session=build_session(settings)):
                pass
        assert info.value.retryable
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_ephemeral_key_call(emulator: EmulatorServer) -> None:
    settings = settings_for(emulator)
    session = {**build_session(settings), "instructions": "ephemeral session"}
    secret = await mint_client_secret(settings, session, ttl_seconds=60)
    assert secret.value.get_secret_value().startswith("ek_")
    async with RealtimeCall(settings, api_key=secret.value) as call:
        assert call.session["instructions"] == "ephemeral session"


async def test_full_answer_shape_also_works(emulator: EmulatorServer) -> None:
    emulator.emulator.options.answer_shape = "full"
    async with recorded_call(emulator) as (call, rec, _track):
        call.update_session(instructions="x")
        await rec.wait_for("session.updated")


async def test_a_consumer_too_far_behind_ends_the_call_and_loses_no_event(
    emulator: EmulatorServer,
) -> None:
    """Events are control, not media: a full queue ends the call (the session then dials a new
    one) instead of dropping the oldest event. What was queued is still delivered, in order."""
    settings = settings_for(emulator)
    queued = 20
    call = RealtimeCall(settings, session=build_session(settings), event_queue_size=queued)
    async with call:
        for n in range(queued + 10):  # each answered by a session.updated; nothing read
            call.update_session(instructions=f"flood {n}")

        async def overflowed() -> bool:
            return call.closed_reason is not None

        await eventually(overflowed, timeout=10)
        assert call.closed_reason == f"model events overflowed: {queued} unread"
        with pytest.raises(RealtimeClosedError):
            call.update_session(instructions="too late")
        events = [event async for event in call.events()]  # ends: no hang
        assert [e.session["instructions"] for e in events if isinstance(e, SessionUpdated)] == [
            f"flood {n}" for n in range(queued)
        ]
        assert len(events) == queued
        assert call.dropped_events >= 1
        call_id = call.call_id or ""
    # Leaving hangs the call up at the service, as for any other end.
    assert emulator.emulator.calls[call_id].state != "active"


async def test_session_expiry_and_drop_end_the_call(emulator: EmulatorServer) -> None:
    emulator.emulator.options.max_session_s = 1.0
    async with recorded_call(emulator) as (call, rec, _track):
        error = await rec.wait_for("error", timeout=5)
        assert isinstance(error, ErrorEvent) and error.error.code == "session_expired"
        await asyncio.wait_for(_ended(call), 5)
    emulator.emulator.options.max_session_s = 3600
    emulator.emulator.options.drop_after_s = 0.5
    async with recorded_call(emulator) as (call, _rec, _track):
        await asyncio.wait_for(_ended(call), 10)
        assert call.closed_reason


async def _ended(call: RealtimeCall) -> None:
    async for _ in call.events():
        pass


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_twenty_concurrent_calls_leak_nothing(emulator: EmulatorServer) -> None:
    settings = settings_for(emulator)
    # Warm up once so lazily created process-wide resources are not counted as leaks.
    async with RealtimeCall(settings, session=build_session(settings)):
        pass
    await asyncio.sleep(0.2)
    tasks_before = len(asyncio.all_tasks())
    fds_before = _open_fds()
    known = set(emulator.emulator.calls)

    async def one() -> float:
        track = PcmAudioTrack()
        async with RealtimeCall(settings, session=build_session(settings), audio=track) as call:
            call.update_session(instructions="concurrent")
            await play(track.push, tone(440, 0.2))
            assert call.connect_seconds is not None
            seconds = call.connect_seconds
        track.stop()
        return seconds

    connect_times = await asyncio.gather(*(one() for _ in range(20)))
    assert len(connect_times) == 20
    await asyncio.sleep(0.5)  # let the emulator's side finish closing
    assert len(asyncio.all_tasks()) <= tasks_before
    assert _open_fds() <= fds_before + 2
    ours = [c for c in emulator.emulator.calls.values() if c.id not in known]
    assert len(ours) == 20
    assert [c.id for c in ours if c.state == "active"] == []


async def test_emulator_as_subprocess() -> None:
    async with emulator_process("sk-sub-123456", log_level="INFO") as emulator:
        settings = test_settings(
            openai_base_url=emulator.base_url, openai_api_key=SecretStr("sk-sub-123456")
        )
        track = PcmAudioTrack()
        async with RealtimeCall(settings, session=build_session(settings), audio=track) as call:
            recorder = Recorder(call)
            await speak(track, 0.5)
            await play(track.push, silence(0.6))
            await recorder.wait_for("response.done")
            await recorder.aclose()
        track.stop()
        async with httpx.AsyncClient() as client:
            calls = (await client.get(f"{emulator.base_url}/_emulator/calls")).json()
        assert calls[0]["state"] == "ended" and calls[0]["errors"] == []
        assert calls[0]["audio_in_s"] > 0.5
    # Leaving the block stopped it with SIGTERM and checked it exited 0.


async def test_video_goes_as_h264_and_is_counted(emulator: EmulatorServer) -> None:
    settings = settings_for(emulator)
    video = VideoFrameTrack()
    async with RealtimeCall(settings, session=build_session(settings), video=video) as call:
        image = np.zeros((720, 1280, 3), dtype=np.uint8)
        for i in range(4):
            image[:, :, 1] = 40 * i
            video.push(av.VideoFrame.from_ndarray(image, format="rgb24"))
            await asyncio.sleep(0.5)
        await asyncio.sleep(0.5)
        snapshot = emulator.emulator.calls[call.call_id or ""].snapshot()
    video.stop()
    assert snapshot["video"]["frames"] >= 3
    assert (snapshot["video"]["width"], snapshot["video"]["height"]) == (1280, 720)
    assert snapshot["video"]["fps"] <= 2.5


async def test_next_event_survives_timeouts(emulator: EmulatorServer) -> None:
    settings = settings_for(emulator)
    async with RealtimeCall(settings, session=build_session(settings)) as call:
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call.next_event(), 0.05)
        call.update_session(instructions="still here")
        event = await asyncio.wait_for(call.next_event(), 5)
        assert isinstance(event, SessionUpdated)
    assert await asyncio.wait_for(call.next_event(), 1) is None


async def test_without_vad_the_client_commits(emulator: EmulatorServer) -> None:
    async with recorded_call(emulator, turn_detection="none") as (call, rec, track):
        assert call.session["audio"]["input"]["turn_detection"] is None
        await speak(track, 0.6)
        await play(track.push, silence(0.3))
        assert "input_audio_buffer.speech_started" not in rec.types()
        call.send(InputAudioBufferCommit())
        await rec.wait_for("input_audio_buffer.committed")
        await rec.wait_for("conversation.item.input_audio_transcription.completed")
        assert "response.created" not in rec.types()
        call.send(ResponseCreate())
        done = await rec.wait_for("response.done")
        assert isinstance(done, ResponseDone) and done.response.status == "completed"


async def test_every_event_either_side_sends_matches_the_official_schema(
    emulator: EmulatorServer,
) -> None:
    """A conversation touching every feature; the emulator checks each client event against
    RealtimeClientEvent (unknown fields rejected) and each of its own against
    RealtimeServerEvent; here we check again what the client received."""
    emulator.emulator.options.generation_speed = 0.5
    async with recorded_call(emulator) as (call, rec, track):
        call.update_session(instructions="schema run")
        await speak(track, 0.6)
        await play(track.push, silence(0.6))
        await rec.wait_for("output_audio_buffer.started")
        await speak(track, 0.3, freq=300.0)  # barge-in
        await rec.wait_for("output_audio_buffer.cleared")
        emulator.emulator.options.generation_speed = 4.0
        await rec.wait_for("response.done", count=2)  # the barge-in was a turn of its own
        call.send(ConversationItemCreate.user_text("typed turn"))
        call.send(ResponseCreate(response={"output_modalities": ["text"]}))
        await rec.wait_for("response.output_text.done")
        call.send(ConversationItemCreate.user_text("another"))
        call.send(ResponseCreate())
        await rec.wait_for("response.output_audio_transcript.delta", count=1)
        call.cancel_response()
        await rec.wait_for("output_audio_buffer.cleared", count=2)
        call.send(InputAudioBufferClear())
        await rec.wait_for("input_audio_buffer.cleared")
        call_id = call.call_id or ""
    snapshot = emulator.emulator.calls[call_id].snapshot()
    assert snapshot["errors"] == []
    assert "error" not in snapshot["events_out"]
    for event in rec.events:
        data = event.model_dump(mode="json")
        if isinstance(event, UnknownEvent):
            assert data.pop("problem") is None  # ours, for events that did not parse
        SERVER_EVENTS.validate_python(data)
        assert check_server_event(data) is None, data["type"]
    assert len({e.type for e in rec.events}) >= 20


async def _items(emulator: EmulatorServer, call: RealtimeCall) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(f"{emulator.base_url}/_emulator/calls/{call.call_id}")
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def test_conversation_items_are_inspectable_inserted_and_deleted(
    emulator: EmulatorServer,
) -> None:
    async with recorded_call(emulator) as (call, rec, _track):
        first = ConversationItemCreate.user_text("[Alice] ship on Friday")
        first.item["id"] = "item_alice1"
        call.send(first)
        await rec.wait_for("conversation.item.done")
        call.send(ConversationItemCreate.user_text("[Bob] agreed"))
        await rec.wait_for("conversation.item.done", count=2)
        root = ConversationItemCreate.user_text("[meeting] Carol joined")
        root.previous_item_id = "root"
        call.send(root)
        await rec.wait_for("conversation.item.done", count=3)
        items = await _items(emulator, call)
        assert [i["text"] for i in items] == [
            "[meeting] Carol joined",
            "[Alice] ship on Friday",
            "[Bob] agreed",
        ]
        assert {i["role"] for i in items} == {"user"}
        assert all(i["type"] == "message" for i in items)

        call.send(ConversationItemDelete(item_id="item_alice1"))
        deleted = await rec.wait_for("conversation.item.deleted")
        assert isinstance(deleted, ItemDeleted) and deleted.item_id == "item_alice1"
        assert [i["text"] for i in await _items(emulator, call)] == [
            "[meeting] Carol joined",
            "[Bob] agreed",
        ]

        call.send(ConversationItemDelete(item_id="item_nope"))
        error = await rec.wait_for("error")
        assert isinstance(error, ErrorEvent)
        assert error.error.code == "item_not_found"
        unknown_after = ConversationItemCreate.user_text("lost?")
        unknown_after.previous_item_id = "item_nope"
        call.send(unknown_after)
        await rec.wait_for("error", count=2)
        assert len(await _items(emulator, call)) == 2

        call.send(ResponseCreate())
        await rec.wait_for("response.done")
        items = await _items(emulator, call)
        assert items[-1]["role"] == "assistant"
        assert items[-1]["text"].startswith("Answer 1.")
