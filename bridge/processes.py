"""Stopping child processes: ask, wait a bounded time, then kill. One way, used everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as signals


async def stop_process(
    proc: asyncio.subprocess.Process,
    *,
    timeout: float,
    signal: int | None = signals.SIGTERM,
    group: bool = False,
) -> tuple[int, bool]:
    """Send ``signal`` (None: the caller already asked it to stop some other way), wait up to
    ``timeout`` seconds, then SIGKILL. ``group`` signals the child's whole process group (it
    must have been started with ``start_new_session=True``). Returns (exit code, killed?)."""
    killed = False
    if proc.returncode is None:
        if signal is not None:
            _send(proc, signal, group)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            killed = True
            _send(proc, signals.SIGKILL, group)
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, killed


def _send(proc: asyncio.subprocess.Process, signal: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal)
        else:
            proc.send_signal(signal)
