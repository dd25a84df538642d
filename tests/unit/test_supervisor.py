"""The call supervisor and its retry policy (bridge/room/supervisor.py, retry.py), without
LiveKit or the emulator: scripted calls behind the ``CallHost``/``Leg`` seams, no real sleeps."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from bridge.aio import TaskSet
from bridge.realtime import (
    RealtimeAPIError,
    RealtimeConnectionError,
    RealtimeError,
    RealtimeProtocolError,
)
from bridge.room.retry import STABLE_CALL_SECONDS, RetryPolicy
from bridge.room.supervisor import CallSupervisor, Ending, SessionStats

POLICY = RetryPolicy(attempts=3, initial_s=0.5, max_s=4.0)

# ---- the policy --------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_ceiling() -> None:
    failure = RealtimeConnectionError("ICE failed")
    assert [POLICY.delay(n, failure) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert RetryPolicy(attempts=9, initial_s=0.5, max_s=4.0).delay(8, failure) == 4.0
    assert POLICY.delay(2, failure, jitter=1.2) == pytest.approx(1.2)


def test_giving_up_too_many_or_not_retryable() -> None:
    assert POLICY.delay(4, RealtimeConnectionError("ICE failed")) is None
    assert POLICY.delay(1, RealtimeAPIError(401, "bad key")) is None
    assert POLICY.delay(1, RealtimeProtocolError("no session.created")) is None
    assert POLICY.delay(1, RealtimeAPIError(503, "busy")) == 0.5


def test_retry_after_is_honoured_up_to_the_ceiling() -> None:
    assert POLICY.delay(1, RealtimeAPIError(429, "slow down", retry_after=3.0)) == 3.0
    assert POLICY.delay(1, RealtimeAPIError(429, "slow down", retry_after=60.0)) == 4.0
    assert POLICY.delay(3, RealtimeAPIError(429, "slow down", retry_after=0.1)) == 2.0


def test_after_a_working_call_at_once() -> None:
    dropped = RealtimeError("call ended unexpectedly", retryable=True)
    assert POLICY.delay(1, dropped, at_once=True) == 0.0
    assert POLICY.delay(4, dropped, at_once=True) is None  # still bounded
    assert POLICY.healthy(lasted_s=STABLE_CALL_SECONDS, answered=False)
    assert POLICY.healthy(lasted_s=1.0, answered=True)
    assert not POLICY.healthy(lasted_s=1.0, answered=False)


# ---- the supervisor ----------------------------------------------------------------------------

_ids = itertools.count(1)


@dataclass(eq=False)
class FakeLeg:
    lasted_s: float = 0.0  # how old the call is when its conversation ends
    connected_at: float = field(default_factory=time.monotonic)
    call_id: str | None = field(default_factory=lambda: f"rtc_{next(_ids)}")
    closed_reason: str | None = None
    connect_seconds: float | None = 0.1
    closed: bool = False
    how: str = ""

    async def aclose(self, how: str = "hung up") -> None:
        self.closed = True
        self.how = how


Step = Ending | Exception | Callable[[], None]


class Host:
    """A session whose conversations end as scripted (an exception is raised from converse)."""

    def __init__(self, *endings: Step, answers: int = 0) -> None:
        self.endings = list(endings)
        self.answers_per_call = answers
        self.responses = 0
        self.log: list[str] = []
        self.failure: RealtimeError | None = None
        self.woken = asyncio.Event()
        self.woken.set()

    def connecting(self) -> None:
        self.log.append("connecting")

    def take_up(self, leg: FakeLeg) -> None:
        self.log.append(f"take_up {leg.call_id}")

    def put_down(self) -> None:
        self.log.append("put_down")

    async def converse(self, leg: FakeLeg) -> Ending:
        leg.connected_at = time.monotonic() - leg.lasted_s
        self.responses += self.answers_per_call
        step = self.endings.pop(0) if self.endings else None
        if step is None:
            await asyncio.Event().wait()  # the script is over: converse until cancelled
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, Ending):
            step()
            return Ending.CLOSED
        assert isinstance(step, Ending)
        leg.closed_reason = step.value
        return step

    async def sleep_until_woken(self) -> None:
        self.log.append("idle")
        await self.woken.wait()

    def gave_up(self, failure: RealtimeError) -> None:
        self.failure = failure


class Successor:
    def __init__(self) -> None:
        self.prepared: FakeLeg | None = None
        self.resets = 0

    def take(self) -> FakeLeg | None:
        leg, self.prepared = self.prepared, None
        return leg

    async def reset(self) -> None:
        self.resets += 1


class Dialer:
    """Each dial is the next scripted outcome: a leg, or a failure to raise."""

    def __init__(self, *outcomes: FakeLeg | Exception) -> None:
        self.outcomes = list(outcomes)
        self.legs: list[FakeLeg] = []

    async def __call__(self) -> FakeLeg:
        outcome = self.outcomes.pop(0) if self.outcomes else FakeLeg()
        if isinstance(outcome, Exception):
            raise outcome
        self.legs.append(outcome)
        return outcome


@dataclass
class Run:
    supervisor: CallSupervisor[FakeLeg]
    host: Host
    dialer: Dialer
    successor: Successor
    stats: SessionStats
    sleeps: list[float]


def supervise(host: Host, dialer: Dialer, policy: RetryPolicy = POLICY) -> Run:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    successor, stats = Successor(), SessionStats()
    supervisor: CallSupervisor[FakeLeg] = CallSupervisor(
        dial=dialer,
        host=host,
        successor=successor,
        policy=policy,
        stats=stats,
        log_extra={"room": "r", "participant": "p"},
        sleep=sleep,
        jitter=lambda: 1.0,
    )
    return Run(supervisor, host, dialer, successor, stats, sleeps)


async def until_given_up(run: Run) -> None:
    await asyncio.wait_for(run.supervisor.run(), 5)
    assert run.host.failure is not None


async def test_a_refused_call_is_retried_after_its_backoff() -> None:
    run = supervise(
        Host(Ending.CLOSED, Ending.CLOSED, Ending.CLOSED, Ending.CLOSED),
        Dialer(RealtimeAPIError(503, "busy")),
    )
    await until_given_up(run)
    # One refusal, then three calls dropping at once: retried with growing backoff, given up.
    assert run.sleeps == [0.5, 1.0, 2.0]
    assert run.stats.failures == {"http_503": 1, "RealtimeError": 3}
    assert run.stats.calls == 3
    assert all(leg.closed for leg in run.dialer.legs)
    assert "call ended unexpectedly: closed" in str(run.host.failure)


async def test_not_retryable_gives_up_at_once() -> None:
    run = supervise(Host(), Dialer(RealtimeAPIError(401, "bad key")))
    await until_given_up(run)
    assert run.sleeps == [] and run.stats.calls == 0
    assert run.stats.failures == {"http_401": 1}
    assert isinstance(run.host.failure, RealtimeAPIError)


async def test_a_working_call_that_drops_is_replaced_at_once_and_retries_start_over() -> None:
    # Each call answers before it drops: healthy, so the next goes at once, every time (more
    # drops than attempts, and still no backoff and no giving up).
    run = supervise(Host(*[Ending.CLOSED] * 5, answers=1), Dialer())
    task = asyncio.create_task(run.supervisor.run())
    await wait_until(lambda: run.stats.calls == 6)
    assert run.sleeps == []  # at once: not even a zero wait
    assert run.host.failure is None
    assert run.stats.failures == {"RealtimeError": 5}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert all(leg.closed for leg in run.dialer.legs)  # the one in use too


async def test_a_long_call_counts_as_working() -> None:
    long_call = FakeLeg(lasted_s=STABLE_CALL_SECONDS + 1)
    run = supervise(
        Host(Ending.CLOSED, Ending.CLOSED, Ending.CLOSED),
        Dialer(FakeLeg(), long_call, FakeLeg(), FakeLeg()),
    )
    task = asyncio.create_task(run.supervisor.run())
    await wait_until(lambda: run.stats.calls == 4)
    # The first drop backs off; after the long call the next goes at once (retries start over),
    # and a drop right after that is its second retry.
    assert run.sleeps == [0.5, 1.0]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_rollover_hands_over_to_the_prepared_call_without_dialling() -> None:
    run = supervise(Host(Ending.ROLLOVER, Ending.EXPIRED), Dialer())
    prepared = FakeLeg()
    run.successor.prepared = prepared
    task = asyncio.create_task(run.supervisor.run())
    await wait_until(lambda: run.stats.calls == 3)
    first = run.dialer.legs[0]
    # Make-before-break: the prepared call is taken up before the old one is put down... hung up.
    assert run.host.log[:5] == [
        "connecting",
        f"take_up {first.call_id}",
        "put_down",
        f"take_up {prepared.call_id}",
        "put_down",  # the service expired it with nothing prepared: dialled at once
    ]
    assert first.closed and prepared.closed
    assert (first.how, prepared.how) == ("rollover", "expired")  # what their spans say
    assert len(run.dialer.legs) == 2 and run.sleeps == []
    assert run.stats.failures == {}
    assert run.supervisor.leg is run.dialer.legs[1]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert run.supervisor.leg is None


async def test_idle_hangs_up_until_the_human_speaks() -> None:
    host = Host(Ending.IDLE)
    host.woken.clear()
    run = supervise(host, Dialer())
    task = asyncio.create_task(run.supervisor.run())
    await wait_until(lambda: "idle" in host.log)
    assert run.dialer.legs[0].closed and run.stats.calls == 1
    host.woken.set()
    await wait_until(lambda: run.stats.calls == 2)
    assert run.stats.failures == {} and run.sleeps == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_bug_in_a_conversation_ends_that_call_not_the_session() -> None:
    run = supervise(Host(ValueError("bug"), answers=1), Dialer())
    task = asyncio.create_task(run.supervisor.run())
    await wait_until(lambda: run.stats.calls == 2)
    assert run.dialer.legs[0].closed and run.host.failure is None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_early_call_is_used_first_or_hung_up_when_unused() -> None:
    early = FakeLeg()
    run = supervise(Host(), Dialer(early))
    tasks = TaskSet("test")
    run.supervisor.dial_early(tasks)
    task = asyncio.create_task(run.supervisor.run())
    await wait_until(lambda: run.stats.calls == 1)
    assert run.supervisor.leg is early and len(run.dialer.legs) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await tasks.aclose()
    await run.supervisor.aclose()
    # A session that ends before it takes up its first call hangs that call up.
    unused = FakeLeg()
    run = supervise(Host(), Dialer(unused))
    tasks = TaskSet("test")
    run.supervisor.dial_early(tasks)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await tasks.aclose()
    await run.supervisor.aclose()
    assert unused.closed and run.stats.calls == 0


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.001)
