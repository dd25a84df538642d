"""One room-worker process of ``serve`` (``python -m bridge.service.worker_process``; the parent
side is bridge/service/workers.py, which also describes the control messages).

A worker never outlives its ``serve``, whatever state it is in. It closes (rooms left, calls hung
up) when any of these comes first:

- ``{"op": "stop"}`` from the parent (a drain it coordinates);
- the end of its control pipe (stdin at EOF, or stdout refusing a write): the parent is gone;
  read from the first moment of the event loop, warm-up included;
- SIGTERM or SIGINT, from anyone; also the kernel's when the parent dies (``PR_SET_PDEATHSIG``,
  asked for at start: the backstop when the pipe's end is not seen, e.g. another process still
  holds its write end).

The close is bounded: after ``CLOSE_TIMEOUT`` the worker logs what it was still waiting for and
exits anyway, and ``signal.alarm`` ends the process from the kernel ``ALARM_GRACE`` seconds
later should even that not run. A clean close exits 0 (with ``os._exit``: the LiveKit SDK's
native dispose at interpreter exit can abort the process), a cut-short one 1. Before the event
loop runs there is nothing to close, and SIGTERM exits 0 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from bridge.aio import TaskSet
from bridge.processes import die_with_parent
from bridge.settings.config import ConfigError, SessionOverrides, Settings, load_settings
from bridge.tracing import carrier

if TYPE_CHECKING:  # imported late: the room side (LiveKit, aiortc) takes a second to load
    from bridge.service.local_rooms import EndedCallback, RoomInfo

# Named, not __name__: run with -m, this module is __main__.
logger = logging.getLogger("bridge.service.worker_process")

STATUS_INTERVAL = 1.0
# Leaving every room (sessions ended, calls hung up, tracks unpublished, SDK disconnects) takes
# well under a second on a healthy machine; past this the worker stops waiting and exits.
CLOSE_TIMEOUT = 4.0
# After CLOSE_TIMEOUT, the kernel's SIGALRM (default action: terminate) ends a process whose
# interpreter could not even exit.
ALARM_GRACE = 2.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _flush_and_exit(code: int) -> None:
    """Exit now: log lines out first, no interpreter shutdown (atexit handlers skipped)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # stdout's reader may be gone
            stream.flush()
    os._exit(code)


def arm_alarm(seconds: int) -> None:
    """The kernel ends this process in ``seconds`` (SIGALRM's default action), whatever the
    interpreter is doing then."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(seconds)


class Rooms(Protocol):
    """What a worker serves rooms with (bridge/service/local_rooms.py's LocalRooms)."""

    def status(self) -> Mapping[str, RoomInfo]: ...
    async def join(self, room: str, overrides: SessionOverrides | None = None) -> None: ...
    def leave(self, room: str, reason: str = ...) -> bool: ...
    async def aclose(self, reason: str = ...) -> None: ...


class WorkerProcess:
    def __init__(
        self,
        make_rooms: Callable[[EndedCallback], Rooms],
        *,
        parent_pid: int | None = None,
        hard_exit: Callable[[int], None] = _flush_and_exit,
    ) -> None:
        self.rooms = make_rooms(self._ended)
        self._parent_pid = parent_pid
        self._hard_exit = hard_exit
        self._tasks = TaskSet("worker-child")
        self._close = asyncio.Event()
        self.close_reason: str | None = None
        self._pipe_open = True

    # ---- to the parent --------------------------------------------------------------------

    def _emit(self, message: dict[str, Any]) -> None:
        if not self._pipe_open:
            return
        try:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # the read end is closed: the parent is gone
            self._pipe_open = False
            self.request_close("control pipe closed (parent gone)")

    def _ended(self, room: str, reason: str, duplicate: bool) -> None:
        self._emit({"ev": "ended", "room": room, "reason": reason, "duplicate": duplicate})
        self._emit_status()

    def _emit_status(self) -> None:
        rooms = {
            name: {**info.as_dict(), "details": dict(info.details)}
            for name, info in self.rooms.status().items()
        }
        self._emit({"ev": "status", "rooms": rooms})

    async def _warm_then_report(self) -> None:
        from bridge.realtime.http import prewarm

        # Start-up work the first room would otherwise wait for, done before the first status
        # tells the parent this worker is ready.
        await prewarm()
        while True:
            self._emit_status()
            await asyncio.sleep(STATUS_INTERVAL)

    # ---- from the parent ------------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                message = json.loads(line)
                op = message.get("op")
            except (json.JSONDecodeError, AttributeError):
                logger.error("worker: ignoring a control line that is not a message")
                continue
            if op == "join":
                self._tasks.create_task(
                    self._join(message["room"], message.get("overrides"), message.get("trace")),
                    name=f"join-{message['room']}",
                )
            elif op == "leave":
                self.rooms.leave(message["room"])
            elif op == "stop":
                self.request_close("asked to stop")
                return
        self.request_close("control pipe closed (parent gone)")

    async def _join(self, room: str, overrides: dict[str, Any] | None, trace: Any) -> None:
        # This task's context: the room's spans continue the parent's dispatch trace.
        carrier.attach(trace)
        try:
            parsed = SessionOverrides.model_validate(overrides) if overrides else None
            await self.rooms.join(room, parsed)
        except Exception as exc:  # one room failing must not take the worker down
            logger.error("could not join room %s: %s", room, exc, extra={"room": room})
            self._emit({"ev": "join_failed", "room": room, "error": str(exc)[:300]})
            return
        self._emit({"ev": "joined", "room": room})

    # ---- closing ---------------------------------------------------------------------------

    def request_close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self._close.set()
        elif reason != self.close_reason:
            logger.info("worker already closing (%s); %s", self.close_reason, reason)

    def _signalled(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._parent_pid is not None and os.getppid() != self._parent_pid:
            self.request_close(f"{name}: parent gone")
        else:
            self.request_close(name)

    async def run(self, control: asyncio.StreamReader | None = None) -> int:
        """Serve until told to close, then close within ``CLOSE_TIMEOUT``; the exit code.
        ``control``: the parent's messages (default: stdin)."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._signalled, signum)
        reader = control
        if reader is None:
            reader = asyncio.StreamReader(limit=1 << 20)
            protocol = asyncio.StreamReaderProtocol(reader)
            await loop.connect_read_pipe(lambda: protocol, sys.stdin)
        self._tasks.create_task(self._control(reader), name="control")
        self._tasks.create_task(self._warm_then_report(), name="status")
        await self._close.wait()
        return await self._bounded_close()

    async def _bounded_close(self) -> int:
        logger.info("worker closing: %s", self.close_reason)
        arm_alarm(math.ceil(CLOSE_TIMEOUT + ALARM_GRACE))
        started = time.monotonic()
        # Not cancelled when it overruns: a close that ignores cancellation is what this bounds.
        closing = asyncio.ensure_future(self._close_all())
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT)
        if not done:
            current = asyncio.current_task()
            waiting = sorted(
                t.get_name() for t in asyncio.all_tasks() if t is not current and t is not closing
            )
            logger.error(
                "worker: close not finished after %g s (still running: %s); exiting anyway",
                CLOSE_TIMEOUT,
                ", ".join(waiting[:12]) or "nothing else",
            )
            self._hard_exit(1)
            return 1
        if closing.exception() is not None:
            logger.error("worker: close failed: %r", closing.exception())
            return 1
        logger.info("worker closed in %.2f s", time.monotonic() - started)
        return 0

    async def _close_all(self) -> None:
        await self.rooms.aclose()
        await self._tasks.aclose()


def _local_rooms(settings: Settings, budget: int, ended: EndedCallback) -> Rooms:
    from bridge.room.capacity import SessionBudget
    from bridge.service.local_rooms import LocalRooms

    return LocalRooms(settings, SessionBudget(budget), on_ended=ended)


def _exit_before_serving(signum: int, frame: FrameType | None) -> None:
    """Until the event loop takes SIGTERM and SIGINT over: no room yet, nothing to close."""
    print(
        f"room-bridge worker: {signal.Signals(signum).name} while starting; exiting",
        file=sys.stderr,
    )
    _flush_and_exit(0)


def child_main(argv: list[str]) -> int:
    import argparse

    from bridge.logs import setup_logging

    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_before_serving)
    parser = argparse.ArgumentParser(prog="bridge.service.worker_process")
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="end with this parent (PR_SET_PDEATHSIG)"
    )
    args = parser.parse_args(argv)
    if args.parent_pid is not None and not die_with_parent(args.parent_pid):
        print(f"room-bridge worker: parent {args.parent_pid} gone before start", file=sys.stderr)
        return 0
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"room-bridge worker: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    from bridge.tracing.export import start_tracing

    tracing = start_tracing("worker")
    try:
        worker = WorkerProcess(
            lambda ended: _local_rooms(settings, args.budget, ended), parent_pid=args.parent_pid
        )
        code = asyncio.run(worker.run())
    finally:
        tracing.shutdown()
    return code


if __name__ == "__main__":
    # os._exit, not sys.exit: past this point only the SDK's native dispose would run, and it
    # can abort the process after a clean close (exit -6).
    _flush_and_exit(child_main(sys.argv[1:]))


__all__ = ["CLOSE_TIMEOUT", "WorkerProcess", "child_main"]
