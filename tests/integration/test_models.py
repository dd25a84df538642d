"""The model a room runs on, end to end: a deprecated model is reported once at start and in
``/status`` and still works; ``reasoning_effort`` reaches a reasoning model's session and is
refused for a model without reasoning; the session's stored prompt and tracing arrive as sent."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from tests.support.dispatch_harness import serve
from tests.support.env import BridgeSettings
from tests.support.room_harness import Human, humans
from tests.support.room_worker import call_of, call_ready, room_name, wait_for, worker

pytestmark = pytest.mark.timeout(120)

WARNING = re.compile(
    r"model 'gpt-realtime' is deprecated: OpenAI shuts it down on 2027-01-20 "
    r"\(in \d+ days\); use 'gpt-realtime-2.1'"
)


async def one_answer(alice: Human, agent: str) -> None:
    await alice.say(1.0, pause=0.7)
    await alice.wait_until(lambda: len(alice.final_transcripts(agent)) >= 1, timeout=30)


async def test_a_deprecated_model_warns_once_and_still_works(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    known = set(emulator.emulator.calls)
    room = room_name()
    async with serve(
        livekit_server,
        emulator,
        reconcile_interval="1",
        model="gpt-realtime",
        transcription_model="gpt-transcribe",  # current: this test counts the model's line only
    ) as bridge:
        status = await bridge.status()
        assert status["models"]["model"]["status"] == "deprecated"
        assert status["models"]["model"]["shutdown"] == "2027-01-20"
        assert status["models"]["model"]["replacement"] == "gpt-realtime-2.1"
        assert status["models"]["transcription_model"]["status"] == "current"
        async with humans(livekit_server, room, "alice") as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            await one_answer(alice, f"room-bridge-{room}")
        (call_id,) = set(emulator.emulator.calls) - known
        session = emulator.emulator.calls[call_id].snapshot()["session"]
        assert session["model"] == "gpt-realtime" and "reasoning" not in session
        output = bridge.output()
    # One line, at start, in the HTTP process (the room workers say nothing of it).
    assert len(WARNING.findall(output)) == 1, output
    assert len(re.findall(r"is deprecated|was shut down", output)) == 1, output


async def test_reasoning_effort_reaches_the_session_of_a_reasoning_model(
    bridge_settings: BridgeSettings, emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    settings = bridge_settings(
        model="gpt-realtime-2.1-mini",
        reasoning_effort="high",
        parallel_tool_calls=False,
        prompt_id="pmpt_rooms",
        prompt_version="3",
        prompt_variables={"city": "Lyon"},
        tracing=True,
        tracing_metadata={"team": "blue"},
    )
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(settings, room) as bridge,
    ):
        await call_ready(bridge, "alice")
        call = call_of(emulator, bridge, "alice")
        session = call.snapshot()["session"]
        assert session["model"] == "gpt-realtime-2.1-mini"
        assert session["reasoning"] == {"effort": "high"}
        assert call.model.parallel_tool_calls is False
        assert session["prompt"] == {
            "id": "pmpt_rooms",
            "version": "3",
            "variables": {"city": "Lyon"},
        }
        assert session["tracing"] == {
            "workflow_name": "realtime-room-bridge",
            "group_id": room,
            "metadata": {"team": "blue"},
        }
        await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
        await one_answer(alice, bridge.identity)
        await wait_for(lambda: bridge.sessions["alice"].usage.responses >= 1)
        # The model's price row: the cost is known.
        cost = bridge.sessions["alice"].cost
        assert cost is not None and cost.spend.cost_usd is not None and cost.spend.cost_usd > 0


async def test_reasoning_effort_on_a_model_without_reasoning_stops_the_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    env |= {"BRIDGE_MODEL": "gpt-realtime-1.5", "BRIDGE_REASONING_EFFORT": "medium"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "serve"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert lines == [
        "room-bridge: invalid setting reasoning_effort (BRIDGE_REASONING_EFFORT): model "
        "'gpt-realtime-1.5' has no reasoning; reasoning_effort is taken by gpt-realtime-2.1, "
        "gpt-realtime-2.1-mini, gpt-realtime-2"
    ]
    assert out == b""
