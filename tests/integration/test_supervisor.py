"""The call supervisor with real calls to the emulator (no LiveKit): a call whose event queue
overflows ends with a clear reason, and the session's next call replaces it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from bridge.emulator.app import EmulatorServer
from bridge.realtime import RealtimeCall, RealtimeError, build_session
from bridge.realtime.events import SessionUpdated
from bridge.room.retry import RetryPolicy
from bridge.room.supervisor import CallSupervisor, Ending, SessionStats
from tests.support.calls import settings_for
from tests.support.waits import eventually

pytestmark = pytest.mark.timeout(60)

QUEUED = 20


@dataclass(eq=False)
class Leg:
    call: RealtimeCall
    connected_at: float = field(default_factory=time.monotonic)

    @property
    def call_id(self) -> str | None:
        return self.call.call_id

    @property
    def closed_reason(self) -> str | None:
        return self.call.closed_reason

    @property
    def connect_seconds(self) -> float | None:
        return self.call.connect_seconds

    async def aclose(self, how: str = "hung up") -> None:
        await self.call.aclose()


class FloodingHost:
    """Floods its first call (nothing read meanwhile), then converses on the next one until
    cancelled."""

    def __init__(self) -> None:
        self.responses = 0
        self.taken: list[Leg] = []
        self.handled: list[list[str]] = []
        self.failure: RealtimeError | None = None

    def connecting(self) -> None:
        pass

    def take_up(self, leg: Leg) -> None:
        self.taken.append(leg)

    def put_down(self) -> None:
        pass

    async def converse(self, leg: Leg) -> Ending:
        call = leg.call
        if len(self.taken) == 1:
            for n in range(QUEUED + 10):
                call.update_session(instructions=f"flood {n}")

            async def overflowed() -> bool:
                return call.closed_reason is not None

            await eventually(overflowed, timeout=10)
        handled = []
        async for event in call.events():  # what was queued, then the end
            if isinstance(event, SessionUpdated):
                handled.append(event.session["instructions"])
        self.handled.append(handled)
        return Ending.CLOSED

    async def sleep_until_woken(self) -> None:
        raise AssertionError("never idle here")

    def gave_up(self, failure: RealtimeError) -> None:
        self.failure = failure


async def test_a_flooded_call_ends_and_the_next_call_replaces_it(emulator: EmulatorServer) -> None:
    settings = settings_for(emulator)

    async def dial() -> Leg:
        call = RealtimeCall(settings, session=build_session(settings), event_queue_size=QUEUED)
        await call.connect()
        return Leg(call)

    host = FloodingHost()
    stats = SessionStats()
    supervisor: CallSupervisor[Leg] = CallSupervisor(
        dial=dial,
        host=host,
        successor=NoSuccessor(),
        policy=RetryPolicy(attempts=3, initial_s=0.05, max_s=0.1),
        stats=stats,
        log_extra={"room": "flood"},
    )
    run = asyncio.create_task(supervisor.run())
    try:

        async def replaced() -> bool:
            return len(host.taken) == 2 and host.taken[1].call.state.value == "active"

        await eventually(replaced, timeout=20)
        first, second = host.taken
        assert first.closed_reason == f"model events overflowed: {QUEUED} unread"
        assert host.handled[0] == [f"flood {n}" for n in range(QUEUED)]  # none lost
        assert stats.failures == {"RealtimeError": 1} and host.failure is None
        assert emulator.emulator.calls[first.call_id or ""].state == "ended"  # hung up
        assert second.call_id != first.call_id and supervisor.leg is second
        second.call.update_session(instructions="still here")  # the new call works

        async def answered() -> bool:
            model = emulator.emulator.calls[second.call_id or ""].model
            return bool(model.session["instructions"] == "still here")

        await eventually(answered, timeout=10)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert emulator.emulator.calls[host.taken[1].call_id or ""].state == "ended"


class NoSuccessor:
    def take(self) -> Leg | None:
        return None

    async def reset(self) -> None:
        pass
