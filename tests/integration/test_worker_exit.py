"""No orphans: a worker process of ``serve`` never outlives it, whatever state it is in, and a
SIGTERM sent to a worker leaves its rooms and hangs up its calls (bridge/service/worker_process.py).

Processes are found by a mark in their environment (tests/support/processes.py), so a worker
that ``serve`` started a moment before it was killed, now re-parented, is found too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from bridge.emulator.app import EmulatorServer
from bridge.emulator.session import EmulatedSession
from bridge.local.livekit_server import LiveKitServer
from tests.support import processes
from tests.support.dispatch_harness import ServeProcess, agents_in, serve, serve_env
from tests.support.room_harness import Human, humans
from tests.support.waits import eventually

TOKEN = "dispatch-token-for-tests-0123456789"
# Rooms come only from the dispatch API here: no webhook, no reconcile joins on its own.
SERVE = {
    "rooms": "pattern",
    "room_patterns": "never-*",
    "reconcile_interval": "600",
    "dispatch_token": TOKEN,
}
GONE_WITHIN = 5.0  # seconds from serve's death to every worker gone (the bound)
WORKER = "bridge.service.worker_process"


@dataclass
class Life:
    """One ``serve`` being brought to the moment it is killed at."""

    bridge: ServeProcess
    case: str
    room: str
    human: Human
    emulator: EmulatorServer
    server: LiveKitServer
    background: list[asyncio.Task[object]] = field(default_factory=list)
    # Model calls open before serve was told to drain (the drain's stop hangs them up).
    open_calls: list[EmulatedSession] = field(default_factory=list)

    def workers(self) -> list[processes.Proc]:
        return [p for p in processes.marked(processes.CASE_MARK, self.case) if WORKER in p.command]


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    async def ok() -> bool:
        return check()

    deadline = time.monotonic() + timeout
    while not await ok():
        if time.monotonic() > deadline:
            raise TimeoutError("moment not reached in time")
        await asyncio.sleep(0.01)


async def _ready(life: Life) -> None:
    await life.bridge.wait_healthy()

    async def all_ready() -> bool:
        return all(w["ready"] for w in (await life.bridge.status())["workers"])

    await eventually(all_ready, timeout=30)


async def _dispatch(life: Life) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            life.bridge.url + "/dispatch",
            json={"room": life.room},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 202, answer.text


def _calls(life: Life, state: str) -> list[EmulatedSession]:
    return [c for c in life.emulator.emulator.calls.values() if c.state == state]


async def _in_session(life: Life) -> None:
    await _ready(life)
    await _dispatch(life)
    await _until(lambda: bool(_calls(life, "active")))
    life.open_calls = _calls(life, "active")
    life.background.append(asyncio.ensure_future(life.human.say(1.5)))
    await asyncio.sleep(0.3)  # mid-utterance: audio both ways


# ---- the moments ---------------------------------------------------------------------------


async def at_spawn(life: Life) -> None:
    """Right after ``serve``'s process was created (its workers not even started)."""


async def serve_starting(life: Life) -> None:
    await asyncio.sleep(0.3)


async def worker_importing(life: Life) -> None:
    """A worker process exists: exec'd, Python loading its modules."""
    await _until(lambda: bool(life.workers()))


def _loop_running(pid: int) -> bool:
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            if os.readlink(fd) == "anon_inode:[eventpoll]":
                return True
    return False


async def worker_warming_up(life: Life) -> None:
    """The worker's event loop exists (control pipe read, prewarm under way)."""
    await _until(lambda: any(_loop_running(w.pid) for w in life.workers()))


async def ready(life: Life) -> None:
    await _ready(life)


async def joining(life: Life) -> None:
    """The join is on its way to the worker (the dispatch API answered 202)."""
    await _ready(life)
    await _dispatch(life)


async def joined(life: Life) -> None:
    """LiveKit lists the agent; the human's session and model call are starting."""
    await _ready(life)
    await _dispatch(life)

    async def listed() -> bool:
        return bool(await agents_in(life.server, life.room))

    await eventually(listed, timeout=30)


async def mid_session(life: Life) -> None:
    await _in_session(life)


async def draining(life: Life) -> None:
    """SIGTERM: serve drains (up to drain_timeout, 5 s); SIGKILL half a second in."""
    await _in_session(life)
    life.bridge.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)


async def stopping_after_drain(life: Life) -> None:
    """The drain timed out and serve just told its worker to stop: killed as the worker closes."""
    await _in_session(life)
    life.bridge.proc.send_signal(signal.SIGTERM)
    await _until(lambda: "drain timeout: ending" in life.bridge.output())


MOMENTS: list[tuple[Callable[[Life], Awaitable[None]], dict[str, str]]] = [
    (at_spawn, {}),
    (serve_starting, {}),
    (worker_importing, {}),
    (worker_warming_up, {}),
    (ready, {}),
    (joining, {}),
    (joined, {}),
    (mid_session, {}),
    (draining, {}),
    (stopping_after_drain, {"drain_timeout": "0.3"}),
]


async def _kill_at(
    moment: Callable[[Life], Awaitable[None]],
    settings: dict[str, str],
    *,
    server: LiveKitServer,
    emulator: EmulatorServer,
    room: str,
    human: Human,
) -> None:
    case = processes.new_mark()
    name = moment.__name__
    async with serve(
        server,
        emulator,
        healthy=False,
        extra_env={processes.CASE_MARK: case},
        **cast(dict[str, Any], {**SERVE, **settings}),
    ) as bridge:
        life = Life(bridge, case, room, human, emulator, server)
        try:
            await moment(life)
            open_calls = list({id(c): c for c in life.open_calls + _calls(life, "active")}.values())
            workers_before = life.workers()
            bridge.proc.kill()
            await bridge.proc.wait()
            killed = time.monotonic()
            left = await asyncio.to_thread(
                processes.wait_gone, processes.marked(processes.CASE_MARK, case), GONE_WITHIN
            )
            took = time.monotonic() - killed
            assert not left, f"{name}: alive {took:.1f} s after serve: {left}\n{bridge.output()}"
            if name not in ("at_spawn", "serve_starting"):
                assert workers_before, f"{name}: no worker had started"

            async def room_left() -> bool:
                return not await agents_in(server, room)

            await eventually(room_left, timeout=GONE_WITHIN)
            ends = [(c.state, c.ended_reason) for c in open_calls]
            assert ends == [("ended", "hangup")] * len(open_calls), f"{name}: {ends}"
            if name in ("mid_session", "draining", "stopping_after_drain"):
                assert open_calls, f"{name}: no model call was open"
        finally:
            for task in life.background:
                task.cancel()
            await asyncio.gather(*life.background, return_exceptions=True)


@pytest.mark.timeout(180)  # ten serve lifetimes; ~30 s on a quiet machine
async def test_no_worker_outlives_a_killed_serve_at_ten_moments(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    room = f"orphans-{uuid.uuid4().hex[:8]}"
    async with humans(livekit_server, room, "alice") as (alice,):
        for moment, settings in MOMENTS:
            await _kill_at(
                moment,
                settings,
                server=livekit_server,
                emulator=emulator,
                room=room,
                human=alice,
            )


# ---- one worker, its own parent here -------------------------------------------------------


def _signals(pid: int) -> dict[str, set[str]]:
    """The dispositions of SIGINT and SIGTERM: ignored (SigIgn) or handled (SigCgt)."""
    found: dict[str, set[str]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigIgn", "SigCgt"):
            mask = int(value, 16)
            found[key] = {s.name for s in (signal.SIGINT, signal.SIGTERM) if mask >> (s - 1) & 1}
    return found


@contextlib.asynccontextmanager
async def _lone_worker(
    env: dict[str, str],
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    with tempfile.TemporaryDirectory(prefix="worker-") as tmp:
        log = Path(tmp) / "worker.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER,
                "--budget",
                "2",
                "--parent-pid",
                str(os.getpid()),
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        try:
            yield proc, log
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_sigterm_to_a_worker_leaves_its_room_hangs_up_and_exits_0(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    room = f"sigterm-{uuid.uuid4().hex[:8]}"
    async with (
        _lone_worker(serve_env(livekit_server, emulator)) as (proc, log),
        humans(livekit_server, room, "alice") as (alice,),
    ):
        assert proc.stdin is not None and proc.stdout is not None
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))["ev"] == "status"
        # Handled, not ignored: the SDK's native runtime (up once a room is joined) leaves it so.
        assert _signals(proc.pid) == {"SigIgn": set(), "SigCgt": {"SIGINT", "SIGTERM"}}
        proc.stdin.write(json.dumps({"op": "join", "room": room}).encode() + b"\n")
        known = set(emulator.emulator.calls)

        def call() -> EmulatedSession | None:
            new = [c for i, c in emulator.emulator.calls.items() if i not in known]
            return new[0] if new and new[0].state == "active" else None

        await _until(lambda: call() is not None)
        model_call = call()
        assert model_call is not None
        assert _signals(proc.pid) == {"SigIgn": set(), "SigCgt": {"SIGINT", "SIGTERM"}}
        speaking = asyncio.ensure_future(alice.say(1.0))
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.wait_for(proc.wait(), GONE_WITHIN) == 0
        finally:
            await speaking
        assert await agents_in(livekit_server, room) == []
        assert (model_call.state, model_call.ended_reason) == ("ended", "hangup")
        text = log.read_text()
        assert "worker closing: SIGTERM" in text and "worker closed in" in text, text


async def test_a_worker_ends_with_its_parent_when_its_pipes_stay_open() -> None:
    """The backstop: the parent dies, yet another process holds the worker's control pipe open
    (no end of file, no broken pipe); the kernel's PR_SET_PDEATHSIG signal ends it."""
    env = {
        **os.environ,
        "LIVEKIT_URL": "ws://127.0.0.1:9",
        "LIVEKIT_API_KEY": "APIunused",
        "LIVEKIT_API_SECRET": "unused-secret-of-32-characters-at-least",
        "OPENAI_API_KEY": "sk-unused",
    }
    parent_code = (
        "import os, subprocess, sys\n"
        "worker = subprocess.Popen([sys.executable, '-m', sys.argv[1], '--budget', '1',"
        " '--parent-pid', str(os.getpid())], stderr=open(sys.argv[2], 'wb'))\n"
        "print(worker.pid, flush=True)\n"
        "worker.wait()\n"
    )
    with tempfile.TemporaryDirectory(prefix="worker-") as tmp:
        log = Path(tmp) / "worker.log"
        # The worker inherits the parent's stdin and stdout: pipes this test holds open.
        parent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            parent_code,
            WORKER,
            str(log),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert parent.stdout is not None
        try:
            worker = int(await asyncio.wait_for(parent.stdout.readline(), 30))
            first = await asyncio.wait_for(parent.stdout.readline(), 30)
            assert json.loads(first)["ev"] == "status"  # serving, its pipes open
            parent.kill()
            await parent.wait()
            left = await asyncio.to_thread(
                processes.wait_gone, [processes.Proc(worker, WORKER)], GONE_WITHIN
            )
            assert not left, log.read_text()
            assert "worker closing: SIGTERM: parent gone" in log.read_text()
        finally:
            if parent.returncode is None:
                parent.kill()
                await parent.wait()
            processes.kill([processes.Proc(worker, WORKER)] if "worker" in locals() else [])
