"""Local starts (dev, tests, benchmarks) never lose a port race.

`make demo` once failed with ``livekit-server exited with 0: listen tcp :44329: bind: address
already in use``: a port picked, released, and taken by someone else before livekit-server bound
it. Our own servers now get a socket we already bound (``serve --fd``) or bind port 0 themselves
(the emulator); livekit-server's ports are picked outside the ephemeral range and a start that
loses the race anyway is retried whole on fresh ports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import pytest
from livekit import api

from bridge.emulator.app import EmulatorServer
from bridge.local import ports
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig, PortInUse
from tests.support.dispatch_harness import listeners, livekit_with_webhooks, serve
from tests.support.emulator_process import emulator_process
from tests.support.env import EMULATOR_KEY

# Whole local stacks started back to back: a few in `make test`, more on demand.
STARTS = int(os.environ.get("PORT_RACE_STARTS", "2"))
SLOW_STARTS = int(os.environ.get("PORT_RACE_SLOW_STARTS", "30"))


async def accepts_our_key(server: LiveKitServer) -> bool:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        await asyncio.wait_for(lk.room.list_rooms(api.ListRoomsRequest()), 10)
    return True


async def test_a_taken_port_means_a_new_start_on_fresh_ports(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with ports.loopback_listener() as taken:
        taken_port = int(taken.getsockname()[1])
        # The first port handed out is one another process holds: the race, made certain.
        pick = ports.free_port
        rigged = iter([taken_port])
        monkeypatch.setattr(
            ports, "free_port", lambda kind=socket.SOCK_STREAM: next(rigged, 0) or pick(kind)
        )
        with caplog.at_level(logging.WARNING, "bridge.local.livekit_server"):
            async with LiveKitServer(LiveKitServerConfig()) as server:
                assert server.config.port != taken_port
                assert await accepts_our_key(server)
    assert "start 1 of 5 lost a port race" in caplog.text
    assert "address already in use" in caplog.text


async def test_a_port_the_caller_fixed_is_not_changed_behind_its_back() -> None:
    with ports.loopback_listener() as taken:
        config = LiveKitServerConfig(port=int(taken.getsockname()[1]))
        with pytest.raises(PortInUse, match="address already in use"):
            await LiveKitServer(config).start()


def test_picked_ports_avoid_the_ephemeral_range_and_repeats() -> None:
    low, high = ports.ephemeral_range()
    picked = [ports.free_port() for _ in range(50)] + [
        ports.free_port(socket.SOCK_DGRAM) for _ in range(50)
    ]
    assert len(set(picked)) == len(picked)
    assert not [p for p in picked if low <= p <= high]


@pytest.mark.timeout(300)
async def test_serve_refuses_an_fd_that_is_no_socket() -> None:
    read_end, write_end = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--fd",
            str(read_end),
            env={
                **os.environ,
                "LIVEKIT_URL": "ws://127.0.0.1:9",
                "LIVEKIT_API_KEY": "key",
                "LIVEKIT_API_SECRET": "s" * 32,
                "OPENAI_API_KEY": EMULATOR_KEY,
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(read_end,),
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode == 2
    assert stderr.decode().strip().splitlines()[-1] == (
        f"room-bridge: --fd {read_end} is not a socket"
    )


async def start_the_stack(emulator: EmulatorServer) -> None:
    """livekit-server with webhooks to a ``serve`` process, and an emulator process: each up
    and answering."""
    async with (
        listeners() as (listener,),
        livekit_with_webhooks(listener) as server,
        serve(server, emulator, listener=listener) as bridge,
        emulator_process(EMULATOR_KEY) as model,
    ):
        assert await accepts_our_key(server)
        assert (await bridge.get("/healthz")).status_code == 200
        assert model.base_url.startswith("http://127.0.0.1:")


@pytest.mark.timeout(600)
async def test_the_local_stack_starts_many_times_in_a_row(emulator: EmulatorServer) -> None:
    for _ in range(STARTS):
        await start_the_stack(emulator)
    for _ in range(3 * STARTS):
        async with LiveKitServer(LiveKitServerConfig()) as server:
            assert await accepts_our_key(server)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_the_local_stack_starts_many_more_times(emulator: EmulatorServer) -> None:
    for _ in range(SLOW_STARTS):
        await start_the_stack(emulator)
