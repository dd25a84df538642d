"""`room-bridge dev` (what `make demo` runs): the whole stack, end to end, then a clean exit."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


async def test_dev_stack_talks_and_exits_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "dev",
        "--room",
        "dev-test",
        "--turns",
        "1",
        "--exit",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 100)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "bridge registered as agent 'assistant' (agent dispatch)" in text
    assert "[agent]        room-bridge-dev-test joined the room" in text
    assert "[human said]   utterance 1, " in text
    assert "[agent said]   Answer 1. I heard: utterance 1, " in text
    assert "answer latency median" in text
    assert "Traceback" not in text
