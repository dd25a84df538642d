"""Make-before-break at the service's session limit.

The Realtime API ends a call after 60 minutes (``session_expired``). Waiting for that cuts an
answer in flight and leaves the human waiting for a new call. Instead, once the current call is
``session_rollover_s`` old, ``Rollover`` waits for a quiet moment (as the session's turn tracker
sees it, bridge/room/turns.py: nobody speaking, no response open, no audio playing or queued
toward the room, no transcript pending, no tool running), opens the next call, and tells the
session to switch to it when it is still quiet. The session then carries the conversation over,
moves the microphone and the speaker pump to the new call, and hangs up the old one. If no quiet
moment comes before the limit, the service's expiry ends the call as before and the prepared
call (if any) takes over at once.

The session owns one ``Rollover``; its preparation task is cancelled and awaited, and a prepared
call that was never used is hung up, in ``reset()``/``aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from bridge.aio import cancel_and_wait
from bridge.realtime import RealtimeCall
from bridge.realtime.call import CallState
from bridge.realtime.tracks import PcmAudioTrack, VideoFrameTrack
from bridge.room.retry import RetryPolicy
from bridge.room.turns import TurnTracker
from bridge.tracing.calls import CallTrace

logger = logging.getLogger(__name__)

# How often quiet is re-checked while waiting for it.
POLL_S = 0.1


@dataclass
class CallLeg:
    """One model call with the tracks that feed it."""

    call: RealtimeCall
    audio: PcmAudioTrack
    video: VideoFrameTrack | None
    connected_at: float = field(default_factory=time.monotonic)
    trace: CallTrace | None = None  # its span and its turns (bridge/tracing/calls.py)

    @property
    def alive(self) -> bool:
        return self.call.state is CallState.ACTIVE

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
        """Hang up; its span ends saying ``how`` its conversation ended."""
        self.audio.stop()
        if self.video is not None:
            self.video.stop()
        await self.call.aclose()
        if self.trace is not None:
            self.trace.end(how)


class Levels(Protocol):
    """What the session's media says about sound (bridge/room/session_media.py)."""

    @property
    def last_sound_at(self) -> float:
        """When the human (while watched) or the agent was last heard (monotonic)."""

    @property
    def audio_queued(self) -> float:
        """Seconds of answer audio still queued toward the room."""

    def watch_level(self, on: bool) -> None:
        """Follow the human's microphone level (speech before the model reports it)."""


class Rollover:
    """Prepares the next call for one session and says when to switch to it."""

    def __init__(
        self,
        *,
        after_s: float,
        open_call: Callable[[], Awaitable[CallLeg]],
        turns: TurnTracker,
        levels: Levels,
        policy: RetryPolicy,
        log_extra: dict[str, str],
    ) -> None:
        self._after_s = after_s
        self._open_call = open_call
        self._turns = turns
        self._levels = levels
        self._policy = policy
        self._extra = log_extra
        self._current: CallLeg | None = None
        self._task: asyncio.Task[None] | None = None
        self._next: CallLeg | None = None
        self.rollovers = 0
        self.failures = 0
        self.switched_at: deque[float] = deque(maxlen=100)  # monotonic, for tests and benches

    def begin(self, leg: CallLeg) -> None:
        """``leg`` is now the session's call: watch it and prepare its successor in time."""
        self._current = leg
        self._task = asyncio.get_running_loop().create_task(
            self._prepare(leg), name="rollover-prepare"
        )

    def _quiet(self) -> bool:
        levels = self._levels
        return self._turns.quiet(since=levels.last_sound_at, audio_queued=levels.audio_queued)

    def poll_interval(self) -> float | None:
        """How long the session may wait for an event before asking ``ready()`` again."""
        if self._current is None:
            return None
        due = self._current.connected_at + self._after_s - time.monotonic()
        return max(POLL_S, due)

    def ready(self) -> bool:
        """True when a prepared call is up and the conversation is quiet: switch now."""
        if self._next is None:
            return False
        if not self._next.alive:
            # It went away while we waited for quiet: prepare another one.
            leg, self._next = self._next, None
            self._task = asyncio.get_running_loop().create_task(
                self._replace(leg), name="rollover-prepare"
            )
            return False
        return self._quiet()

    def take(self) -> CallLeg | None:
        """The prepared call, handed over to the session (which then owns it), if it is up."""
        leg, self._next = self._next, None
        if leg is not None and leg.alive:
            self.rollovers += 1
            self.switched_at.append(time.monotonic())
            return leg
        if leg is not None:
            self._next = leg  # closed by reset()
        return None

    async def reset(self) -> None:
        """The current call is over: stop preparing and hang up a prepared call not taken."""
        self._levels.watch_level(False)
        await cancel_and_wait(self._task)
        self._task = None
        self._current = None
        leg, self._next = self._next, None
        if leg is not None:
            await leg.aclose()

    async def aclose(self) -> None:
        await self.reset()

    async def _replace(self, dead: CallLeg) -> None:
        await dead.aclose()
        if self._current is not None:
            await self._prepare(self._current)

    async def _prepare(self, leg: CallLeg) -> None:
        await asyncio.sleep(max(0.0, leg.connected_at + self._after_s - time.monotonic()))
        self._levels.watch_level(
            True
        )  # the microphone's own level: speech before the model reports it
        attempt = 0
        while leg.alive:
            if not self._quiet():
                await asyncio.sleep(POLL_S)
                continue
            age = time.monotonic() - leg.connected_at
            try:
                self._next = await self._open_call()
            except Exception as exc:  # the current call goes on; try again later
                attempt += 1
                self.failures += 1
                delay = self._policy.backoff(attempt)
                logger.warning(
                    "could not open the next call for the rollover (%s); retry in %.1f s",
                    exc,
                    delay,
                    extra=self._extra,
                )
                await asyncio.sleep(delay)
                continue
            logger.info(
                "next call ready for the rollover (current call %.0f s old)",
                age,
                extra={**self._extra, "call_id": self._next.call.call_id or ""},
            )
            return


__all__ = ["CallLeg", "Levels", "Rollover"]
