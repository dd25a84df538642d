"""A scripted 3-person meeting for benchmarks: the real bridge (tests/bench/bridge_process.py, a
process of its own) in a real livekit-server room with SDK humans
(tests/support/room_harness.py) who take turns speaking, against the emulator in another process.

A human "says" something by speaking a tone for the turn's length; the emulator's VAD makes it
one user turn and transcribes it with the next of its scripted ``transcripts`` (one counter per
model call). With :func:`transcripts` ``(3)`` every third utterance a call hears is "Assistant,
...", which the ``addressed`` response policy answers. Used by cost_bench and meeting_bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from bridge.local.livekit_server import LiveKitServer
from tests.support.env import LOOPBACK_ENV
from tests.support.room_harness import Human

KEY = "sk-bench-0123456789"
JOIN_ATTEMPTS = 3
# identity, name, tone (Hz)
PEOPLE = (("alice", "Alice", 300.0), ("bob", "Bob", 420.0), ("carol", "Carol", 540.0))
ADDRESSING = "Assistant, what do you think we should do next?"
REMARKS = (
    "I think the numbers for this quarter look better than we expected.",
    "Agreed, but the schedule is tight and testing needs another week.",
    "Let us keep the scope as it is and move the release by a few days.",
    "The customers asked for the export feature again last week.",
)
# About 150 characters: 10 s of speech at the emulator's 15 characters per second.
ANSWER = (
    "Sure. Here is a short summary of where we are, what was decided so far, and what the "
    "next step for the team should be before the end of this week."
)


def transcripts(address_every: int) -> list[str]:
    """The emulator's scripted transcripts: every ``address_every``-th utterance of a call
    addresses the agent (0: none does)."""
    if address_every <= 0:
        return list(REMARKS)
    return [REMARKS[i % len(REMARKS)] for i in range(address_every - 1)] + [ADDRESSING]


@dataclass(frozen=True)
class Turn:
    speaker: int  # index into the people
    seconds: float  # speech
    pause: float  # silence after it
    addressed: bool  # the emulator will transcribe it as addressing the agent


def script(
    *,
    seed: int,
    people: int,
    shortest: float,
    longest: float,
    pause: float,
    address_every: int,
    shared: bool,
) -> Iterator[Turn]:
    """Turns in rotation, lengths seeded (the same sequence in every mode). Which turns address
    the agent follows the emulator's per-call counter: in shared mode one call hears every turn
    (every ``address_every``-th turn); per participant each call hears one person (every
    ``address_every``-th turn of each person)."""
    rng = random.Random(seed)
    heard = [0] * people  # utterances each call has heard
    n = 0
    while True:
        speaker = n % people
        call = 0 if shared else speaker
        addressed = address_every > 0 and heard[call] % address_every == address_every - 1
        heard[call] += 1
        yield Turn(speaker, round(rng.uniform(shortest, longest), 2), pause, addressed)
        n += 1


def bridge_env(server: LiveKitServer, base_url: str, **settings: str) -> dict[str, str]:
    """Environment of a bridge process: this LiveKit server, the emulator, and ``settings`` as
    ``BRIDGE_<NAME>`` variables."""
    return {
        **os.environ,
        **LOOPBACK_ENV,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": base_url,
        "BRIDGE_EMPTY_ROOM_GRACE": "600",
        "BRIDGE_VIDEO_ENABLED": "false",
        **{f"BRIDGE_{name.upper()}": value for name, value in settings.items()},
    }


class BridgeProcess:
    """tests/bench/bridge_process.py for one room: reports (JSON) when asked on stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, env: dict[str, str], room: str) -> AsyncIterator[BridgeProcess]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.bridge_process",
            "--rooms",
            room,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 90)
            if not line:
                raise RuntimeError(f"bridge process for {room} exited before it was ready")
            yield cls(proc)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            await proc.wait()

    async def _ask(self, word: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("bridge process exited")
        result: dict[str, Any] = json.loads(line)
        return result

    async def peek(self, timeout: float = 30.0) -> dict[str, Any]:
        """What it measured so far; it goes on."""
        return await self._ask("peek", timeout)

    async def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Its last report; then it leaves the room and exits."""
        report = await self._ask("stop", timeout)
        await asyncio.wait_for(self.proc.wait(), timeout)
        return report

    async def calls_ready(self, count: int, timeout: float = 180.0) -> None:
        """Until its sessions have ``count`` model calls up."""
        until = time.monotonic() + timeout
        while (await self.peek())["model_calls"] < count:
            if time.monotonic() > until:
                raise TimeoutError(f"{count} model calls not up in {timeout:.0f} s")
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def joined(
    server: LiveKitServer, room: str, count: int = 3, *, listen: bool = True
) -> AsyncIterator[list[Human]]:
    """``count`` of PEOPLE in ``room``, microphones on (``listen``: subscribed to the agent's
    audio); they leave on exit. A join that times out (a loaded machine) is tried again, up to
    ``JOIN_ATTEMPTS`` times."""
    people: list[Human] = []
    try:
        for identity, name, _ in PEOPLE[:count]:
            for attempt in range(1, JOIN_ATTEMPTS + 1):
                person = Human(server, room, identity, name=name, auto_subscribe=listen)
                try:
                    await person.join()
                except TimeoutError:
                    with contextlib.suppress(Exception):
                        await person.leave()
                    if attempt == JOIN_ATTEMPTS:
                        raise
                    continue
                people.append(person)
                break
        yield people
    finally:
        for person in people:
            with contextlib.suppress(Exception):
                await person.leave()


@dataclass
class Tally:
    turns: int = 0
    addressed: int = 0
    answered: int = 0  # addressed turns the agent answered (spoke, then listened again)
    seconds: float = 0.0


async def _answer(watcher: Human, mark: int, timeout: float) -> bool:
    """The agent spoke after ``mark`` (an index into ``watcher.states``) and is done."""

    def spoke() -> int | None:
        states = watcher.states[mark:]
        return states.index("speaking") if "speaking" in states else None

    try:
        await watcher.wait_until(lambda: spoke() is not None, timeout=timeout)
        began = mark + (spoke() or 0)
        await watcher.wait_until(
            lambda: any(s != "speaking" for s in watcher.states[began + 1 :]), timeout=timeout
        )
    except TimeoutError:
        return False
    return True


async def hold(
    people: list[Human], turns: Iterator[Turn], seconds: float, *, answer_timeout: float = 30.0
) -> Tally:
    """Take ``turns`` until ``seconds`` have passed. After a turn that addresses the agent, the
    next speaker waits until its answer is over (nobody talks over it)."""
    tally = Tally()
    watcher = people[0]
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        turn = next(turns)
        mark = len(watcher.states)
        await people[turn.speaker].say(turn.seconds, freq=PEOPLE[turn.speaker][2], pause=turn.pause)
        tally.turns += 1
        if turn.addressed:
            tally.addressed += 1
            tally.answered += await _answer(watcher, mark, answer_timeout)
    tally.seconds = time.monotonic() - started
    return tally


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
