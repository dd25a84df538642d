"""A newcomer's first mistakes, against a real livekit-server and the emulator: each start failure
is one clear line naming what and where (never a secret, never a traceback); ``join`` exits 1,
and ``serve`` keeps running with spaced-out retries and a /readyz that says why."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import httpx
import pytest

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from bridge.local.ports import free_port, loopback_listener
from tests.support.dispatch_harness import (
    agents_in,
    listeners,
    livekit_with_webhooks,
    serve_env,
)
from tests.support.env import EMULATOR_KEY
from tests.support.room_harness import humans

pytestmark = pytest.mark.timeout(120)

WRONG_SECRET = "w" * 40
WRONG_OPENAI_KEY = "sk-not-the-right-key-0123456789"


def _env(server: LiveKitServer, emulator: EmulatorServer, **changes: str) -> dict[str, str]:
    """The tests' serve environment (a quick drain), with ``changes`` (any variable) on top."""
    return {**serve_env(server, emulator, drain_timeout="1"), **changes}


async def _serve(env: dict[str, str], sock: socket.socket) -> asyncio.subprocess.Process:
    """``serve`` with one worker on the listening ``sock``, its output (both streams) piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "serve", "--fd", str(sock.fileno()), "--workers", "1"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        pass_fds=(sock.fileno(),),
    )


async def _join(env: dict[str, str]) -> tuple[int | None, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "join",
        "--room",
        "first-try",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, err.decode().splitlines()


async def test_each_join_mistake_is_one_line_and_exit_1(
    livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    closed = free_port()
    lk, model = livekit_server.http_url, emulator.base_url
    key = livekit_server.api_key
    refused = (
        f"LiveKit at {lk} refused the API key {{key!r}} or its secret (HTTP 401): check "
        "LIVEKIT_API_KEY and LIVEKIT_API_SECRET against the server's keys"
    )
    cases = {
        "LiveKit closed port": (
            {"LIVEKIT_URL": f"ws://127.0.0.1:{closed}"},
            f"LiveKit server API at http://127.0.0.1:{closed} unreachable: connection refused "
            "(LIVEKIT_URL)",
        ),
        "wrong LiveKit secret": ({"LIVEKIT_API_SECRET": WRONG_SECRET}, refused.format(key=key)),
        "wrong LiveKit key": (
            {"LIVEKIT_API_KEY": "APInotourkey"},
            refused.format(key="APInotourkey"),
        ),
        "model URL closed port": (
            {"OPENAI_BASE_URL": f"http://127.0.0.1:{closed}/v1"},
            f"the model service at http://127.0.0.1:{closed}/v1 is unreachable: connection "
            "refused (OPENAI_BASE_URL)",
        ),
        "wrong model key": (
            {"OPENAI_API_KEY": WRONG_OPENAI_KEY},
            f"the model service at {model} refused the key in OPENAI_API_KEY "
            "(HTTP 401 invalid_api_key)",
        ),
        "a model it does not serve": (
            {"BRIDGE_MODEL": "gpt-realtime-9"},
            f"the model service at {model} does not serve model 'gpt-realtime-9' to this key "
            "(BRIDGE_MODEL; HTTP 404 model_not_found)",
        ),
    }
    results = await asyncio.gather(
        *(_join(_env(livekit_server, emulator, **change)) for change, _ in cases.values())
    )
    for (name, (_, expected)), (code, lines) in zip(cases.items(), results, strict=True):
        ours = [line for line in lines if line.startswith("room-bridge: ")]
        assert code == 1, (name, lines)
        assert ours == [f"room-bridge: {expected}"], (name, lines)
        text = "\n".join(lines)
        assert "Traceback" not in text and "retrying" not in text, (name, text)
        assert WRONG_SECRET not in text and WRONG_OPENAI_KEY not in text
        assert livekit_server.api_secret not in text and EMULATOR_KEY not in text


async def test_serve_with_a_wrong_secret_and_key_says_why_and_retries_sparingly(
    livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    """``serve`` stays up: /readyz names both refusals; over ~8 s each side has logged a few
    spaced-out lines, no traceback, no secret."""
    env = _env(
        livekit_server,
        emulator,
        LIVEKIT_API_SECRET=WRONG_SECRET,
        OPENAI_API_KEY=WRONG_OPENAI_KEY,
        BRIDGE_RECONCILE_INTERVAL="5",
    )
    with loopback_listener() as sock:
        port = sock.getsockname()[1]
        proc = await _serve(env, sock)
    try:
        await asyncio.sleep(8.0)
        async with httpx.AsyncClient(timeout=5) as client:
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    log = out.decode()
    assert proc.returncode == 0, log
    assert ready.status_code == 503
    reasons = ready.json()["reasons"]
    assert any("refused the API key" in r for r in reasons), reasons
    assert any("refused the key in OPENAI_API_KEY" in r for r in reasons), reasons
    agent = [line for line in log.splitlines() if "agent dispatch: not registered" in line]
    model = [line for line in log.splitlines() if "refused the key in OPENAI_API_KEY" in line]
    assert 1 <= len(agent) <= 2, agent  # at least 30 s apart: one in 8 s
    assert 1 <= len(model) <= 3, model  # 5 s, then 10 s apart
    assert "Traceback" not in log
    assert WRONG_SECRET not in log and WRONG_OPENAI_KEY not in log


async def test_serve_takes_no_room_while_the_model_refuses_its_key(
    emulator: EmulatorServer,
) -> None:
    """A human arriving at a pod whose model key is refused gets no agent that could never
    answer: the webhook is sent elsewhere (503) and /readyz says why."""
    async with (
        listeners() as (listener,),
        livekit_with_webhooks(listener) as server,
    ):
        env = _env(server, emulator, OPENAI_API_KEY=WRONG_OPENAI_KEY, BRIDGE_RECONCILE_INTERVAL="2")
        port = listener.getsockname()[1]
        proc = await _serve(env, listener)
        try:
            await asyncio.sleep(3.0)  # started, and the model service asked once
            async with humans(server, "refused-key", "alice"):
                await asyncio.sleep(5.0)  # webhooks and two reconcile passes
                assert await agents_in(server, "refused-key") == []
            async with httpx.AsyncClient(timeout=5) as client:
                ready = await client.get(f"http://127.0.0.1:{port}/readyz")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
    log = out.decode()
    assert ready.status_code == 503, log
    assert any("refused the key in OPENAI_API_KEY" in r for r in ready.json()["reasons"])
    assert "webhook participant_joined: unavailable (cannot serve rooms: the model service" in log
    assert "Traceback" not in log and WRONG_OPENAI_KEY not in log


async def test_serve_on_a_taken_port_is_one_line_and_exit_2(
    livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    with loopback_listener() as taken:
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "bridge", "serve", "--port", str(port), "--workers", "1"),
            env=_env(livekit_server, emulator),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().splitlines()
    assert proc.returncode == 2
    assert lines[-1] == (
        f"room-bridge: cannot listen on 127.0.0.1:{port}: address already in use "
        "(--host/--port, BRIDGE_SERVER_HOST/BRIDGE_SERVER_PORT)"
    )
    assert "Traceback" not in err.decode()


async def test_the_emulator_on_a_taken_port_is_one_line_and_exit_2() -> None:
    with loopback_listener() as taken:
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "bridge", "emulator", "--port", str(port)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert err.decode().splitlines()[-1] == (
        f"room-bridge: cannot listen on 127.0.0.1:{port}: address already in use (--host/--port)"
    )
