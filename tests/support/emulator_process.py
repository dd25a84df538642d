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

from tests.support.env import LOOPBACK_ENV


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
    """Start it on a port it binds itself (``--port 0``) and reports on stdout, so no other
    process can take the port in between; SIGTERM it on exit (and check it stopped cleanly, exit
    code 0)."""
    argv = ["--port", "0", "--api-key", api_key]
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
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        # "emulator listening: OPENAI_BASE_URL=http://127.0.0.1:PORT/v1", once it listens; up to
        # a minute: on a loaded shared machine its start-up takes far more than 10 s.
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        _, found, base = line.strip().partition("OPENAI_BASE_URL=")
        if not found:
            raise RuntimeError(f"emulator did not start: {line!r}")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    try:
        yield EmulatorProcess(base, proc)
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
        if proc.returncode != 0:
            raise RuntimeError(f"emulator exited with {proc.returncode}: {stderr.decode()[-500:]}")
