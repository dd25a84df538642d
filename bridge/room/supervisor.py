"""CallSupervisor: keeps one session's model call up.

It dials (the first call while the session publishes its answer track), hands the call to the
session to converse on until it ends (``Ending``), and then decides what comes next: the call
the rollover prepared, a new call at once, a new call after a backoff (``RetryPolicy``), waiting
for the human to speak again, or giving up (a non-retryable failure, or too many in a row).

    supervisor = CallSupervisor(dial=open_call, host=session, successor=rollover,
                                policy=RetryPolicy.from_settings(settings), stats=stats, ...)
    supervisor.dial_early(tasks)                    # the first call connects meanwhile
    tasks.create_task(supervisor.run())
    ...
    await supervisor.aclose()                       # after the run task: an unused call hung up

No LiveKit here: the session behind ``CallHost`` and the calls behind ``Leg`` may be fakes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, Protocol, TypeVar

from bridge.aio import TaskSet
from bridge.metrics import CALL_FAILURES, CALLS_STARTED, SESSIONS_ACTIVE
from bridge.realtime import RealtimeAPIError, RealtimeClosedError, RealtimeError
from bridge.room.retry import RetryPolicy

logger = logging.getLogger(__name__)


class Ending(Enum):
    """How a conversation on one call ended."""

    IDLE = "idle"  # nothing happened for idle_timeout: hung up until the human speaks
    EXPIRED = "expired"  # the service ended the session at its limit
    CLOSED = "closed"  # the call went away (dropped, overflowed, failed)
    ROLLOVER = "rollover"  # the prepared next call is up and the conversation is quiet


@dataclass
class SessionStats:
    """What a session did; benchmarks and tests read it."""

    started_at: float | None = None  # perf_counter() times: start(), agent track published,
    published_at: float | None = None  # first call connected, first call in use
    first_connected_at: float | None = None
    first_ready_at: float | None = None
    calls: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    barge_ins: int = 0
    texts_dropped: int = 0  # chat texts that arrived while no call was up, beyond those kept


class Leg(Protocol):
    """One connected call (bridge/room/rollover.py ``CallLeg``)."""

    connected_at: float  # monotonic

    @property
    def call_id(self) -> str | None: ...

    @property
    def closed_reason(self) -> str | None: ...

    @property
    def connect_seconds(self) -> float | None: ...

    async def aclose(self, how: str = "hung up") -> None:
        """Hang up (``how`` its conversation ended, for its span)."""


L = TypeVar("L", bound=Leg)
L_contra = TypeVar("L_contra", bound=Leg, contravariant=True)
L_co = TypeVar("L_co", bound=Leg, covariant=True)


class CallHost(Protocol[L_contra]):
    """The session, as the supervisor drives it."""

    @property
    def responses(self) -> int:
        """Responses the session has had so far (an answer makes a call healthy)."""

    def connecting(self) -> None: ...

    def take_up(self, leg: L_contra) -> None:
        """``leg`` is the session's call now: microphone, camera and tools go to it."""

    def put_down(self) -> None:
        """The call is no longer in use."""

    async def converse(self, leg: L_contra) -> Ending: ...

    async def sleep_until_woken(self) -> None:
        """Idle: until the human speaks (or types) again."""

    def gave_up(self, failure: RealtimeError) -> None: ...


class Successor(Protocol[L_co]):
    """The next call prepared before the current one ends (bridge/room/rollover.py)."""

    def take(self) -> L_co | None: ...

    async def reset(self) -> None: ...


class CallSupervisor(Generic[L]):
    def __init__(
        self,
        *,
        dial: Callable[[], Awaitable[L]],
        host: CallHost[L],
        successor: Successor[L],
        policy: RetryPolicy,
        stats: SessionStats,
        log_extra: dict[str, str],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2),  # not crypto
    ) -> None:
        self._dial = dial
        self._host = host
        self._successor = successor
        self._policy = policy
        self._stats = stats
        self._extra = log_extra
        self._sleep = sleep
        self._jitter = jitter
        # The first call, connecting while the session publishes its answer track.
        self._early: asyncio.Task[L | Exception] | None = None
        self.leg: L | None = None  # the call in use
        self.last_call_id: str | None = None

    def dial_early(self, tasks: TaskSet) -> None:
        self._early = tasks.create_task(self._dial_early(), name="first-call")

    async def aclose(self) -> None:
        """After ``run`` has ended: hang up a first call that connected but was never used."""
        early, self._early = self._early, None
        done = early is not None and early.done() and not early.cancelled()
        unused = early.result() if early is not None and done else None
        if unused is not None and not isinstance(unused, Exception):
            await unused.aclose()

    async def run(self) -> None:
        attempt = 0
        leg: L | None = None
        while True:
            if leg is None:
                self._host.connecting()
                try:
                    leg = await self._next_leg()
                except Exception as exc:  # one session's failure must never reach the room
                    failure = self._as_failure(exc)
                    attempt += 1
                    if not await self._retry(failure, attempt):
                        return
                    continue
                self._use(leg)
            answered = self._host.responses
            ending = Ending.CLOSED
            try:
                ending = await self._converse(leg)
            finally:
                old, leg = leg, await self._hand_over(leg, ending)
            lasted = time.monotonic() - old.connected_at
            healthy = self._policy.healthy(
                lasted_s=lasted, answered=self._host.responses > answered
            )
            if healthy:
                attempt = 0
            if leg is not None:
                continue
            if ending is Ending.IDLE:
                logger.info("session idle; call ended until the human speaks", extra=self._extra)
                await self._host.sleep_until_woken()
            elif ending is Ending.CLOSED:
                # A call that keeps dropping soon after connecting is retried like a refusal,
                # so a flapping service gets backoff, not a reconnect storm. Only the first
                # call after a working one goes at once.
                attempt += 1
                failure = RealtimeError(
                    f"call ended unexpectedly: {old.closed_reason}", retryable=True
                )
                if not await self._retry(failure, attempt, at_once=healthy):
                    return
            # EXPIRED or ROLLOVER with no prepared call to take: the next one at once.

    async def _retry(self, failure: RealtimeError, attempt: int, *, at_once: bool = False) -> bool:
        """Count ``failure``; wait as the policy says and return True, or give up (False)."""
        reason = type(failure).__name__
        if isinstance(failure, RealtimeAPIError):
            reason = f"http_{failure.status}"
        self._stats.failures[reason] += 1
        CALL_FAILURES.labels(reason).inc()
        delay = self._policy.delay(attempt, failure, at_once=at_once, jitter=self._jitter())
        if delay is None:
            why = "not retryable" if not failure.retryable else f"{attempt - 1} retries failed"
            logger.error(
                "model call failed (%s): %s; session ended", why, failure, extra=self._extra
            )
            self._host.gave_up(failure)
            return False
        if at_once:
            logger.warning("model call dropped (%s); calling again", failure, extra=self._extra)
            return True
        logger.warning(
            "model call failed (%s); retry %d/%d in %.1f s",
            failure,
            attempt,
            self._policy.attempts,
            delay,
            extra=self._extra,
        )
        await self._sleep(delay)
        return True

    async def _converse(self, leg: L) -> Ending:
        try:
            return await self._host.converse(leg)
        except RealtimeClosedError:
            return Ending.CLOSED  # the call went away while we were sending on it
        except Exception:  # a bug must end this call, not the session
            logger.exception("call failed unexpectedly", extra=self._extra)
            return Ending.CLOSED

    async def _hand_over(self, old: L, ending: Ending) -> L | None:
        """After a call: make-before-break, the next call prepared by the rollover (if any)
        takes the microphone and the speaker before the old one is hung up. Returns it."""
        new = self._successor.take() if ending in (Ending.ROLLOVER, Ending.EXPIRED) else None
        self.leg = None
        self._host.put_down()
        if new is not None:
            self._use(new)
        SESSIONS_ACTIVE.dec()
        await old.aclose(ending.value)
        await self._successor.reset()
        if new is not None:
            logger.info(
                "call rolled over after %.0f s (%s)",
                time.monotonic() - old.connected_at,
                "quiet moment" if ending is Ending.ROLLOVER else "service limit",
                extra={**self._extra, "call_id": old.call_id or ""},
            )
        return new

    def _as_failure(self, exc: Exception) -> RealtimeError:
        if isinstance(exc, RealtimeError):
            return exc
        logger.error("unexpected error setting up a call", exc_info=exc, extra=self._extra)
        return RealtimeError(f"unexpected {type(exc).__name__}: {exc}", retryable=True)

    async def _dial_early(self) -> L | Exception:
        """``dial``, its failure returned for ``run`` to count and retry like any other."""
        try:
            return await self._dial()
        except Exception as exc:
            return exc

    async def _next_leg(self) -> L:
        """The call dialled early the first time, then a new one."""
        early = self._early
        # Cleared only once taken: a session closing while this await is woken (the call just
        # connected) finds it still there and hangs it up, instead of leaking a live call.
        leg = await early if early is not None else await self._dial()
        self._early = None
        if isinstance(leg, Exception):
            raise leg
        if self._stats.first_connected_at is None:
            self._stats.first_connected_at = time.perf_counter()
        return leg

    def _use(self, leg: L) -> None:
        """Make ``leg`` the session's call."""
        self.leg = leg
        self.last_call_id = leg.call_id
        self._stats.calls += 1
        if self._stats.first_ready_at is None:
            self._stats.first_ready_at = time.perf_counter()
        CALLS_STARTED.inc()
        SESSIONS_ACTIVE.inc()
        # bridge_call_setup_seconds: observed by the dialer's call trace, with its exemplar.
        self._host.take_up(leg)
        logger.info("session call ready", extra={**self._extra, "call_id": leg.call_id})


__all__ = ["CallHost", "CallSupervisor", "Ending", "Leg", "SessionStats", "Successor"]
