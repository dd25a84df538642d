"""Which processes a test run started, found again wherever they went (Linux ``/proc``).

Two ways, because each misses what the other finds:

- a mark in the environment: every pytest process (each xdist worker its own) sets
  ``SESSION_MARK`` at start, and what it starts inherits it, children of children too (``serve``
  passes its environment to its workers, ``livekit-server`` and browsers get ours), even once
  re-parented to init by a parent's death, or in a session and process group of its own;
- the tree below the pytest process: what was started with an environment of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SESSION_MARK = "RRB_TEST_SESSION"
# A test's own processes, among the session's (the workers of one ``serve``, say).
CASE_MARK = "RRB_TEST_CASE"

_PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.command}"


def new_mark() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def mark_session() -> str:
    """Give this process (and so all it starts from now on) a mark of its own; returns it."""
    mark = new_mark()
    os.environ[SESSION_MARK] = mark
    return mark


def alive(pid: int) -> bool:
    """Running (a zombie has ended: only its exit status is left for its parent)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def command(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return text if len(text) <= 200 else text[:197] + "..."


def _pids() -> list[int]:
    return [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()]


def marked(name: str, value: str) -> list[Proc]:
    """Living processes whose environment has ``name=value`` (those of other users cannot be
    read and are not ours)."""
    needle = f"{name}={value}".encode()
    found = []
    for pid in _pids():
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(pid) and pid != os.getpid():
            found.append(Proc(pid, command(pid)))
    return found


def descendants(root: int) -> list[Proc]:
    """Living processes below ``root`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        try:
            stat = (_PROC / str(pid) / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[-1].split()[1])
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if alive(pid):
            found.append(Proc(pid, command(pid)))
    return found


def leftovers(mark: str, root: int | None = None) -> list[Proc]:
    """What this session started that is still alive: marked, or below ``root`` (default: this
    process)."""
    by_pid = {p.pid: p for p in marked(SESSION_MARK, mark)}
    by_pid.update({p.pid: p for p in descendants(os.getpid() if root is None else root)})
    return sorted(by_pid.values(), key=lambda p: p.pid)


def wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    """Those of ``procs`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if alive(p.pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p.pid)]
    return left


def kill(procs: list[Proc]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
