"""Room-worker processes under ``serve``.

One asyncio process saturates around 8-10 audio sessions, so ``serve --workers N`` runs N child
processes (``python -m bridge.service.worker_process``, bridge/service/worker_process.py: how a
worker ends with its parent, whatever state it is in), each serving rooms with its own share of
``max_sessions``. The HTTP process assigns each room to the least-loaded child (one that has
finished starting first) and restarts a child that dies.

A dead child's rooms are re-homed at once on the surviving children with a free slot (a fresh
agent with the same identity makes LiveKit drop the dead one's ghost from the room); the restart
runs meanwhile, and rooms no survivor has room for wait for it (up to ``JOIN_TIMEOUT``).
Reconcile backs that up. A restarted child is only ever sent rooms that are not served
elsewhere, so no room gets two agents.

Control is JSON lines over the child's stdin/stdout (logs go to stderr):

    parent -> child   {"op": "join", "room": R, "overrides": {...} | null, "trace": {...}?}
                      {"op": "leave", "room": R}     {"op": "stop"}
    child -> parent   {"ev": "status", "rooms": {R: {"sessions": n, "humans": h, "details": {...}}}}
                      {"ev": "joined", "room": R}    {"ev": "join_failed", "room": R, "error": E}
                      {"ev": "ended", "room": R, "reason": E, "duplicate": bool}

``trace`` carries the dispatch span's context (W3C ``traceparent``, bridge/tracing/carrier.py):
the room's spans in the child continue the trace of the webhook or job that brought it in.

Metrics: every process writes to one prometheus_client multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``); the HTTP process serves the sum at /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.aio import TaskSet
from bridge.processes import stop_process
from bridge.service.local_rooms import RoomInfo
from bridge.settings.config import SessionOverrides, Settings
from bridge.tracing import carrier

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
RESTART_DELAY = 1.0
QUICK_DEATH_SECONDS = 10.0


def split_budget(total: int, workers: int) -> list[int]:
    """``max_sessions`` spread over the workers as evenly as integers allow."""
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


@dataclass
class _Worker:
    index: int
    budget: int
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    # Started and listening (its first status arrived): a join sent now is not held up behind
    # the child's start-up (imports, ~1 s on a busy machine).
    ready: bool = False
    rooms: dict[str, RoomInfo] = field(default_factory=dict)
    assigned: dict[str, SessionOverrides | None] = field(default_factory=dict)
    joining: set[str] = field(default_factory=set)
    pending: dict[str, asyncio.Future[str | None]] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def load(self) -> int:
        """Sessions this worker is committed to: per room the larger of its sessions and its
        humans (humans waiting for a slot count), at least one; plus rooms still being joined."""
        committed = sum(max(1, i.sessions, i.humans) for i in self.rooms.values())
        return committed + len(self.joining - self.rooms.keys())


# (room, reason, duplicate?) when a room ends; (room, overrides) when a dead worker's room needs a
# new home.
EndedCallback = Callable[[str, str, bool], None]
LostCallback = Callable[[str, SessionOverrides | None], None]


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        config_path: Path | None,
        on_ended: EndedCallback,
        on_lost: LostCallback,
    ) -> None:
        self.settings = settings
        self._config_path = config_path
        self._on_ended = on_ended
        self._on_lost = on_lost
        self._workers = [
            _Worker(index=i, budget=b)
            for i, b in enumerate(split_budget(settings.max_sessions, count))
        ]
        self._tasks = TaskSet("worker-pool")
        self._closing = False
        # Set (and replaced) whenever a worker (re)starts: joins waiting for a slot look again.
        self._started = asyncio.Event()
        # Called after every message from a worker (rooms or sessions may have changed).
        self.on_change: Callable[[], None] | None = None

    # ---- state -------------------------------------------------------------------------------

    def rooms(self) -> dict[str, RoomInfo]:
        merged: dict[str, RoomInfo] = {}
        for worker in self._workers:
            merged.update(worker.rooms)
            for room in worker.assigned:
                merged.setdefault(room, RoomInfo(sessions=0, humans=0))
        return merged

    def has_room(self, room: str) -> bool:
        return any(room in w.assigned or room in w.rooms for w in self._workers)

    @property
    def sessions(self) -> int:
        """Live sessions plus one reserved per room being joined."""
        return sum(w.load for w in self._workers)

    @property
    def alive(self) -> int:
        return sum(1 for w in self._workers if w.alive)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "index": w.index,
                "pid": w.pid,
                "alive": w.alive,
                "ready": w.ready,
                "budget": w.budget,
                "rooms": {r: i.as_dict() for r, i in w.rooms.items()},
                "joining": sorted(w.joining - w.rooms.keys()),
            }
            for w in self._workers
        ]

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        for worker in self._workers:
            await self._spawn(worker)
            self._tasks.create_task(self._supervise(worker), name=f"worker-{worker.index}")

    async def _spawn(self, worker: _Worker) -> None:
        # Started from the event loop's thread, which lives as long as this process: the child's
        # PR_SET_PDEATHSIG fires when the thread that forked it ends.
        argv = [
            sys.executable,
            "-m",
            "bridge.service.worker_process",
            "--budget",
            str(worker.budget),
            "--parent-pid",
            str(os.getpid()),
        ]
        if self._config_path is not None:
            argv += ["--config", str(self._config_path)]
        worker.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Ctrl-C in a terminal must not reach the children: the HTTP process drains them.
            start_new_session=True,
            limit=1 << 20,
        )
        worker.started_at = time.monotonic()
        worker.ready = False
        logger.info("worker %d started (pid %d)", worker.index, worker.proc.pid)
        self._started.set()
        self._started = asyncio.Event()

    async def _supervise(self, worker: _Worker) -> None:
        while True:
            proc = worker.proc
            assert proc is not None and proc.stdout is not None
            try:
                while line := await proc.stdout.readline():
                    self._on_line(worker, line)
            except (ValueError, OSError) as exc:  # e.g. a line over the limit: stop trusting it
                logger.error(
                    "worker %d: unreadable control stream (%s); killing it", worker.index, exc
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            code = await proc.wait()
            lost = dict(worker.assigned)
            worker.rooms.clear()
            worker.assigned.clear()
            worker.joining.clear()
            worker.ready = False
            for future in worker.pending.values():
                if not future.done():
                    future.set_result("worker exited")
            worker.pending.clear()
            _mark_dead(proc.pid)
            if self._closing:
                return
            logger.error(
                "worker %d (pid %d) exited with %s; %d rooms re-homed; restarting it",
                worker.index,
                proc.pid,
                code,
                len(lost),
            )
            # Re-homed now, on the workers still alive (the restart would take a second or more):
            # each goes through the dispatcher's join, which waits for the restart only when no
            # survivor has a free slot.
            for room, overrides in lost.items():
                self._on_lost(room, overrides)
            if self.on_change is not None:
                self.on_change()
            # A worker that dies right after starting (bad config, broken install) is restarted
            # ever more slowly rather than every second; one that had been running, at once.
            lived = time.monotonic() - worker.started_at
            worker.quick_deaths = worker.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
            quick = worker.quick_deaths
            delay = RESTART_DELAY * 2 ** min(quick - 1, 5) if quick else 0.0
            await self._respawn(worker, delay)

    async def _respawn(self, worker: _Worker, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)
            try:
                await self._spawn(worker)
                return
            except OSError as exc:
                logger.error("worker %d could not be started: %s; retrying", worker.index, exc)
                delay = min(30.0, delay * 2)

    def _on_line(self, worker: _Worker, line: bytes) -> None:
        try:
            message = json.loads(line)
            kind = message["ev"]
        except (json.JSONDecodeError, KeyError, TypeError):
            logger.warning("worker %d wrote a line that is not a message", worker.index)
            return
        worker.ready = True
        if kind == "status":
            # A room under way stays in `joining` until its joined/join_failed answer.
            worker.rooms = {
                room: RoomInfo(
                    sessions=int(v["sessions"]),
                    humans=int(v["humans"]),
                    details=v.get("details") if isinstance(v.get("details"), dict) else {},
                )
                for room, v in message["rooms"].items()
            }
        elif kind in ("joined", "join_failed"):
            room = message["room"]
            worker.joining.discard(room)
            if kind == "joined":
                worker.rooms.setdefault(room, RoomInfo(sessions=0, humans=0))
            else:
                worker.assigned.pop(room, None)
            future = worker.pending.pop(room, None)
            if future is not None and not future.done():
                future.set_result(message.get("error") if kind == "join_failed" else None)
        elif kind == "ended":
            room = message["room"]
            worker.rooms.pop(room, None)
            worker.assigned.pop(room, None)
            self._on_ended(room, str(message.get("reason")), bool(message.get("duplicate")))
        if self.on_change is not None:
            self.on_change()

    def _send(self, worker: _Worker, message: dict[str, Any]) -> None:
        proc = worker.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise RuntimeError(f"worker {worker.index} is not running")
        proc.stdin.write(json.dumps(message).encode() + b"\n")

    def choose(self) -> _Worker | None:
        """The least-loaded live worker with a free slot (one that finished starting first), or
        None (at capacity)."""
        candidates = [w for w in self._workers if w.alive and w.load < w.budget]
        return min(candidates, key=lambda w: (not w.ready, w.load), default=None)

    def _restarting(self) -> bool:
        """A worker is down and will be started again (its slots come back)."""
        return not self._closing and any(not w.alive and w.budget for w in self._workers)

    async def _home(self) -> _Worker | None:
        """Where a room goes: ``choose()``, or, when the only free slots belong to a worker being
        restarted, that worker once it is back (None after ``JOIN_TIMEOUT``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_TIMEOUT
        while (worker := self.choose()) is None and self._restarting():
            try:
                async with asyncio.timeout_at(deadline):
                    await self._started.wait()
            except TimeoutError:
                return None
        return worker

    async def join(self, room: str, overrides: SessionOverrides | None) -> str | None:
        """Join ``room`` on the least-loaded worker; returns None or why it failed."""
        if self.has_room(room):
            return None
        worker = await self._home()
        if self.has_room(room):  # joined meanwhile (the caller's dedupe makes this rare)
            return None
        if worker is None:
            return "at capacity"
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        worker.pending[room] = future
        worker.assigned[room] = overrides
        worker.joining.add(room)
        payload = overrides.model_dump(exclude_none=True) if overrides is not None else None
        message = {"op": "join", "room": room, "overrides": payload}
        if (trace := carrier.inject()) is not None:
            message["trace"] = trace
        self._send(worker, message)
        try:
            return await asyncio.wait_for(asyncio.shield(future), JOIN_TIMEOUT)
        except TimeoutError:
            return f"no answer from worker {worker.index} in {JOIN_TIMEOUT:g} s"

    def leave(self, room: str) -> bool:
        for worker in self._workers:
            if room in worker.assigned or room in worker.rooms:
                with contextlib.suppress(RuntimeError):
                    self._send(worker, {"op": "leave", "room": room})
                return True
        return False

    async def aclose(self) -> None:
        """Ask every worker to end its rooms (calls hung up) and exit; kill after a timeout."""
        self._closing = True
        for worker in self._workers:
            with contextlib.suppress(RuntimeError, ConnectionError):
                self._send(worker, {"op": "stop"})
        for worker in self._workers:
            if worker.proc is None:
                continue
            _, killed = await stop_process(worker.proc, timeout=STOP_TIMEOUT, signal=None)
            if killed:
                logger.error("worker %d did not stop in time; killed", worker.index)
        await self._tasks.aclose()

    def kill(self) -> None:
        """Second signal: no draining, no waiting."""
        self._closing = True
        for worker in self._workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()


def _mark_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


__all__ = ["WorkerPool", "split_budget"]
