"""The emulator as a separate process (``room-bridge emulator``), for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from bridge.local.livekit_server import free_port
from tests.env import LOOPBACK_ENV


@dataclass(frozen=True)
class EmulatorProcess:
    base_url: str
    proc: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.asynccontextmanager
async def emulator_process(
    api_key: str, options: dict[str, Any] | None = None, *, log_level: str = "WARNING"
) -> AsyncIterator[EmulatorProcess]:
    """Start it on a free loopback port, wait until it answers; SIGTERM it on exit (and check it
    stopped cleanly, exit code 0)."""
    port = free_port()
    argv = ["--port", str(port), "--api-key", api_key]
    if options:
        argv += ["--options", json.dumps(options)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "--log-level",
        log_level,
        "emulator",
        *argv,
        env={**os.environ, **LOOPBACK_ENV},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        async with httpx.AsyncClient() as client:
            # Up to a minute: on a loaded shared machine its start-up takes far more than 10 s.
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(f"{base}/_emulator/calls", timeout=0.5)
                    break
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        yield EmulatorProcess(base, proc)
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
        if proc.returncode != 0:
            raise RuntimeError(f"emulator exited with {proc.returncode}: {stderr.decode()[-500:]}")
