"""`room-bridge dev` (what `make demo` runs): the whole stack, end to end, then Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from typing import Any

import pytest

from bridge.local.jaeger import JaegerQuery, ensure_binary

pytestmark = pytest.mark.timeout(120)

URL_LINE = re.compile(r"^http://127\.0\.0\.1:\d+/$")
LAST_HINT = "Now talk to the AI yourself in your browser:"


async def test_dev_stack_talks_then_points_at_the_page_and_stops_on_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "dev", "--room", "dev-test", "--turns", "1"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        # As `make demo`: the turns, then the page's address last, then it waits for Ctrl-C.
        async with asyncio.timeout(90):
            while not (lines[-2:-1] and LAST_HINT in lines[-2]):
                line = await proc.stdout.readline()
                assert line, "dev exited before pointing at the page:\n" + "\n".join(lines)
                lines.append(line.decode(errors="replace").rstrip())
        assert URL_LINE.match(lines[-1]), "\n".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "\n".join(lines) + "\n" + rest.decode(errors="replace")
    assert proc.returncode == 0, text
    assert text.rstrip().endswith("stopped"), text
    assert "bridge registered as agent 'assistant' (agent dispatch)" in text
    assert "[agent]        room-bridge-dev-test joined the room" in text
    assert "[human said]   utterance 1, " in text
    assert "[agent said]   Answer 1. I heard: utterance 1, " in text
    assert "answer latency median" in text
    assert "Traceback" not in text


TRACES_LINE = re.compile(r"\[traces\]\s+Jaeger (http://127\.0\.0\.1:\d+/) ")


async def test_dev_with_traces_starts_jaeger_and_the_turns_land_in_it() -> None:
    """``dev --traces``: Jaeger on loopback, its address printed before the page's, and what the
    bridge did (the LiveKit job that brought the agent in, the turn it answered) is a trace
    there."""
    await asyncio.to_thread(ensure_binary)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_", "OTEL_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "dev", "--room", "dev-traces", "--turns", "1", "--traces"),
        *("--page-port", "0"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(90):
            while not (lines[-2:-1] and LAST_HINT in lines[-2]):
                line = await proc.stdout.readline()
                assert line, "dev exited before pointing at the page:\n" + "\n".join(lines)
                lines.append(line.decode(errors="replace").rstrip())
        found = [m for line in lines if (m := TRACES_LINE.search(line))]
        assert found, "\n".join(lines)
        ui = found[0].group(1)
        assert lines.index(found[0].string) < len(lines) - 2  # the page's address stays last
        traces = await eventually_traces(JaegerQuery(ui), "dev-traces", {"agent job", "turn"})
        names = {span["operationName"] for trace in traces for span in trace["spans"]}
        # The job and join (serve's HTTP process) and the turn (its worker): one trace.
        assert {"agent job", "join", "turn"} <= names, names
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "\n".join(lines) + "\n" + rest.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text


async def eventually_traces(
    jaeger: JaegerQuery, room: str, wanted: set[str], timeout: float = 20.0
) -> list[dict[str, Any]]:
    """The bridge's traces tagged with ``room``, once their spans include every name in
    ``wanted`` (the batch exporter sends every 0.5 s here; a span is sent when it ends)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        traces = await jaeger.traces("realtime-room-bridge", tags={"livekit.room.name": room})
        names = {span["operationName"] for trace in traces for span in trace["spans"]}
        if wanted <= names or asyncio.get_running_loop().time() > deadline:
            return traces
        await asyncio.sleep(0.25)
