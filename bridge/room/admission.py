"""Admission: which of a room's microphones get a session, and when.

The same steps in both modes (one session per human, or in shared mode one call the first
microphone starts and the others join): one admission at a time per key (a human's identity, or
``SHARED``), a slot of the process's session budget first (at capacity the microphone waits, and
is admitted when a slot frees), then the session built, registered and started, and undone if it
cannot start. A session gives its slot back once: when it ends, or when its calls give up
(``release``, which sessions call).

    admission = Admission(shared=False, build=new_session, budget=budget, ...)
    await admission.admit(MicRequest(participant, track, sid))   # a microphone subscribed
    await admission.dismiss("alice", "left")                     # ... and gone
    admission.stop_admitting(); await admission.aclose("stopped")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from livekit import rtc

from bridge.aio import TaskSet
from bridge.room.cameras import Cameras
from bridge.room.capacity import SessionBudget
from bridge.room.meeting import Meeting
from bridge.room.session import ParticipantSession
from bridge.room.shared import SHARED, SharedSession

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=ParticipantSession)


@dataclass(frozen=True)
class MicRequest:
    """A human's microphone, asking for a session (or to join the shared one)."""

    participant: rtc.RemoteParticipant
    track: rtc.Track
    sid: str

    @property
    def identity(self) -> str:
        return self.participant.identity


class Admission:
    def __init__(
        self,
        *,
        shared: bool,
        build: Callable[[MicRequest | None], ParticipantSession],
        on_ended: Callable[[], None],
        budget: SessionBudget | None,
        meeting: Meeting,
        tasks: TaskSet,
        log_extra: dict[str, str],
    ) -> None:
        self._shared = shared
        self._build = build  # a human's session, or (None) the room's shared one
        self._on_ended = on_ended  # a human's session ended (private audience: permissions)
        self._budget = budget
        self._meeting = meeting
        self._tasks = tasks
        self._extra = log_extra
        self.sessions: dict[str, ParticipantSession] = {}  # by identity, or SHARED
        self.cameras = Cameras(self.sessions)  # which session sees which camera
        self._ending: set[ParticipantSession] = set()  # being closed by an ``end``
        self._holding: set[ParticipantSession] = set()  # holding a budget slot
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, MicRequest] = {}  # identity -> microphone waiting for a slot
        self._waiter: asyncio.Task[None] | None = None
        self._admitting = True

    @property
    def shared(self) -> SharedSession | None:
        session = self.sessions.get(SHARED)
        return session if isinstance(session, SharedSession) else None

    async def admit(self, request: MicRequest, *, waiting: bool = False) -> None:
        """A microphone subscribed (or, ``waiting``, a slot freed for one that waits)."""
        if self._shared:
            await self._join_shared(request, waiting=waiting)
            return
        identity = request.identity
        async with self._lock(identity):
            if identity in self.sessions or not self._wanted(request, waiting=waiting):
                return  # started already, or they left (or unpublished) while waiting for a slot
            session = await self._start(
                identity, request, lambda: self._build(request), who=identity
            )
            if session is not None:
                self.cameras.started(session)

    async def dismiss(self, identity: str, why: str) -> None:
        """``identity``'s microphone went away (unpublished, unsubscribed, they left)."""
        if self._shared:
            await self._leave_shared(identity, why)
            return
        async with self._lock(identity):
            self._waiting.pop(identity, None)
            session = self.sessions.pop(identity, None)
            if session is not None:
                await self.finish(session, why)
                self._on_ended()

    async def _join_shared(self, request: MicRequest, *, waiting: bool) -> None:
        """The human's microphone joins the room's one call (started by the first microphone;
        it takes one slot of the budget)."""
        identity = request.identity
        async with self._lock(SHARED):
            if not self._wanted(request, waiting=waiting):
                return
            shared = self.shared
            if shared is None:
                started = await self._start(
                    SHARED, request, lambda: self._build(None), who="the room's shared call"
                )
                if not isinstance(started, SharedSession):
                    return  # waits for a slot, or could not start
                shared = started
                self.cameras.started(shared)
            self._waiting.pop(identity, None)
            name = request.participant.name or identity
            shared.add_microphone(identity, name, request.track, request.sid)
            logger.info(
                "microphone joins the shared call", extra={**self._extra, "participant": identity}
            )

    async def _leave_shared(self, identity: str, why: str) -> None:
        async with self._lock(SHARED):
            self._waiting.pop(identity, None)
            shared = self.shared
            if shared is None or identity not in shared.microphones:
                return
            await shared.remove_microphone(identity)
            if not shared.microphones:
                self.sessions.pop(SHARED, None)
                await self.finish(shared, f"last microphone gone ({why})")

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _wanted(self, request: MicRequest, *, waiting: bool) -> bool:
        """Still to be admitted: the room goes on, and a waiting microphone is still there."""
        return self._admitting and (not waiting or request.identity in self._waiting)

    async def _start(
        self, key: str, request: MicRequest, build: Callable[[], S], *, who: str
    ) -> S | None:
        """Under ``key``'s lock: a slot, then ``build()``'s session registered as ``key`` and
        started. None when no slot is free (the request waits) or it could not start."""
        if self._budget is not None and not self._budget.try_acquire():
            logger.warning(
                "at capacity (%d sessions); %s waits for a free slot",
                self._budget.limit,
                who,
                extra=self._extra,
            )
            self._waiting[request.identity] = request
            if self._waiter is None or self._waiter.done():
                self._waiter = self._tasks.create_task(self._retry_waiting(), name="waiting")
            return None
        self._waiting.pop(request.identity, None)
        session = build()
        self.sessions[key] = session
        self._holding.add(session)
        self._meeting.listen(key, session)
        extra = {**self._extra, "participant": session.identity}
        logger.info("session starting", extra=extra)
        try:
            await session.start()
        except Exception as exc:  # publishing failed (LiveKitError), or anything else: undone
            logger.error("session could not start: %s", exc, extra=extra)
            self.sessions.pop(key, None)
            await self.finish(session, "could not start")
            return None
        return session

    async def finish(self, session: ParticipantSession, why: str) -> None:
        self._ending.add(session)
        self._meeting.unlisten(session.identity, session)
        try:
            await session.aclose(why)
        finally:
            self._ending.discard(session)
            self.release(session)
            lock = self._locks.get(session.identity)
            if lock is not None and not lock.locked() and session.identity not in self._waiting:
                del self._locks[session.identity]

    def release(self, session: ParticipantSession) -> None:
        """Give the session's budget slot back, once (it ended, or its calls gave up)."""
        if session in self._holding:
            self._holding.discard(session)
            if self._budget is not None:
                self._budget.release()

    def stop_admitting(self) -> None:
        self._admitting = False

    async def aclose(self, reason: str) -> None:
        """End every session, also those an ``end`` is closing (the same close is awaited)."""
        self.stop_admitting()
        sessions = [*self.sessions.values(), *self._ending]
        self.sessions.clear()
        self._waiting.clear()
        await asyncio.gather(*(self.finish(s, reason) for s in sessions))

    async def _retry_waiting(self) -> None:
        assert self._budget is not None
        while self._waiting:
            freed = self._budget.freed()
            for request in list(self._waiting.values()):
                await self.admit(request, waiting=True)
            if self._waiting:
                await freed.wait()


__all__ = ["Admission", "MicRequest"]
