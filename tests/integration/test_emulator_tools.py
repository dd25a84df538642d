"""The emulator's tool support against our RealtimeCall: strict tool sessions, the function-call
event sequence of the ``tool_calls`` option, and outputs reaching the model."""

from __future__ import annotations

import base64

from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions, ToolCallScript
from bridge.realtime import events as ev
from tests.support.calls import recorded_call
from tests.support.env import EMULATOR_KEY

SECRET = "whsec_" + base64.b64encode(b"e" * 32).decode()
TOOLS = [
    {
        "name": "get_order",
        "parameters": {"type": "object", "properties": {"number": {"type": "string"}}},
        "url": "http://127.0.0.1:9/orders",
    }
]
MCP = [{"label": "crm", "url": "http://127.0.0.1:9/mcp", "allowed_tools": ["find"]}]


async def test_function_call_sequence_and_output(emulator: EmulatorServer) -> None:
    emulator.emulator.options = EmulatorOptions(
        api_key=SecretStr(EMULATOR_KEY),
        tool_calls=[ToolCallScript(when="order", name="get_order", arguments='{"number":"7"}')],
    )
    async with recorded_call(emulator, tools=TOOLS, mcp_servers=MCP, tools_secret=SECRET) as (
        call,
        rec,
        _,
    ):
        tools = call.session["tools"]
        assert [t["type"] for t in tools] == ["function", "mcp"]
        assert tools[1]["server_label"] == "crm" and tools[1]["require_approval"] == "never"
        # Strict like the service: a field the schema does not have is refused.
        bad = {"type": "realtime", "tools": [{**tools[0], "strict": True}]}
        call.send(ev.SessionUpdate(session=bad))
        error = await rec.wait_for("error")
        assert isinstance(error, ev.ErrorEvent)
        assert error.error.param == "session.tools[0].strict"

        call.send(ev.ConversationItemCreate.user_text("Where is my order?"))
        call.send(ev.ResponseCreate())
        done = await rec.wait_for("response.done")
        assert isinstance(done, ev.ResponseDone)
        (fc,) = done.response.function_calls()
        assert (fc.name, fc.arguments) == ("get_order", '{"number":"7"}')
        sequence = [
            "response.created",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.done",
        ]
        types = rec.types()
        positions = [types.index(t) for t in sequence]
        assert positions == sorted(positions), types
        added = next(e for e in rec.events if isinstance(e, ev.OutputItemAdded))
        assert added.item["type"] == "function_call" and added.item["status"] == "in_progress"
        deltas = [e for e in rec.events if isinstance(e, ev.FunctionCallArgumentsDelta)]
        assert "".join(d.delta for d in deltas) == fc.arguments
        assert all(d.call_id == fc.call_id for d in deltas)
        assert "output_audio_buffer.started" not in types

        # An output must answer a call in the conversation.
        call.send(ev.ConversationItemCreate.function_output("call_unknown", "x"))
        error = await rec.wait_for("error", 2)
        assert isinstance(error, ev.ErrorEvent) and error.error.param == "item.call_id"
        call.send(ev.ConversationItemCreate.function_output(fc.call_id, '{"status":"packed"}'))
        call.send(ev.ResponseCreate())
        said = await rec.wait_for("response.output_audio_transcript.done")
        assert isinstance(said, ev.AudioTranscriptDone)
        assert said.transcript == 'Answer 2. The tool said: {"status":"packed"}.'
        assert call.call_id is not None
        emulated = emulator.emulator.calls[call.call_id]
        items = [(i["type"], i["text"]) for i in emulated.snapshot()["items"]]
        assert ("function_call", 'get_order({"number":"7"})') in items
        assert ("function_call_output", '{"status":"packed"}') in items
        assert not [e for e in emulated.errors if "emulator sent an invalid event" in e]
