"""Traces end to end: Jaeger (the real binary, on loopback), livekit-server, the emulator and
``serve`` with a worker process exporting to it; an SDK human dispatches the agent with their
token, speaks one turn that makes the model call an HTTP tool, and the trace is read back from
Jaeger's query API:

- one trace from LiveKit's job (in serve's HTTP process) through the join into the worker
  process: agent job -> join -> room -> session -> call -> turn -> {response, tool call};
- the turn's timings agree with what the human measured: their speech's length and the
  answer's length within 20 ms (each measured on one leg: LiveKit's delay cancels), and the
  turn's latency (speech end -> first answer audio handed to the room) below what the human
  heard by no more than LiveKit's two legs;
- the tool span inside the turn, with its name and outcome and no argument values;
- no transcript or chat text (``trace_content`` is off), no key, secret or token anywhere.

And a LiveKit webhook that brings the agent in (serve's HTTP process) is one trace with the
room, session and call it led to in the worker process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from livekit import api
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions, ToolCallScript
from bridge.local.jaeger import Jaeger, JaegerQuery, ensure_binary
from bridge.local.livekit_server import LiveKitServer
from tests.support.browser import headless_chromium
from tests.support.dispatch_harness import ServeProcess, listeners, livekit_with_webhooks, serve
from tests.support.env import EMULATOR_KEY
from tests.support.room_harness import Human
from tests.support.signals import SAMPLE_RATE
from tests.support.tool_server import ToolServer
from tests.support.trace_screenshot import (
    SCREENSHOT,
    SCREENSHOT_SOURCES,
    screenshot_is_current,
    trace_digest,
)

pytestmark = pytest.mark.timeout(150)

SERVICE = "realtime-room-bridge"
SECRET = "whsec_" + base64.b64encode(b"trace-tool-secret-0123456789").decode()
SPEECH_SECONDS = 1.0
# The answer as the human heard it: the bridge times its own output to the sample, but the
# human's receiver (WebRTC's NetEq) may stretch or squeeze what it plays out by a few pitch
# periods to keep its jitter buffer (seen: 20.1 ms shorter, on a loaded machine).
TOLERANCE = 0.040
# The human's speech crosses the human's own sending (paced by this busy test process) and
# LiveKit's receive path (WebRTC's NetEq stretches a stream to keep its jitter buffer): what
# reaches the bridge was 5 to 41 ms longer than the second sent on a loaded machine, 62 ms with
# another program keeping both cores busy. The bridge times the stretch it received to the
# sample; the mistakes this check is for are the model's prefix padding (300 ms) or silence
# (500 ms) left in.
SPEECH_TOLERANCE = 0.100
# LiveKit's two legs (human -> bridge, bridge -> human) on loopback: ~130 ms measured
# (README, latency); the bound leaves room for a busy machine.
LIVEKIT_LEGS_MAX = 0.6
Span = dict[str, Any]


@pytest_asyncio.fixture
async def jaeger() -> AsyncIterator[Jaeger]:
    await asyncio.to_thread(ensure_binary)
    async with Jaeger() as running:
        yield running


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def export_to(jaeger: Jaeger, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve (and its workers) export every span to ``jaeger``, in batches every 0.2 s."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)


async def traced_serve(
    *,
    livekit: LiveKitServer,
    emulator: EmulatorServer,
    jaeger: Jaeger,
    tools: ToolServer,
    agent: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    export_to(jaeger, monkeypatch)
    emulator.emulator.options = EmulatorOptions(
        api_key=SecretStr(EMULATOR_KEY),
        tool_calls=[
            ToolCallScript(when="utterance 1", name="get_order", arguments='{"number": "42"}')
        ],
    )
    return serve(
        livekit,
        emulator,
        agent_name=agent,
        rooms="pattern",
        room_patterns="never-*",
        reconcile_interval="600",
        tools=json.dumps([{"name": "get_order", "url": f"{tools.url}/orders"}]),
        tools_secret=SECRET,
    )


async def registered(bridge: ServeProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await bridge.status())["agent_dispatch"]["state"] != "registered":
        if time.monotonic() > deadline:
            raise TimeoutError("serve did not register with LiveKit")
        await asyncio.sleep(0.1)


async def the_trace(query: JaegerQuery, room: str, wanted: set[str]) -> list[Span]:
    """The room's trace once it holds every span name in ``wanted`` (the room's and session's
    spans end, and so reach Jaeger, when the human has left and the agent with them)."""
    spans: list[Span] = []
    deadline = time.monotonic() + 20
    while not wanted <= {operation(s) for s in spans}:
        if time.monotonic() > deadline:
            found = sorted({s["operationName"] for s in spans})
            raise AssertionError(f"the trace lacks {sorted(wanted)}: it has {found}")
        await asyncio.sleep(0.25)
        traces = await query.traces(SERVICE, tags={"livekit.room.name": room})
        spans = [s for t in traces for s in t["spans"]]
    assert len({s["traceID"] for s in spans}) == 1, "the room is more than one trace"
    return spans


def operation(span: Span) -> str:
    name: str = span["operationName"]
    return name.split(" ", 1)[0] if name.startswith(("call ", "chat ", "execute_tool ")) else name


def parent_of(span: Span, spans: list[Span]) -> Span | None:
    for ref in span.get("references", []):
        if ref["refType"] == "CHILD_OF":
            return next((s for s in spans if s["spanID"] == ref["spanID"]), None)
    return None


def one(spans: list[Span], op: str) -> Span:
    found = [s for s in spans if operation(s) == op]
    assert len(found) == 1, (op, [s["operationName"] for s in spans])
    return found[0]


def tags(span: Span) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def event_times(span: Span) -> dict[str, float]:
    """Event name -> seconds (Jaeger's logs, microseconds since the epoch)."""
    found: dict[str, float] = {}
    for log in span.get("logs", []):
        fields = {f["key"]: f["value"] for f in log["fields"]}
        found.setdefault(str(fields.get("event")), log["timestamp"] / 1e6)
    return found


async def test_one_spoken_turn_with_a_tool_is_one_trace_from_the_dispatch_on(
    livekit_server: LiveKitServer,
    emulator: EmulatorServer,
    jaeger: Jaeger,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    agent, room = name("tracer"), name("traced")
    async with ToolServer(SECRET) as tool_server:
        bridge_cm = await traced_serve(
            livekit=livekit_server,
            emulator=emulator,
            jaeger=jaeger,
            tools=tool_server,
            agent=agent,
            monkeypatch=monkeypatch,
        )
        async with bridge_cm as bridge:
            await registered(bridge)
            heard, offset = await one_turn(livekit_server, room, agent, tool_server)
            spans = await the_trace(
                jaeger.query,
                room,
                {"agent job", "join", "room", "session", "call", "turn", "chat", "execute_tool"},
            )
            exposition = await openmetrics(bridge)
    check_tree(spans, agent=agent, room=room)
    check_exemplars(exposition, one(spans, "turn")["traceID"])
    check_tool(spans)
    check_timings(one(spans, "turn"), heard, offset)
    check_nothing_said_or_secret(spans, livekit_server)
    await look_in_jaeger_ui(jaeger, one(spans, "turn")["traceID"], tmp_path)


async def one_turn(
    livekit: LiveKitServer, room: str, agent: str, tool_server: ToolServer
) -> tuple[Heard, float]:
    """A human brings the agent in with their token, speaks one turn (its transcript makes the
    model call the tool) and hears the answer; what they measured, and wall - monotonic."""
    human = Human(livekit, room, "human-0")
    human.room_config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent)])
    await human.join()
    try:
        await human.wait_until(lambda: "listening" in human.states, timeout=30)
        offset = time.time() - time.monotonic()
        onset = await human.say(SPEECH_SECONDS, pause=0.0)
        speech_end = onset + SPEECH_SECONDS
        await human.wait_until(lambda: bool(tool_server.requests), timeout=20)
        await human.wait_until(
            lambda: any(t.final and t.sender.startswith("room-bridge-") for t in human.transcripts),
            timeout=20,
        )
        await human.wait_until(lambda: "listening" in human.states[-1:], timeout=20)
        await asyncio.sleep(0.5)  # the answer's last frames reach the human
        track = human.answer_track()
        assert track is not None and track.loud
        answer = [
            (t, at) for t, at in zip(track.loud, track.loud_at, strict=True) if t > speech_end
        ]
    finally:
        await human.leave()
    (first, (first_at, _)), (last, (_, last_end)) = answer[0], answer[-1]
    length = (last_end - first_at) / SAMPLE_RATE
    return Heard(onset, speech_end, first=first, last=last, length=length), offset


@dataclass(frozen=True)
class Heard:
    """What the human measured (time.monotonic())."""

    onset: float
    speech_end: float
    first: float  # the first loud frame of the answer
    last: float  # its last loud frame
    # The answer's first audible sample -> after its last, on the track's own timeline (its
    # samples, as the bridge times it): not moved by frames reaching this busy process late.
    length: float


def check_tree(spans: list[Span], *, agent: str, room: str) -> None:
    """One trace across serve's HTTP process and its worker process."""
    job, join, room_span = one(spans, "agent job"), one(spans, "join"), one(spans, "room")
    session, call, turn = one(spans, "session"), one(spans, "call"), one(spans, "turn")
    assert parent_of(join, spans) is job
    assert parent_of(room_span, spans) is join
    assert parent_of(session, spans) is room_span
    assert parent_of(call, spans) is session
    assert parent_of(turn, spans) is call
    processes = {s["processID"] for s in (job, room_span)}
    assert len(processes) == 2, "the room's spans come from the worker process"
    assert tags(job)["livekit.agent.name"] == agent
    assert tags(room_span)["livekit.room.name"] == room
    assert tags(room_span)["bridge.mode"] == "per_participant"
    assert tags(session)["livekit.participant.identity"] == "human-0"
    assert tags(call)["gen_ai.provider.name"] == "openai"
    assert tags(call)["gen_ai.request.model"]
    assert tags(call)["bridge.call.id"]


def check_tool(spans: list[Span]) -> None:
    """The tool call inside the turn, between the response that asked and the one that
    answered; each response a GenAI span with usage and cost."""
    turn, tool = one(spans, "turn"), one(spans, "execute_tool")
    assert parent_of(tool, spans) is turn
    assert tags(tool)["gen_ai.tool.name"] == "get_order"
    assert tags(tool)["bridge.tool.outcome"] == "ok"
    assert turn["startTime"] <= tool["startTime"]
    assert tool["startTime"] + tool["duration"] <= turn["startTime"] + turn["duration"]
    responses = [s for s in spans if operation(s) == "chat"]
    assert len(responses) >= 2 and all(parent_of(r, spans) is turn for r in responses)
    assert all(tags(r)["gen_ai.usage.output_tokens"] > 0 for r in responses)
    assert any("bridge.cost.usd" in tags(r) for r in responses)


def check_timings(turn: Span, heard: Heard, offset: float) -> None:
    """The turn's marks against the human's measurements (``offset``: wall - monotonic)."""
    marks = event_times(turn)
    for wanted in ("speech started", "speech stopped", "first answer audio", "answer end"):
        assert wanted in marks, marks
    spoken = marks["speech stopped"] - marks["speech started"]
    assert abs(spoken - SPEECH_SECONDS) <= SPEECH_TOLERANCE, spoken
    answer = marks["answer end"] - marks["first answer audio"]
    # Jaeger's times are whole microseconds, read here as seconds since the epoch (float):
    # one microsecond of slack for the rounding.
    assert abs(answer - heard.length) <= TOLERANCE + 1e-6, (answer, heard)
    latency = marks["first answer audio"] - marks["speech stopped"]
    assert abs(tags(turn)["bridge.turn.latency_seconds"] - latency) <= 0.001
    human_latency = heard.first - heard.speech_end
    assert 0 <= human_latency - latency <= LIVEKIT_LEGS_MAX, (human_latency, latency)
    # The same instants on one clock: the bridge's marks sit between the human's.
    assert heard.onset + offset <= marks["speech started"] <= heard.first + offset
    assert heard.speech_end + offset <= marks["speech stopped"] <= marks["first answer audio"]
    assert marks["first answer audio"] <= heard.first + offset


async def openmetrics(bridge: ServeProcess) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(
            f"{bridge.url}/metrics", headers={"Accept": "application/openmetrics-text"}
        )
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    return answer.text


def check_exemplars(exposition: str, trace_id: str) -> None:
    """serve's /metrics (all its processes) links the turn latency, the tool's duration and the
    call's set-up to this trace (prometheus_client's multiprocess mode keeps no exemplars: ours
    come back from the worker's file)."""
    for metric in (
        "bridge_turn_latency_seconds",
        "bridge_tool_seconds",
        "bridge_call_setup_seconds",
    ):
        lines = [
            line
            for line in exposition.splitlines()
            if line.startswith(f"{metric}_bucket") and f'trace_id="{trace_id}"' in line
        ]
        assert lines, f"no exemplar of trace {trace_id} on {metric}"


def check_nothing_said_or_secret(spans: list[Span], livekit: LiveKitServer) -> None:
    text = json.dumps(spans)
    assert "utterance 1" not in text  # the transcript (trace_content is off)
    assert '"42"' not in text  # the tool's argument value
    for secret in (EMULATOR_KEY, livekit.api_secret, SECRET):
        assert secret not in text


async def look_in_jaeger_ui(jaeger: Jaeger, trace_id: str, tmp_path: Path) -> None:
    """Jaeger's UI shows the trace, the turn and its tool call, and the turn's details; the
    README's screenshot of it is retaken when what it shows changed
    (tests/support/trace_screenshot.py)."""
    async with headless_chromium() as browser:
        page = await browser.new_page(viewport={"width": 1500, "height": 1000})
        await page.goto(f"{jaeger.ui_url}trace/{trace_id}")
        for text in ("realtime-room-bridge: agent job", "turn", "execute_tool get_order"):
            await page.get_by_text(text, exact=True).first.wait_for(timeout=15_000)
        await page.get_by_text("turn", exact=True).first.click()  # its details
        await page.get_by_text("bridge.turn.latency_seconds").first.wait_for(timeout=5_000)
        if screenshot_is_current():
            return
        shot = tmp_path / "trace.png"
        await page.screenshot(path=str(shot), full_page=True)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
        SCREENSHOT_SOURCES.write_text(trace_digest() + "\n")


async def test_the_webhook_that_brought_the_agent_and_its_room_are_one_trace(
    emulator: EmulatorServer, jaeger: Jaeger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiveKit's webhook (serve's HTTP process) -> the join -> the room, session and call in the
    worker process: one trace, its context carried over the worker's pipe."""
    export_to(jaeger, monkeypatch)
    room = name("hooked")
    async with (
        listeners() as (listener,),
        livekit_with_webhooks(listener) as server,
        serve(
            server,
            emulator,
            listener=listener,
            rooms="pattern",
            room_patterns="hooked-*",
            reconcile_interval="600",
        ),
    ):
        human = Human(server, room, "human-0")
        await human.join()
        try:
            await human.wait_until(lambda: "listening" in human.states, timeout=30)
        finally:
            await human.leave()
        spans = await the_room_trace(jaeger.query, room, {"webhook", "join", "session", "call"})
    webhook, join, room_span = one(spans, "webhook"), one(spans, "join"), one(spans, "room")
    assert parent_of(join, spans) is webhook
    assert parent_of(room_span, spans) is join
    assert parent_of(one(spans, "session"), spans) is room_span
    assert webhook["processID"] != room_span["processID"], "the room runs in the worker process"


async def the_room_trace(query: JaegerQuery, room: str, wanted: set[str]) -> list[Span]:
    """The trace holding the room's span, once it holds every span name in ``wanted`` too (the
    room's other webhooks, for tracks and leaving, are traces of their own)."""
    spans: list[Span] = []
    deadline = time.monotonic() + 20
    while not wanted | {"room"} <= {operation(s) for s in spans}:
        if time.monotonic() > deadline:
            found = sorted({s["operationName"] for s in spans})
            raise AssertionError(f"the room's trace lacks {sorted(wanted)}: it has {found}")
        await asyncio.sleep(0.25)
        traces = await query.traces(SERVICE, tags={"livekit.room.name": room})
        rooms = [t["spans"] for t in traces if "room" in {operation(s) for s in t["spans"]}]
        spans = rooms[0] if len(rooms) == 1 else []
    return spans
