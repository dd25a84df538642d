"""Tools end to end: a real livekit-server, the emulator (its ``tool_calls`` option makes the
model call a tool when a user turn contains a phrase) and SDK humans who chat and register RPC
methods. HTTP tools are served by a loopback server that verifies each signature with
openai-python's Standard Webhooks verifier."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from livekit import rtc
from prometheus_client import REGISTRY
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions, ToolCallScript
from bridge.emulator.session import EmulatedSession
from bridge.local.livekit_server import LiveKitServer
from bridge.room.shared import SHARED
from bridge.room.worker import RoomWorker
from bridge.service.eligibility import decide
from tests.support.env import EMULATOR_KEY, BridgeSettings
from tests.support.room_harness import humans
from tests.support.room_worker import call_of, call_ready, room_name, wait_for, worker
from tests.support.tool_server import ToolServer

pytestmark = pytest.mark.timeout(90)
# The short tests' own bound (they take ~5 s): a hang ends at the await that hung, with its
# traceback, instead of pytest-timeout's thread dump at 90 s.
HANG = 45.0

SECRET = "whsec_" + base64.b64encode(b"tool-secret-for-tests-0123").decode()
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"number": {"type": "string"}},
    "required": ["number"],
}
SCRIPTS = [
    ToolCallScript(when="order 42", name="get_order", arguments='{"number": "42"}'),
    ToolCallScript(when="order forty", name="get_order", arguments='{"number": 40}'),
    ToolCallScript(when="where am i", name="get_location", arguments="{}"),
    ToolCallScript(when="slowly", name="slow_report", arguments="{}"),
    ToolCallScript(when="broken", name="broken_report", arguments="{}"),
    ToolCallScript(when="everything", name="big_report", arguments="{}"),
    ToolCallScript(when="goodbye", name="end_call", arguments="{}"),
    ToolCallScript(when="please leave", name="leave", arguments="{}"),
    ToolCallScript(when="dripping", name="drip_report", arguments="{}"),
    ToolCallScript(when="strange", name="odd_report", arguments="{}"),
    ToolCallScript(when="weather", name="get_weather", arguments="{}"),
]


@pytest_asyncio.fixture
async def tool_server() -> AsyncIterator[ToolServer]:
    async with ToolServer(SECRET) as server:
        yield server


def tools(server: ToolServer) -> list[dict[str, Any]]:
    return [
        {"name": "get_order", "parameters": ORDER_SCHEMA, "url": f"{server.url}/orders"},
        {"name": "get_location", "description": "Where the caller is.", "rpc": "getLocation"},
        {"name": "slow_report", "url": f"{server.url}/slow", "timeout": 0.5},
        {"name": "broken_report", "url": f"{server.url}/broken"},
        {"name": "big_report", "url": f"{server.url}/big"},
        {"name": "end_call", "builtin": "end_call"},
        {"name": "leave", "builtin": "leave_room"},
        {"name": "drip_report", "url": f"{server.url}/drip", "timeout": 0.5},
        {"name": "odd_report", "url": f"{server.url}/badjson"},
        {"name": "get_weather", "rpc": "getWeather"},  # no human app registers it
    ]


def script(emulator: EmulatorServer) -> None:
    emulator.emulator.options = EmulatorOptions(
        api_key=SecretStr(EMULATOR_KEY), tool_calls=SCRIPTS, chars_per_second=40.0
    )


def outputs(call: EmulatedSession) -> list[str]:
    return [i["text"] for i in call.snapshot()["items"] if i["type"] == "function_call_output"]


def count(tool: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("bridge_tool_calls_total", {"tool": tool, "outcome": outcome})
    return value or 0.0


def timed(tool: str) -> float:
    return REGISTRY.get_sample_value("bridge_tool_seconds_count", {"tool": tool}) or 0.0


def one_line_per_call(caplog: pytest.LogCaptureFixture, calls: int) -> None:
    """One INFO line per tool call (tool, outcome, duration), never the arguments."""
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "bridge.room.tools.runner" and r.levelno == logging.INFO
    ]
    assert len(lines) == calls, lines
    assert all(re.fullmatch(r"tool \w+: \w+ in \d+\.\d{3} s", line) for line in lines), lines
    assert not any('"42"' in line or "number" in line for line in lines)


def signed_request_as_documented(tool_server: ToolServer, room: str) -> None:
    assert tool_server.rejected == 0  # every signature verified
    (request,) = tool_server.requests
    assert request["name"] == "get_order"
    assert request["arguments"] == {"number": "42"}
    assert request["room"] == room
    assert request["participant"] == {"identity": "alice", "name": "alice"}
    assert tool_server.headers[0]["webhook-id"] == f"msg_{request['call_id']}"


def failures_stayed_small(call: EmulatedSession, tool_server: ToolServer) -> None:
    # Nothing of the failing tool's body reaches the model.
    assert not any("secret=xyz" in text for text in outputs(call))
    # Invalid arguments never reached the tool.
    assert [r["arguments"] for r in tool_server.requests if r["name"] == "get_order"] == [
        {"number": "42"}
    ]


async def test_http_and_rpc_tools_and_their_failures(
    bridge_settings: BridgeSettings,
    livekit_server: LiveKitServer,
    emulator: EmulatorServer,
    tool_server: ToolServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.room.tools.runner")
    script(emulator)
    settings = bridge_settings(tools=tools(tool_server), tools_secret=SECRET)
    room = room_name()
    rpc_calls: list[rtc.RpcInvocationData] = []

    async def get_location(data: rtc.RpcInvocationData) -> str:
        rpc_calls.append(data)
        return json.dumps({"city": "Berlin"})

    ok_before, timed_before = count("get_order", "ok"), timed("get_order")
    async with humans(livekit_server, room, "alice") as (alice,), worker(settings, room) as bridge:
        alice.room.local_participant.register_rpc_method("getLocation", get_location)
        await call_ready(bridge, "alice")
        call = call_of(emulator, bridge, "alice")

        async def ask(text: str, n: int) -> str:
            """Chat ``text``; returns the agent's answer once it is in the room's transcript."""
            await alice.chat(text)
            await wait_for(lambda: len(outputs(call)) >= n, 20)
            await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= n, 20)
            return alice.final_transcripts(bridge.identity)[n - 1].text

        # An HTTP tool: validated arguments out, signed; its answer reaches the model and room.
        answer = await ask("Where is my order 42?", 1)
        assert "shipped on Monday" in outputs(call)[0]
        assert "shipped on Monday" in answer, answer
        signed_request_as_documented(tool_server, room)
        items = call.snapshot()["items"]
        kinds = [i["type"] for i in items]
        assert kinds.index("function_call") < kinds.index("function_call_output")
        assert any(i["text"] == 'get_order({"number": "42"})' for i in items)
        assert "thinking" in alice.states
        assert count("get_order", "ok") == ok_before + 1

        # An RPC tool: called on the human whose model asked, with the arguments as payload.
        answer = await ask("where am I right now", 2)
        (invocation,) = rpc_calls
        assert invocation.caller_identity == bridge.identity
        assert json.loads(invocation.payload) == {}
        assert "Berlin" in answer, answer

        # Failures: each gives the model a short error output, and the session carries on.
        failures = [
            ("is order forty late?", "invalid_arguments", "40 is not of type 'string'"),
            ("report slowly", "timeout", "did not answer within 0.5 s"),
            ("the broken report", "http_error", "HTTP 500"),
            ("tell me everything", "too_large", "larger than 16384 bytes"),
            # Each read is quick (a byte every 0.3 s), the answer is not: the timeout is total.
            ("is it dripping?", "timeout", "did not answer within 0.5 s"),
            ("a strange report", "invalid_answer", "not JSON"),
            ("what is the weather", "unsupported_method", "does not offer this tool"),
        ]
        for n, (text, outcome, words) in enumerate(failures, start=3):
            answer = await ask(text, n)
            output = json.loads(outputs(call)[n - 1])
            assert output["error"] == outcome, output
            assert words in output["message"], output
            assert outcome in answer
        failures_stayed_small(call, tool_server)
        # Two calls in one response: both outputs go back, then one response.create.
        creates = call.events_in["response.create"]
        answer = await ask("check order 42 and where am I", 10)
        assert "shipped on Monday" in answer and "Berlin" in answer, answer
        assert len(outputs(call)) == 11
        assert call.events_in["response.create"] == creates + 2  # the chat's and the tools'
        assert list(call.errors) == []  # every event valid both ways; no unknown call_id
        assert bridge.sessions["alice"].call_id == call.id  # same call all along
        await wait_for(lambda: alice.states[-1:] == ["listening"])
        assert timed("get_order") == timed_before + 3  # ok, invalid arguments, ok
        one_line_per_call(caplog, 11)


async def test_end_call_hangs_up_that_human_after_the_goodbye(
    bridge_settings: BridgeSettings,
    livekit_server: LiveKitServer,
    emulator: EmulatorServer,
    tool_server: ToolServer,
) -> None:
    script(emulator)
    settings = bridge_settings(tools=tools(tool_server), tools_secret=SECRET)
    room = room_name()
    async with (
        humans(livekit_server, room, "alice", "bob") as (alice, bob),
        worker(settings, room) as bridge,
    ):
        removed = asyncio.Event()
        heard_goodbye: list[bool] = []

        def on_disconnected(reason: rtc.DisconnectReason.ValueType) -> None:
            finals = alice.final_transcripts(bridge.identity)
            heard_goodbye.append(any("goodbye" in t.text for t in finals))
            removed.set()

        alice.room.on("disconnected", on_disconnected)
        await call_ready(bridge, "alice")
        await call_ready(bridge, "bob")
        bob_call = bridge.sessions["bob"].call_id
        assert bob_call is not None
        await alice.chat("That is all, goodbye!")
        await asyncio.wait_for(removed.wait(), 30)
        # The goodbye (the answer to end_call's output) was in the room before the hang-up.
        assert heard_goodbye == [True]
        await wait_for(lambda: "alice" not in bridge.sessions)
        # Only that human's call ended: bob's session and call go on.
        assert bridge.sessions["bob"].call_id == bob_call
        assert emulator.emulator.calls[bob_call].state == "active"
        # LiveKit tells the other participants of her removal on its own time.
        await wait_for(lambda: not bridge.room.remote_participants.get("alice"))
        await bob.chat("are you still there?")
        await bob.wait_until(lambda: bool(bob.final_transcripts(bridge.identity)), 20)
        # Alice's tool call and its output stayed in her call: none reached bob's.
        bob_items = emulator.emulator.calls[bob_call].snapshot()["items"]
        assert not [i for i in bob_items if i["type"].startswith("function_call")]


async def test_shared_mode_tools_act_for_whoever_asked(
    bridge_settings: BridgeSettings,
    livekit_server: LiveKitServer,
    emulator: EmulatorServer,
    tool_server: ToolServer,
) -> None:
    """One call for the room: a tool acts for the person whose turn the model answered, end_call
    is not offered, and a tool result is answered even under the ``addressed`` policy."""
    script(emulator)
    settings = bridge_settings(
        mode="shared",
        response_policy="addressed",
        tools=tools(tool_server),
        tools_secret=SECRET,
    )
    room = room_name()
    asked: list[str] = []  # whose app answered getLocation
    async with (
        humans(livekit_server, room, "alice", "bob") as (alice, bob),
        worker(settings, room) as bridge,
    ):
        for person, city in ((alice, "Berlin"), (bob, "Paris")):

            async def where(
                data: rtc.RpcInvocationData, who: str = person.identity, city: str = city
            ) -> str:
                asked.append(who)
                return json.dumps({"city": city})

            person.room.local_participant.register_rpc_method("getLocation", where)
        await wait_for(lambda: bridge.shared is not None and bridge.shared.call_id is not None)
        call = call_of(emulator, bridge, SHARED)
        offered = [t["name"] for t in call.model.session["tools"]]
        assert "end_call" not in offered and "leave" in offered  # it would remove a person

        def answers() -> list[str]:
            return [t.text for t in alice.final_transcripts(bridge.identity)]

        # Bob asks: the RPC runs in bob's app, and its result is answered (policy addressed).
        await bob.chat("Assistant, where am I?")
        await wait_for(lambda: len(outputs(call)) == 1, 20)
        await alice.wait_until(lambda: len(answers()) == 1, 20)
        assert asked == ["bob"]
        assert "Paris" in answers()[0], answers()
        # (its answer has finished, so the next chat cancels nothing that already ended)
        await wait_for(lambda: call.events_out["output_audio_buffer.stopped"] == 1, 20)
        # Alice asks next: the HTTP tool is told it is alice.
        await alice.chat("Assistant, where is my order 42?")
        await wait_for(lambda: len(outputs(call)) == 2, 20)
        await alice.wait_until(lambda: len(answers()) == 2, 20)
        assert "shipped on Monday" in answers()[1], answers()
        (request,) = tool_server.requests
        assert request["participant"] == {"identity": "alice", "name": "alice"}
        # Two chats addressed the agent, two tool results were answered; nothing else.
        assert call.events_in["response.create"] == 4
        assert list(call.errors) == []


async def test_leave_room_after_the_goodbye(
    bridge_settings: BridgeSettings,
    livekit_server: LiveKitServer,
    emulator: EmulatorServer,
    tool_server: ToolServer,
) -> None:
    script(emulator)
    settings = bridge_settings(tools=tools(tool_server), tools_secret=SECRET)
    room = room_name()
    async with (
        asyncio.timeout(HANG),
        humans(livekit_server, room, "alice") as (alice,),
        worker(settings, room) as bridge,
    ):
        await call_ready(bridge, "alice")
        call = call_of(emulator, bridge, "alice")
        await alice.chat("please leave us alone")
        reason = await asyncio.wait_for(bridge.wait(), 30)
        assert reason == "the model called leave_room"
        # The goodbye (the only spoken answer) had finished playing when the agent left.
        assert call.events_out["output_audio_buffer.stopped"] == 1
        await alice.wait_until(
            lambda: any("goodbye" in t.text for t in alice.final_transcripts(bridge.identity))
        )
        assert alice.room.isconnected()  # the human stays; only the agent leaves


async def test_room_metadata_narrows_the_tools(
    bridge_settings: BridgeSettings,
    livekit_server: LiveKitServer,
    emulator: EmulatorServer,
    tool_server: ToolServer,
) -> None:
    script(emulator)
    settings = bridge_settings(tools=tools(tool_server), tools_secret=SECRET)
    metadata = json.dumps({"ai": {"tools": ["get_order"]}})
    decision = decide(settings, "r", metadata)
    assert decision.eligible
    hostile = {"ai": {"tools": [{"name": "steal", "url": "http://169.254.169.254/"}]}}
    assert not decide(settings, "r", json.dumps(hostile)).eligible
    assert not decide(settings, "r", json.dumps({"ai": {"tools": ["steal"]}})).eligible
    room = room_name()
    async with humans(livekit_server, room, "alice") as (alice,):
        bridge = RoomWorker(settings, room, overrides=decision.overrides)
        await bridge.start()
        try:
            await call_ready(bridge, "alice")
            call = call_of(emulator, bridge, "alice")
            assert [t["name"] for t in call.model.session["tools"]] == ["get_order"]
            # The model cannot call a tool the room did not select.
            await alice.chat("where am I?")
            await alice.wait_until(lambda: bool(alice.final_transcripts(bridge.identity)), 20)
            assert outputs(call) == []
        finally:
            await bridge.aclose()


async def test_barge_in_records_the_result_without_resuming(
    bridge_settings: BridgeSettings,
    livekit_server: LiveKitServer,
    emulator: EmulatorServer,
    tool_server: ToolServer,
) -> None:
    script(emulator)
    tool_server.slow_seconds = 2.5
    declared = tools(tool_server)
    declared[2] = {**declared[2], "timeout": 6.0}
    settings = bridge_settings(tools=declared, tools_secret=SECRET)
    room = room_name()
    async with (
        asyncio.timeout(HANG),
        humans(livekit_server, room, "alice") as (alice,),
        worker(settings, room) as bridge,
    ):
        await call_ready(bridge, "alice")
        call = call_of(emulator, bridge, "alice")
        await alice.chat("report slowly please")
        await wait_for(lambda: bool(tool_server.requests), 15)
        # While the tool runs the agent is thinking (response.done came, no answer yet), and
        # says which tool it is running (the page shows it).
        await alice.wait_until(lambda: alice.states[-1:] == ["thinking"], 5)
        await alice.wait_until(lambda: alice.tools[-1:] == ["slow_report"], 5)
        # The human speaks over the wait: their turn is answered, the tool's is not resumed.
        await alice.say(0.8, pause=0.7)
        await wait_for(lambda: len(outputs(call)) == 1, 15)
        await alice.wait_until(lambda: bool(alice.final_transcripts(bridge.identity)), 20)
        await wait_for(lambda: alice.states[-1:] == ["listening"], 15)
        assert "too late" in outputs(call)[0]  # recorded in the conversation
        await alice.wait_until(lambda: "bridge.tool" not in alice.agent_attributes(), 5)
        # Only the chat's response.create: the human's turn was answered (by the service's
        # VAD), the tool's result was not answered on its own.
        assert call.events_in["response.create"] == 1
