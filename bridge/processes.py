"""Child processes: stopping one (ask, wait a bounded time, then kill: one way, used everywhere),
and a child's side of it: ending with its parent (Linux ``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal as signals
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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


def die_with_parent(parent_pid: int, signal: int = signals.SIGTERM) -> bool:
    """Ask the kernel to send ``signal`` to this process when its parent dies (Linux; a no-op
    elsewhere), then check the parent is still ``parent_pid``: it may have died before the request
    (this process then belongs to another reaper and no signal will come). Returns False then.

    Called by the child itself, at its start: ``preexec_fn`` would run between fork and exec in a
    parent that has threads, which is unsafe. The kernel's "parent" is the thread that forked, so
    the parent must start its children from a thread that lives as long as it does (its event
    loop's)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    return os.getppid() == parent_pid
