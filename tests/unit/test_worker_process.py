"""A serve worker's close: started by the parent's stop, its control pipe's end or a signal, and
bounded (a close that never finishes ends in a logged hard exit). Real processes:
tests/integration/test_worker_exit.py."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from bridge.service import worker_process
from bridge.service.local_rooms import EndedCallback, RoomInfo
from bridge.service.worker_process import WorkerProcess
from bridge.settings.config import SessionOverrides


class _Rooms:
    """Rooms whose close waits for ``released`` (set at once unless the test holds it)."""

    def __init__(self, ended: EndedCallback, *, hang: bool = False) -> None:
        self.ended = ended
        self.released = asyncio.Event()
        if not hang:
            self.released.set()
        self.closed = 0

    def status(self) -> dict[str, RoomInfo]:
        return {}

    async def join(self, room: str, overrides: SessionOverrides | None = None) -> None:
        raise RuntimeError("no rooms in unit tests")

    def leave(self, room: str, reason: str = "asked to leave") -> bool:
        return False

    async def aclose(self, reason: str = "shutting down") -> None:
        self.closed += 1
        await self.released.wait()


class _Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []

    def __call__(self, code: int) -> None:
        self.codes.append(code)


@pytest.fixture
def alarms(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The kernel backstop armed by a close (not for real: it would end the test process)."""
    armed: list[int] = []
    monkeypatch.setattr(worker_process, "arm_alarm", armed.append)
    return armed


def _worker(*, hang: bool = False) -> tuple[WorkerProcess, _Exits]:
    exits = _Exits()
    worker = WorkerProcess(lambda ended: _Rooms(ended, hang=hang), hard_exit=exits)
    return worker, exits


async def _run(worker: WorkerProcess, control: asyncio.StreamReader) -> int:
    """``worker.run``, then this process's SIGTERM and SIGINT handling as it was."""
    before = {sig: signal.getsignal(sig) for sig in worker_process.STOP_SIGNALS}
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(worker.run(control), 5)
    finally:
        for sig, handler in before.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


def _rooms(worker: WorkerProcess) -> _Rooms:
    assert isinstance(worker.rooms, _Rooms)
    return worker.rooms


async def test_a_stop_message_closes_the_rooms_and_exits_0(alarms: list[int]) -> None:
    worker, exits = _worker()
    control = asyncio.StreamReader()
    control.feed_data(b'{"op": "stop"}\n')
    assert await _run(worker, control) == 0
    assert worker.close_reason == "asked to stop"
    assert _rooms(worker).closed == 1
    assert exits.codes == []
    assert alarms == [6]  # CLOSE_TIMEOUT + ALARM_GRACE


async def test_the_control_pipes_end_closes_the_worker_even_while_warming_up(
    alarms: list[int],
) -> None:
    worker, _ = _worker()
    control = asyncio.StreamReader()
    control.feed_eof()  # the parent died before the worker's first status
    assert await _run(worker, control) == 0
    assert worker.close_reason == "control pipe closed (parent gone)"
    assert _rooms(worker).closed == 1


async def test_sigterm_starts_the_same_close(alarms: list[int]) -> None:
    worker, _ = _worker()
    running = asyncio.ensure_future(_run(worker, asyncio.StreamReader()))
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler, installed by run()
    assert await running == 0
    assert worker.close_reason == "SIGTERM"


async def test_a_close_that_never_finishes_ends_in_a_logged_hard_exit(
    alarms: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_process, "CLOSE_TIMEOUT", 0.3)
    worker, exits = _worker(hang=True)
    control = asyncio.StreamReader()
    control.feed_eof()
    with caplog.at_level(logging.INFO, logger="bridge.service.worker_process"):
        assert await _run(worker, control) == 1
    assert exits.codes == [1]
    assert "close not finished after 0.3 s (still running: " in caplog.text
    assert "exiting anyway" in caplog.text
    _rooms(worker).released.set()  # let the abandoned close end with the test
    await asyncio.sleep(0.05)
