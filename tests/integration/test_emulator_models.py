"""The emulator per model, driven by OpenAI's own client: reasoning-only fields refused for a
model without reasoning (the API's error shape), taken by a reasoning model; tracing fixed once
set; parallel tool calls; server VAD's idle timeout; per-minute transcription usage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions, ToolCallScript
from tests.support.env import EMULATOR_KEY
from tests.support.openai_ws import WsSession, pcm24, quiet24, ws_session

pytestmark = pytest.mark.timeout(60)


@pytest_asyncio.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[AsyncOpenAI]:
    emulator.emulator.options.answer_delay_ms = 50
    emulator.emulator.options.generation_speed = 4.0
    async with AsyncOpenAI(api_key=EMULATOR_KEY, base_url=emulator.base_url) as openai:
        yield openai


async def update(s: WsSession, **session: Any) -> Any:
    await s.connection.session.update(session=cast(Any, {"type": "realtime", **session}))
    return await s.next("session.updated")


async def test_reasoning_fields_are_refused_for_a_model_without_reasoning(
    emulator: EmulatorServer, client: AsyncOpenAI
) -> None:
    async with ws_session(client, "gpt-realtime-1.5") as s:
        created = await s.next("session.created")
        assert created.session.model == "gpt-realtime-1.5" and created.session.reasoning is None
        for field, value in (("reasoning", {"effort": "low"}), ("parallel_tool_calls", True)):
            await s.connection.session.update(session=cast(Any, {"type": "realtime", field: value}))
            error = await s.next("error")
            assert error.error.type == "invalid_request_error"
            assert error.error.code == "unsupported_parameter"
            assert error.error.param == f"session.{field}"
            assert error.error.message == (
                f"Unsupported parameter: 'session.{field}' is not supported with this model."
            )
        await s.connection.response.create(response=cast(Any, {"reasoning": {"effort": "low"}}))
        error = await s.next("error")
        assert error.error.param == "response.reasoning"
        # The session goes on.
        updated = await update(s, instructions="Be brief.")
        assert updated.session.instructions == "Be brief."
    # Over HTTP too: a 400 with OpenAI's error object.
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(
            emulator.base_url + "/realtime/client_secrets",
            headers={"Authorization": f"Bearer {EMULATOR_KEY}"},
            json={"session": {"type": "realtime", "model": "gpt-realtime", "reasoning": {}}},
        )
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Unsupported parameter: 'session.reasoning' is not supported with this "
            "model.",
            "type": "invalid_request_error",
            "param": "session.reasoning",
            "code": "unsupported_parameter",
        }
    }


async def test_a_reasoning_model_takes_effort_and_tracing_is_fixed_once_set(
    emulator: EmulatorServer, client: AsyncOpenAI
) -> None:
    async with ws_session(client, "gpt-realtime-2.1") as s:
        created = await s.next("session.created")
        assert created.session.reasoning.effort == "low"  # the default a reasoning model reports
        updated = await update(s, reasoning={"effort": "xhigh"}, parallel_tool_calls=False)
        assert updated.session.reasoning.effort == "xhigh"
        # parallel_tool_calls is a request field: the reported session has none (checked by the
        # strict parse of every event), the model keeps it.
        # The newest active call: an earlier test's call may still be ending (shared emulator).
        call = [c for c in emulator.emulator.calls.values() if c.state == "active"][-1]
        assert call.model.parallel_tool_calls is False
        tracing = {"workflow_name": "rooms", "group_id": "r1", "metadata": {"team": "blue"}}
        updated = await update(s, tracing=tracing, prompt={"id": "pmpt_1", "variables": {"a": "b"}})
        assert updated.session.tracing.group_id == "r1"
        assert updated.session.prompt.id == "pmpt_1"
        assert (await update(s, tracing=tracing)).session.tracing.workflow_name == "rooms"
        await s.connection.session.update(
            session=cast(Any, {"type": "realtime", "tracing": {**tracing, "group_id": "r2"}})
        )
        error = await s.next("error")
        assert error.error.param == "session.tracing"


async def test_parallel_tool_calls_false_calls_one_tool_at_a_time(
    emulator: EmulatorServer, client: AsyncOpenAI
) -> None:
    emulator.emulator.options = EmulatorOptions(
        api_key=SecretStr(EMULATOR_KEY),
        answer_delay_ms=50,
        generation_speed=4.0,
        tool_calls=[
            ToolCallScript(when="weather", name="weather", arguments="{}"),
            ToolCallScript(when="time", name="clock", arguments="{}"),
        ],
    )
    tools = [
        {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}
        for name in ("weather", "clock")
    ]

    async def calls_made(parallel: bool | None) -> int:
        async with ws_session(client, "gpt-realtime-2.1") as s:
            await s.next("session.created")
            extra = {} if parallel is None else {"parallel_tool_calls": parallel}
            await update(s, tools=tools, **extra)
            await s.connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "weather and time, please"}],
                }
            )
            await s.connection.response.create()
            done = await s.next("response.done")
            return sum(1 for item in done.response.output if item.type == "function_call")

    assert await calls_made(None) == 2
    assert await calls_made(True) == 2
    assert await calls_made(False) == 1


async def test_idle_timeout_makes_the_model_take_the_turn(
    emulator: EmulatorServer, client: AsyncOpenAI
) -> None:
    emulator.emulator.options.chars_per_second = 60.0  # short answers
    async with ws_session(client, "gpt-realtime-2.1") as s:
        await s.next("session.created")
        vad = {"type": "server_vad", "idle_timeout_ms": 600, "silence_duration_ms": 300}
        await update(s, audio={"input": {"turn_detection": vad}})

        async def quiet() -> None:
            while True:
                await s.append(quiet24(0.1), real_time=True)

        await s.append(pcm24(0.8), real_time=True)
        feeding = asyncio.create_task(quiet())
        try:
            done = await s.next("response.done", timeout=15)
            assert done.response.status == "completed"
            timeout = await s.next("input_audio_buffer.timeout_triggered", timeout=15)
            committed = await s.next("input_audio_buffer.committed")
            answer = await s.next("response.created")
        finally:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
        assert timeout.audio_end_ms - timeout.audio_start_ms == 600
        assert committed.item_id == timeout.item_id
        types = s.types()
        assert types.index("input_audio_buffer.timeout_triggered") < types.index(
            "input_audio_buffer.committed", types.index("input_audio_buffer.timeout_triggered")
        )
        assert answer.response.status == "in_progress"
        # The silence joined the conversation as a user audio item, and was not transcribed.
        (item,) = [
            e.item
            for e in s.events
            if e.type == "conversation.item.added" and e.item.id == timeout.item_id
        ]
        assert item.role == "user" and item.content[0].type == "input_audio"
        assert not [
            e
            for e in s.events
            if getattr(e, "item_id", None) == timeout.item_id
            and e.type.startswith("conversation.item.input_audio_transcription")
        ]


async def test_transcription_billed_by_the_minute(
    emulator: EmulatorServer, client: AsyncOpenAI
) -> None:
    async with ws_session(client, "gpt-realtime-2.1") as s:
        await s.next("session.created")
        await update(
            s,
            audio={"input": {"turn_detection": None, "transcription": {"model": "gpt-transcribe"}}},
        )
        await s.append(pcm24(1.5))
        await s.connection.input_audio_buffer.commit()
        done = await s.next("conversation.item.input_audio_transcription.completed")
        assert done.usage.type == "duration" and done.usage.seconds == pytest.approx(1.5)
