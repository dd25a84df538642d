"""Which rooms this process takes: webhook hints, a periodic reconcile, capacity and dedupe.

Webhooks are edge-triggered and may repeat, arrive late, out of order, or never. They are
treated as hints:

* a repeated event id is ignored;
* ``room_finished`` only ends the room instance (sid) it names, so a late ``room_finished`` of an
  old room never stops a newer room of the same name, and a late ``room_started`` of a finished
  room is ignored;
* ``room_started`` for a room with no participants (LiveKit sends it before the first one is
  in) is answered from the event alone: the ``participant_joined`` that follows brings the humans;
* otherwise the room's participants are checked before joining, and the webhook is answered with
  what the check found: no humans, or an agent with our deterministic identity already there
  (another replica), means no join;
* the reconcile loop lists rooms every ``reconcile_interval`` seconds and joins eligible rooms
  with humans and no agent, so a lost webhook or a restarted pod heals by itself. With agent
  dispatch on, such rooms are also joined, whatever the policy, when LiveKit lists a dispatch to
  our agent name for them (``list_dispatch``): LiveKit never re-dispatches a job whose worker
  died, nor one that found every worker full.

LiveKit job offers (bridge/service/agent_worker.py) come in through ``offer`` and ``assigned``;
every path ends in the same join. Listeners hear about joins, ends and capacity changes.

Capacity: checking a room takes none. A room reserves one session once its check found humans
(or it was dispatched, or offered to us by LiveKit) until it is joined or fails; at
``max_sessions`` new rooms are left for other replicas (and their reconcile), and /readyz says
so. Rooms with no participants cost no server-API call at all, in webhooks or in reconcile.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from livekit.protocol.webhook import WebhookEvent

from bridge.aio import TaskSet
from bridge.logs import one_line, redact_tokens
from bridge.room.budget import BUDGET_SPENT
from bridge.room.identity import agent_identity, is_human_kind
from bridge.room.tools.builtins import LEFT_BY_MODEL
from bridge.service.eligibility import decide, dispatch_overrides, merge_overrides
from bridge.service.livekit_api import LiveKitAPIError, LiveKitServerAPI
from bridge.service.local_rooms import RoomInfo
from bridge.service.reconcile import Reconciler
from bridge.settings.config import SessionOverrides, Settings
from bridge.tracing import spans

logger = logging.getLogger(__name__)

SEEN_EVENTS = 10_000
FINISHED_ROOMS = 10_000
# A webhook waits this long at most for its room's check (then LiveKit may deliver it again).
CHECK_TIMEOUT = 5.0


class Rooms(Protocol):
    """Where rooms run: the worker pool (``serve``) or anything with the same shape."""

    @property
    def sessions(self) -> int: ...

    def rooms(self) -> dict[str, RoomInfo]: ...

    def has_room(self, room: str) -> bool: ...

    async def join(self, room: str, overrides: SessionOverrides | None) -> str | None: ...

    def leave(self, room: str) -> bool: ...


@dataclass(frozen=True)
class Outcome:
    """What a webhook led to: ``outcome`` for logs and metrics; ``retry_elsewhere`` asks LiveKit
    to deliver it again (503), which its retrying client may route to another replica."""

    outcome: str
    detail: str = ""
    retry_elsewhere: bool = False


class _Bounded(OrderedDict[str, float]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def add(self, key: str) -> bool:
        """True when ``key`` is new."""
        if key in self:
            return False
        self[key] = time.monotonic()
        while len(self) > self._size:
            self.popitem(last=False)
        return True


class DispatchListener(Protocol):
    """Told what happens to rooms (the agent worker reports it to LiveKit)."""

    def joined(self, room: str, error: str | None) -> None: ...

    def ended(self, room: str, reason: str, duplicate: bool) -> None: ...

    def changed(self) -> None: ...


class Dispatcher:
    def __init__(
        self, settings: Settings, rooms: Rooms, lkapi: LiveKitServerAPI | None = None
    ) -> None:
        self.settings = settings
        self._rooms = rooms
        self._own_api = lkapi is None
        self.lkapi = lkapi if lkapi is not None else LiveKitServerAPI(settings)
        self._tasks = TaskSet("dispatch")
        self._seen = _Bounded(SEEN_EVENTS)
        self._finished = _Bounded(FINISHED_ROOMS)
        self._sids: dict[str, str] = {}
        # Rooms holding a session slot until joined: their check passed, or they were
        # dispatched (POST /dispatch, a LiveKit assignment, a re-home).
        self._joining: set[str] = set()
        # Rooms of accepted LiveKit job offers, until their assignment (or release).
        self._offered: set[str] = set()
        self._draining = False
        self.listeners: list[DispatchListener] = []
        # Why no room can be served now (the model service refuses our key), or None.
        self.blocker: Callable[[], str | None] | None = None
        self.reconciler = Reconciler(self, self._tasks)

    @property
    def last_api_ok(self) -> float | None:
        """When LiveKit's server API last answered (readiness)."""
        return self.lkapi.last_ok

    @property
    def last_reconcile_error(self) -> str | None:
        return self.reconciler.last_error

    # ---- capacity ----------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        self.changed()

    def changed(self) -> None:
        """Capacity or rooms may have changed (also called by the worker pool)."""
        for listener in self.listeners:
            listener.changed()

    def finished(self, sid: str) -> bool:
        """The room instance ``sid`` ended (or was left for good): it is not joined again."""
        return bool(sid) and sid in self._finished

    def serves(self, room: str) -> bool:
        return self._rooms.has_room(room)

    def busy_with(self, room: str) -> bool:
        """The room is ours or being joined."""
        return self._rooms.has_room(room) or room in self._joining or room in self._offered

    @property
    def sessions(self) -> int:
        """Live sessions plus one per room holding a slot until it is joined."""
        reserved = self._joining | self._offered
        joining_elsewhere = sum(1 for r in reserved if not self._rooms.has_room(r))
        return self._rooms.sessions + joining_elsewhere

    @property
    def at_capacity(self) -> bool:
        return self.sessions >= self.settings.max_sessions

    def takes_rooms(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        blocked = self.blocker() if self.blocker is not None else None
        if blocked:
            return False, f"cannot serve rooms: {blocked}"
        if self.at_capacity:
            return False, f"at capacity ({self.sessions}/{self.settings.max_sessions} sessions)"
        return True, ""

    # ---- webhooks ------------------------------------------------------------------------------

    async def on_webhook(self, event: WebhookEvent) -> Outcome:
        if event.id and not self._seen.add(event.id):
            return Outcome("duplicate", f"event {one_line(event.id, 60)} seen before")
        outcome = await self._on_webhook(event)
        if outcome.retry_elsewhere and event.id:
            # We asked LiveKit to deliver it again; a redelivery here must not count as a repeat.
            self._seen.pop(event.id, None)
        return outcome

    async def _on_webhook(self, event: WebhookEvent) -> Outcome:
        kind = event.event
        room = event.room
        if kind == "participant_joined":
            participant = event.participant
            if not is_human_kind(self.settings, participant.identity, participant.kind):
                return Outcome("ignored", "participant is not a human")
            return await self._candidate(room.name, room.sid, room.metadata, empty=False)
        if kind == "room_started":
            empty = room.num_participants == 0
            return await self._candidate(room.name, room.sid, room.metadata, empty=empty)
        if kind == "room_finished":
            return self._room_finished(room.name, room.sid)
        return Outcome("ignored", f"{one_line(kind, 40) or 'unknown'} event needs nothing")

    async def _candidate(self, room: str, sid: str, metadata: str, *, empty: bool) -> Outcome:
        if not room:
            return Outcome("invalid", "event has no room name")
        if sid and sid in self._finished:
            return Outcome("stale", f"room {one_line(sid, 60)} already finished")
        if self.busy_with(room):
            return Outcome("already", "agent already in the room")
        decision = decide(self.settings, room, metadata)
        if not decision.eligible:
            return Outcome("ineligible", decision.reason)
        if empty:
            # Sent before anyone is in: the participant_joined that follows brings the humans.
            return Outcome("ignored", "no participants yet")
        takes, why = self.takes_rooms()
        if not takes:
            return Outcome("unavailable", why, retry_elsewhere=True)
        return await self.check_then_join(room, decision.overrides, sid, CHECK_TIMEOUT)

    def _room_finished(self, room: str, sid: str) -> Outcome:
        if sid:
            self._finished.add(sid)
        ours = self._sids.get(room)
        if sid and ours != sid:
            # Not the instance we are in (or we cannot tell): a room that really closes
            # disconnects our agent anyway.
            detail = f"finished {one_line(sid, 60)}, not the room instance we are in"
            return Outcome("stale", detail)
        if self._rooms.leave(room):
            self._sids.pop(room, None)
            return Outcome("left", "room finished")
        return Outcome("ignored", "not in that room")

    # ---- checking a room (no slot held) ----------------------------------------------------

    async def check_then_join(
        self,
        room: str,
        overrides: SessionOverrides | None,
        sid: str,
        timeout: float | None = None,
        *,
        need_dispatch: bool = False,
    ) -> Outcome:
        """Look at the room (humans? our agent already there? a dispatch to us?) and start
        the join when it needs us; no session slot is held while looking."""
        try:
            humans, agent_there = await self._look(room, timeout)
            if agent_there:
                return Outcome("already", "another bridge agent is already in the room")
            if not humans:
                return Outcome("ignored", "no humans in the room")
            if need_dispatch:
                # Only rooms the policy leaves out: eligible rooms keep the shortest path
                # from the check to the join (replicas racing for one room).
                dispatched, extra = await self._dispatched(room)
                if not dispatched:
                    return Outcome("ineligible", "no dispatch to us")
                overrides = merge_overrides(overrides, extra)
        except LiveKitAPIError as exc:
            return Outcome("unchecked", f"could not check the room: {exc}", retry_elsewhere=True)
        if self.busy_with(room):  # joined meanwhile (another event for the same room)
            return Outcome("already", "agent already in the room")
        takes, why = self.takes_rooms()
        if not takes:
            return Outcome("unavailable", why, retry_elsewhere=True)
        self._start_join(room, overrides, sid=sid)
        return Outcome("accepted", f"{humans} humans in the room")

    async def _look(self, room: str, timeout: float | None = None) -> tuple[int, bool]:
        """(humans in the room, our agent identity present) via the server API."""
        participants = await self.lkapi.list_participants(room, timeout)
        ours = agent_identity(self.settings, room)
        humans = sum(1 for p in participants if is_human_kind(self.settings, p.identity, p.kind))
        return humans, any(p.identity == ours for p in participants)

    async def _dispatched(self, room: str) -> tuple[bool, SessionOverrides | None]:
        """Whether LiveKit lists a dispatch to our agent name for ``room``, and its overrides."""
        dispatches = await self.lkapi.list_dispatch(room, self.settings.agent_dispatch_timeout)
        ours = [d for d in dispatches if d.agent_name == self.settings.agent_name]
        if not ours:
            return False, None
        overrides, problem = dispatch_overrides(self.settings, ours[0].metadata)
        if problem:
            logger.warning("dispatch metadata ignored: %s", problem, extra={"room": room})
        logger.info("joining: LiveKit lists a dispatch to us", extra={"room": room})
        return True, overrides

    # ---- joining (a slot held) --------------------------------------------------------------

    def dispatch(self, room: str, overrides: SessionOverrides | None) -> Outcome:
        """Explicit POST /dispatch: join now, whatever the eligibility policy says."""
        if self.busy_with(room):
            return Outcome("already", "agent already in the room")
        takes, why = self.takes_rooms()
        if not takes:
            return Outcome("unavailable", why, retry_elsewhere=True)
        self._start_join(room, overrides, sid="")
        return Outcome("accepted", "dispatched")

    def undispatch(self, room: str) -> bool:
        return self._rooms.leave(room)

    def rehome(self, room: str, overrides: SessionOverrides | None) -> None:
        """A worker died with this room: join it again elsewhere (our ghost agent gets replaced)."""
        if not self.draining:
            self._start_join(room, overrides, sid=self._sids.get(room, ""))

    def on_room_ended(self, room: str, reason: str, duplicate: bool) -> None:
        sid = self._sids.pop(room, None)
        if reason in (BUDGET_SPENT, LEFT_BY_MODEL) and sid:
            # Its budget is spent, or the model was asked to leave: webhooks and reconcile leave
            # this instance of the room alone (a new instance, or an explicit POST /dispatch,
            # starts afresh).
            self._finished.add(sid)
        if duplicate:
            logger.info("left room %s: another agent took it", room, extra={"room": room})
        for listener in self.listeners:
            listener.ended(room, reason, duplicate)
        self.changed()

    # ---- LiveKit job offers ------------------------------------------------------------------

    def offer(self, room: str) -> Outcome:
        """A LiveKit job offer for ``room``: ``accepted`` reserves a session until ``assigned``
        (or ``release``); ``already`` when the room is ours; ``unavailable`` when full or
        draining."""
        if self.busy_with(room):
            return Outcome("already", "agent already in the room")
        takes, why = self.takes_rooms()
        if not takes:
            return Outcome("unavailable", why, retry_elsewhere=True)
        self._offered.add(room)
        self.changed()
        return Outcome("accepted", "dispatched by LiveKit")

    def assigned(self, room: str, overrides: SessionOverrides | None) -> None:
        """The job offered for ``room`` is ours: join (unless our agent is already there)."""
        self._offered.discard(room)
        self._start_join(room, overrides, sid="", check_agent=True)

    def release(self, room: str) -> None:
        """An accepted offer that never became an assignment."""
        self._offered.discard(room)
        self.changed()

    def _start_join(
        self,
        room: str,
        overrides: SessionOverrides | None,
        *,
        sid: str,
        check_agent: bool = False,
    ) -> None:
        self._joining.add(room)
        self._tasks.create_task(
            self._traced_join(room, overrides, sid, check_agent=check_agent), name=f"join-{room}"
        )
        self.changed()

    async def _traced_join(
        self, room: str, overrides: SessionOverrides | None, sid: str, *, check_agent: bool
    ) -> None:
        """``_join`` in a span: under the webhook, dispatch request or LiveKit job that started
        it (a root span for reconcile and re-homing); the room's spans continue its trace."""
        attributes: spans.Attributes = {
            "livekit.room.name": room,
            "bridge.join.checked": check_agent,
        }
        with spans.current_span("join", attributes):
            await self._join(room, overrides, sid, check_agent=check_agent)

    async def _join(
        self, room: str, overrides: SessionOverrides | None, sid: str, *, check_agent: bool
    ) -> None:
        extra = {"room": room}
        error: str | None = None
        try:
            if check_agent:
                _, agent_there = await self._look(room)
                if agent_there:
                    error = "another bridge agent is already in the room"
                    logger.info("not joining: %s", error, extra=extra)
                    return
            error = await self._rooms.join(room, overrides)
            if error is not None:
                # The SDK quotes the whole access token when LiveKit refuses it; this error is
                # logged and goes to LiveKit with the job's status.
                error = redact_tokens(error)
                logger.warning("could not join: %s", error, extra=extra)
                return
            self._sids[room] = sid or await self._room_sid(room)
            logger.info("joined", extra=extra)
        except LiveKitAPIError as exc:
            error = f"could not check the room before joining: {exc}"
            logger.warning("%s", error, extra=extra)
        finally:
            self._joining.discard(room)
            spans.current().set_attribute("bridge.join.joined", self._rooms.has_room(room))
            if error is not None:
                spans.fail(spans.current(), error)
            if error is not None or self._rooms.has_room(room):
                for listener in self.listeners:
                    listener.joined(room, error)
            self.changed()

    async def _room_sid(self, room: str) -> str:
        """The sid of the live instance of ``room`` ("" if it cannot be learned now)."""
        try:
            listed = await self.lkapi.list_rooms([room])
        except LiveKitAPIError:
            return ""
        return listed[0].sid if listed else ""

    def start(self) -> None:
        self._tasks.create_task(self.reconciler.run(), name="reconcile")

    async def aclose(self) -> None:
        await self._tasks.aclose()
        if self._own_api:
            await self.lkapi.aclose()
