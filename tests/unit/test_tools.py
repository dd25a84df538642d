"""Tools: declarations in the settings, room selection, argument checks, signatures."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from livekit import rtc
from prometheus_client import REGISTRY
from pydantic import SecretStr

from bridge.aio import TaskSet
from bridge.emulator.schema import check_session
from bridge.realtime import RealtimeCall, build_session
from bridge.realtime import events as ev
from bridge.room.shared import without_end_call
from bridge.room.tools.http import Caller
from bridge.room.tools.outcome import ToolFailure
from bridge.room.tools.registry import Toolbox
from bridge.room.tools.rpc import MAX_RPC_PAYLOAD, call_rpc
from bridge.room.tools.runner import ToolRunner
from bridge.room.tools.signing import Signer
from bridge.service.eligibility import decide
from bridge.settings.config import (
    ConfigError,
    SessionOverrides,
    Settings,
    apply_overrides,
    load_settings,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
ORDER = {
    "name": "get_order",
    "description": "Look up an order by its number.",
    "parameters": {
        "type": "object",
        "properties": {"number": {"type": "string", "pattern": "^[0-9]+$"}},
        "required": ["number"],
        "additionalProperties": False,
    },
    "url": "https://tools.internal/orders",
}
LOCATION = {"name": "get_location", "rpc": "getLocation"}
END = {"name": "end_call", "builtin": "end_call"}

TOML = f"""
tools_secret = "{SECRET}"

[[tools]]
name = "get_order"
description = "Look up an order by its number."
parameters = {{ type = "object", properties = {{ number = {{ type = "string" }} }} }}
url = "https://tools.internal/orders"
timeout = 3

[[tools]]
name = "get_location"
description = "Where the caller is."
rpc = "getLocation"

[[tools]]
name = "hang_up"
builtin = "end_call"

[[mcp_servers]]
label = "crm"
url = "https://crm.internal/mcp"
headers = {{ Authorization = "Bearer ${{CRM_TOKEN}}" }}
allowed_tools = ["find_customer"]
"""


def settings(**kw: Any) -> Settings:
    return Settings(tools_secret=SecretStr(SECRET), **kw)


def test_tools_from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "crm-secret-token")
    path = tmp_path / "bridge.toml"
    path.write_text(TOML)
    loaded = load_settings(path)
    assert [t.name for t in loaded.tools] == ["get_order", "get_location", "hang_up"]
    assert [t.kind for t in loaded.tools] == ["http", "rpc", "builtin"]
    assert loaded.tools[0].timeout == 3
    server = loaded.mcp_servers[0]
    assert server.definition()["headers"] == {"Authorization": "Bearer crm-secret-token"}
    assert "crm-secret-token" not in repr(loaded)
    session = build_session(loaded)
    assert [t.get("name") or t.get("server_label") for t in session["tools"]] == [
        "get_order",
        "get_location",
        "hang_up",
        "crm",
    ]
    assert session["tools"][3]["require_approval"] == "never"
    assert session["tool_choice"] == "auto"
    # The emulator is as strict as the service: the session passes its schema check.
    assert check_session(session) is None


def test_tools_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TOOLS", json.dumps([ORDER, LOCATION]))
    monkeypatch.setenv("BRIDGE_TOOLS_SECRET", SECRET)
    monkeypatch.setenv("BRIDGE_TOOL_CHOICE", "get_location")
    loaded = load_settings()
    assert [t.name for t in loaded.tools] == ["get_order", "get_location"]
    assert build_session(loaded)["tool_choice"] == {"type": "function", "name": "get_location"}


def test_each_mistake_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [
        {**ORDER, "rpc": "orders"},  # two targets
        {"name": "x y", "builtin": "end_call"},  # bad name
        {"name": "get_web", "url": "ftp://example.test"},  # bad URL
        {"name": "bad_schema", "builtin": "leave_room", "parameters": {"type": "nonsense"}},
        {"name": "nope", "builtin": "reboot"},
    ]
    monkeypatch.setenv("BRIDGE_TOOLS", json.dumps(bad))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert len(lines) == 5, lines
    assert all(line.startswith("invalid setting tools[") for line in lines)
    assert "exactly one of url, rpc, builtin" in lines[0]
    assert "tools[1].name" in lines[1]
    assert "tools[2].url" in lines[2]
    assert "not a valid JSON Schema" in lines[3]
    assert "tools[4].builtin" in lines[4]


def test_whole_declaration_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TOOLS", json.dumps([ORDER, ORDER]))
    monkeypatch.setenv("BRIDGE_TOOL_CHOICE", "get_weather")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert any("'get_order' is declared twice" in line for line in lines)
    assert any("need tools_secret" in line for line in lines)
    assert any("tool_choice 'get_weather'" in line for line in lines)


@pytest.mark.parametrize("value", ["plain-secret", "whsec_!!!", "whsec_" + "a" * 8])
def test_tools_secret_form(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BRIDGE_TOOLS_SECRET", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "tools_secret (BRIDGE_TOOLS_SECRET)" in str(caught.value)
    assert value not in str(caught.value)


def test_mcp_header_naming_a_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    server = {"label": "crm", "url": "https://crm.test/mcp", "headers": {"x": "${NO_SUCH_TOKEN}"}}
    monkeypatch.setenv("BRIDGE_MCP_SERVERS", json.dumps([server]))
    with pytest.raises(ConfigError, match=r"NO_SUCH_TOKEN\}, which is not set"):
        load_settings()


def test_rooms_select_but_never_define_tools() -> None:
    base = settings(tools=[ORDER, LOCATION, END], tool_choice="get_location")
    narrowed = apply_overrides(base, SessionOverrides(tools=["get_order"]))
    assert [t.name for t in narrowed.tools] == ["get_order"]
    assert narrowed.tool_choice == "auto"  # the chosen tool is no longer there
    assert apply_overrides(base, SessionOverrides(tools=[])).tools == []
    with pytest.raises(ValueError, match="'get_weather' is not a configured tool"):
        apply_overrides(base, SessionOverrides(tools=["get_weather"]))
    # Metadata: a name selects; an unknown name or a definition skips the room.
    meta = {"ai": {"tools": ["get_location"]}}
    decision = decide(base, "r", json.dumps(meta))
    assert decision.eligible and decision.overrides is not None
    assert decision.overrides.tools == ["get_location"]
    for hostile in (
        {"ai": {"tools": ["get_weather"]}},
        {"ai": {"tools": [{"name": "x", "url": "http://169.254.169.254/"}]}},
        {"ai": {"tools_secret": "whsec_x"}},
    ):
        decision = decide(base, "r", json.dumps(hostile))
        assert not decision.eligible, hostile
        assert "invalid 'ai' metadata" in decision.reason


def test_arguments_are_validated_with_the_schema() -> None:
    box = Toolbox(settings(tools=[ORDER]))
    tool = box.get("get_order")
    assert box.arguments(tool, '{"number": "42"}') == {"number": "42"}
    for text, why in [
        ('{"number": 42}', "42 is not of type 'string'"),
        ('{"number": "4x"}', "does not match"),
        ("{}", "'number' is a required property"),
        ('{"number": "1", "more": 1}', "Additional properties"),
        ("{not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
    ]:
        with pytest.raises(ToolFailure) as caught:
            box.arguments(tool, text)
        assert caught.value.outcome == "invalid_arguments"
        assert why in caught.value.message, (text, caught.value.message)
    with pytest.raises(ToolFailure) as unknown:
        box.get("get_weather")
    assert unknown.value.outcome == "unknown_tool"


def test_signature_verifies_with_an_independent_implementation() -> None:
    """openai-python's own Standard Webhooks verifier (not the library we sign with)."""
    body = json.dumps({"name": "get_order", "arguments": {"number": "42"}}).encode()
    headers = Signer(SecretStr(SECRET)).headers("msg_call_1", body)
    assert headers["webhook-id"] == "msg_call_1"
    assert headers["webhook-signature"].startswith("v1,")
    verifier = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9").webhooks
    verifier.verify_signature(body, headers, secret=SECRET)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verifier.verify_signature(body + b" ", headers, secret=SECRET)
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verifier.verify_signature(body, headers, secret=other)


def test_only_completed_calls_run() -> None:
    call = {
        "type": "function_call",
        "id": "item_1",
        "call_id": "call_1",
        "name": "get_order",
        "arguments": "{}",
        "status": "completed",
    }
    done = ev.parse_server_event(
        {"type": "response.done", "response": {"id": "r", "status": "completed", "output": [call]}}
    )
    assert isinstance(done, ev.ResponseDone)
    assert [c.call_id for c in done.response.function_calls()] == ["call_1"]
    for status, item_status in [("cancelled", "completed"), ("completed", "incomplete")]:
        response = {"id": "r", "status": status, "output": [{**call, "status": item_status}]}
        parsed = ev.parse_server_event({"type": "response.done", "response": response})
        assert isinstance(parsed, ev.ResponseDone)
        assert parsed.response.function_calls() == []


# ---- the runner, with a fake model call and a fake app on the other end of RPC -----------------

WHERE = {
    "name": "where_is",
    "parameters": {"type": "object", "properties": {"place": {"type": "string"}}},
    "rpc": "whereIs",
}


class FakeApp:
    """The agent's local participant as RPC sees it: each call waits until the test answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (destination, payload)
        self.answers: list[asyncio.Future[str]] = []
        self.arrived = asyncio.Event()

    async def perform_rpc(
        self, *, destination_identity: str, method: str, payload: str, response_timeout: float
    ) -> str:
        self.calls.append((destination_identity, payload))
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.answers.append(answer)
        self.arrived.set()
        return await answer


class FakeCall:
    def __init__(self) -> None:
        self.sent: list[ev.ClientEvent] = []

    def send(self, event: ev.ClientEvent) -> None:
        self.sent.append(event)

    def kinds(self) -> list[str]:
        return [str(e.model_dump()["type"]) for e in self.sent]


def calling(response_id: str, call_id: str, arguments: str) -> ev.Response:
    item = {
        "type": "function_call",
        "id": f"item_{call_id}",
        "call_id": call_id,
        "name": "where_is",
        "arguments": arguments,
        "status": "completed",
    }
    return ev.Response(id=response_id, status="completed", output=[item])


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_overlapping_batches_answer_together_after_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The human speaks over a running tool and their new turn needs a tool too: the first batch
    finishing must not answer (nor stop being busy) while the second still runs."""
    app, call, tasks = FakeApp(), FakeCall(), TaskSet("test")
    thinking: list[bool] = []
    runner = ToolRunner(
        settings=settings(tools=[WHERE]),
        participant=cast(rtc.LocalParticipant, app),
        room="r",
        caller=lambda: Caller("alice", "Alice"),
        tasks=tasks,
        actions=None,
        on_thinking=lambda: thinking.append(True),
        on_running=lambda names: None,
        playout=None,
        extra={},
    )
    seconds = REGISTRY.get_sample_value("bridge_tool_seconds_count", {"tool": "where_is"}) or 0.0
    runner.attach(cast(RealtimeCall, call))
    try:
        with caplog.at_level(logging.INFO, logger="bridge.room.tools.runner"):
            runner.response_created("r1")
            runner.response_done(calling("r1", "call_1", '{"place": "Zanzibar-7781"}'))
            await asyncio.wait_for(app.arrived.wait(), 5)
            runner.barge_in()  # the human speaks; their turn is answered with a new tool call
            app.arrived.clear()
            runner.response_created("r2")
            runner.response_done(calling("r2", "call_2", '{"place": "Zanzibar-7782"}'))
            await asyncio.wait_for(app.arrived.wait(), 5)
            app.answers[0].set_result('{"city": "Berlin"}')
            await settle()
            assert runner.busy  # the second batch still runs
            assert call.kinds() == []  # nothing goes back before it is done
            app.answers[1].set_result('{"city": "Paris"}')
            await settle()
        assert call.kinds() == ["conversation.item.create"] * 2 + ["response.create"]
        outputs = [cast(ev.ConversationItemCreate, e).item["call_id"] for e in call.sent[:2]]
        assert sorted(outputs) == ["call_1", "call_2"]
        assert [who for who, _ in app.calls] == ["alice", "alice"]
        busy_until_created = runner.busy  # until the answer's response.created
        runner.response_created("r3")
        assert (busy_until_created, runner.busy) == (True, False)
        # One INFO line per call, with tool, outcome and duration, never the arguments.
        lines = [r for r in caplog.records if r.levelno == logging.INFO]
        assert len(lines) == 2
        for record in lines:
            assert re.fullmatch(r"tool where_is: ok in \d+\.\d{3} s", record.getMessage())
            assert "Zanzibar" not in str(record.__dict__)
        after = REGISTRY.get_sample_value("bridge_tool_seconds_count", {"tool": "where_is"})
        assert after == seconds + 2
    finally:
        await runner.aclose()
        await tasks.aclose()


async def test_shared_mode_without_a_caller_says_so() -> None:
    """No one can be named (shared mode, no attributed turn): an RPC tool is not called."""
    app, call, tasks = FakeApp(), FakeCall(), TaskSet("test")
    runner = ToolRunner(
        settings=settings(tools=[WHERE]),
        participant=cast(rtc.LocalParticipant, app),
        room="r",
        caller=lambda: None,
        tasks=tasks,
        actions=None,
        on_thinking=lambda: None,
        on_running=lambda names: None,
        playout=None,
        extra={},
    )
    runner.attach(cast(RealtimeCall, call))
    try:
        runner.response_done(calling("r1", "call_1", "{}"))
        for _ in range(50):
            if call.sent:
                break
            await asyncio.sleep(0.01)
        output = json.loads(cast(ev.ConversationItemCreate, call.sent[0]).item["output"])
        assert output["error"] == "not_available"
        assert app.calls == []
    finally:
        await runner.aclose()
        await tasks.aclose()


async def test_rpc_arguments_over_the_limit_are_refused_before_sending() -> None:
    app = FakeApp()
    participant = cast(rtc.LocalParticipant, app)
    with pytest.raises(ToolFailure) as caught:
        await call_rpc(participant, "alice", "whereIs", {"x": "a" * MAX_RPC_PAYLOAD}, 1.0)
    assert caught.value.outcome == "too_large"
    assert "15360 bytes" in caught.value.message
    assert app.calls == []  # never sent


def test_shared_mode_does_not_offer_end_call() -> None:
    base = settings(tools=[ORDER, END], tool_choice="end_call")
    shared = without_end_call(base)
    assert [t.name for t in shared.tools] == ["get_order"]
    assert shared.tool_choice == "auto"
    plain = settings(tools=[ORDER])
    assert without_end_call(plain) is plain
