"""Which rooms this process takes: webhook hints, a periodic reconcile, capacity and dedupe.

Webhooks are edge-triggered and may repeat, arrive late, out of order, or never. They are
treated as hints:

* a repeated event id is ignored;
* ``room_finished`` only ends the room instance (sid) it names, so a late ``room_finished`` of an
  old room never stops a newer room of the same name, and a late ``room_started`` of a finished
  room is ignored;
* before joining, the room's participants are checked: no humans, or an agent with our
  deterministic identity already there (another replica), means no join;
* the reconcile loop lists rooms every ``reconcile_interval`` seconds and joins eligible rooms
  with humans and no agent, so a lost webhook or a restarted pod heals by itself. With agent
  dispatch on, such rooms are also joined, whatever the policy, when LiveKit lists a dispatch to
  our agent name for them (``list_dispatch``): LiveKit never re-dispatches a job whose worker
  died, nor one that found every worker full.

LiveKit job offers (bridge/service/agent_worker.py) come in through ``offer`` and ``assigned``;
every path ends in the same join. Listeners hear about joins, ends and capacity changes.

Capacity: a room being joined reserves one session; at ``max_sessions`` new rooms are left for
other replicas (and their reconcile), and /readyz says so.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from livekit import api
from livekit.protocol.webhook import WebhookEvent

from bridge.aio import TaskSet
from bridge.metrics import RECONCILE_RUNS
from bridge.room.budget import BUDGET_SPENT
from bridge.room.identity import agent_identity, is_human_kind
from bridge.room.tools.builtins import LEFT_BY_MODEL
from bridge.service.eligibility import decide, dispatch_overrides, merge_overrides
from bridge.service.local_rooms import RoomInfo
from bridge.settings.config import SessionOverrides, Settings

logger = logging.getLogger(__name__)

SEEN_EVENTS = 10_000
FINISHED_ROOMS = 10_000
API_TIMEOUT = 10.0


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
    def __init__(self, settings: Settings, rooms: Rooms) -> None:
        self.settings = settings
        self._rooms = rooms
        self._api: api.LiveKitAPI | None = None
        self._tasks = TaskSet("dispatch")
        self._seen = _Bounded(SEEN_EVENTS)
        self._finished = _Bounded(FINISHED_ROOMS)
        self._sids: dict[str, str] = {}
        self._joining: set[str] = set()
        # Rooms in _joining whose pre-join check (humans? an agent already?) is still running.
        self._checking: set[str] = set()
        # Rooms of accepted LiveKit job offers, until their assignment (or release).
        self._offered: set[str] = set()
        self._draining = False
        self.listeners: list[DispatchListener] = []
        self.last_api_ok: float | None = None
        self.last_reconcile_error: str | None = None

    @property
    def api(self) -> api.LiveKitAPI:
        if self._api is None:
            settings = self.settings
            assert settings.livekit_api_key and settings.livekit_api_secret
            self._api = api.LiveKitAPI(
                settings.livekit_http_url,
                settings.livekit_api_key,
                settings.livekit_api_secret.get_secret_value(),
            )
        return self._api

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

    @property
    def committed(self) -> int:
        """Sessions we are committed to: ``sessions`` without rooms still only being checked."""
        checking = sum(
            1 for r in self._checking if not self._rooms.has_room(r) and r not in self._offered
        )
        return self.sessions - checking

    def serves(self, room: str) -> bool:
        return self._rooms.has_room(room)

    def busy_with(self, room: str) -> bool:
        """The room is ours or being joined."""
        return self._rooms.has_room(room) or room in self._joining or room in self._offered

    @property
    def sessions(self) -> int:
        reserved = self._joining | self._offered
        joining_elsewhere = sum(1 for r in reserved if not self._rooms.has_room(r))
        return self._rooms.sessions + joining_elsewhere

    @property
    def at_capacity(self) -> bool:
        return self.sessions >= self.settings.max_sessions

    def takes_rooms(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if self.at_capacity:
            return False, f"at capacity ({self.sessions}/{self.settings.max_sessions} sessions)"
        return True, ""

    # ---- webhooks ------------------------------------------------------------------------------

    def on_webhook(self, event: WebhookEvent) -> Outcome:
        if event.id and not self._seen.add(event.id):
            return Outcome("duplicate", f"event {event.id} seen before")
        outcome = self._on_webhook(event)
        if outcome.retry_elsewhere and event.id:
            # We asked LiveKit to deliver it again; a redelivery here must not count as a repeat.
            self._seen.pop(event.id, None)
        return outcome

    def _on_webhook(self, event: WebhookEvent) -> Outcome:
        kind = event.event
        if kind in ("room_started", "participant_joined"):
            if kind == "participant_joined" and not is_human_kind(
                self.settings, event.participant.identity, event.participant.kind
            ):
                return Outcome("ignored", "participant is not a human")
            return self._candidate(event.room.name, event.room.sid, event.room.metadata)
        if kind == "room_finished":
            return self._room_finished(event.room.name, event.room.sid)
        return Outcome("ignored", f"{kind or 'unknown'} event needs nothing")

    def _candidate(self, room: str, sid: str, metadata: str) -> Outcome:
        if not room:
            return Outcome("invalid", "event has no room name")
        if sid and sid in self._finished:
            return Outcome("stale", f"room {sid} already finished")
        if self.busy_with(room):
            return Outcome("already", "agent already in the room")
        decision = decide(self.settings, room, metadata)
        if not decision.eligible:
            return Outcome("ineligible", decision.reason)
        takes, why = self.takes_rooms()
        if not takes:
            return Outcome("unavailable", why, retry_elsewhere=True)
        self._start_join(room, decision.overrides, sid=sid, check=True)
        return Outcome("accepted", decision.reason)

    def _room_finished(self, room: str, sid: str) -> Outcome:
        if sid:
            self._finished.add(sid)
        ours = self._sids.get(room)
        if sid and ours != sid:
            # Not the instance we are in (or we cannot tell): a room that really closes
            # disconnects our agent anyway.
            return Outcome("stale", f"finished {sid}, not the room instance we are in")
        if self._rooms.leave(room):
            self._sids.pop(room, None)
            return Outcome("left", "room finished")
        return Outcome("ignored", "not in that room")

    # ---- joining -------------------------------------------------------------------------------

    def dispatch(self, room: str, overrides: SessionOverrides | None) -> Outcome:
        """Explicit POST /dispatch: join now, whatever the eligibility policy says."""
        if self.busy_with(room):
            return Outcome("already", "agent already in the room")
        takes, why = self.takes_rooms()
        if not takes:
            return Outcome("unavailable", why, retry_elsewhere=True)
        self._start_join(room, overrides, sid="", check=False)
        return Outcome("accepted", "dispatched")

    def undispatch(self, room: str) -> bool:
        return self._rooms.leave(room)

    def rehome(self, room: str, overrides: SessionOverrides | None) -> None:
        """A worker died with this room: join it again elsewhere (our ghost agent gets replaced)."""
        if not self.draining:
            self._start_join(room, overrides, sid=self._sids.get(room, ""), check=False)

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
        draining. Rooms merely being checked by reconcile do not count against capacity."""
        if self.busy_with(room) and room not in self._checking:
            return Outcome("already", "agent already in the room")
        if self.draining:
            return Outcome("unavailable", "draining", retry_elsewhere=True)
        if self.committed >= self.settings.max_sessions:
            detail = f"at capacity ({self.committed}/{self.settings.max_sessions} sessions)"
            return Outcome("unavailable", detail, retry_elsewhere=True)
        self._offered.add(room)
        self.changed()
        return Outcome("accepted", "dispatched by LiveKit")

    def assigned(self, room: str, overrides: SessionOverrides | None) -> None:
        """The job offered for ``room`` is ours: join (unless our agent is already there)."""
        self._offered.discard(room)
        self._start_join(room, overrides, sid="", check=True, need_humans=False)

    def release(self, room: str) -> None:
        """An accepted offer that never became an assignment."""
        self._offered.discard(room)
        self.changed()

    # ---- joining -------------------------------------------------------------------------------

    def _start_join(
        self,
        room: str,
        overrides: SessionOverrides | None,
        *,
        sid: str,
        check: bool,
        need_humans: bool = True,
        need_dispatch: bool = False,
    ) -> None:
        self._joining.add(room)
        if check:
            self._checking.add(room)
        self._tasks.create_task(
            self._join(
                room, overrides, sid, check, need_humans=need_humans, need_dispatch=need_dispatch
            ),
            name=f"join-{room}",
        )
        self.changed()

    async def _join(
        self,
        room: str,
        overrides: SessionOverrides | None,
        sid: str,
        check: bool,
        *,
        need_humans: bool,
        need_dispatch: bool,
    ) -> None:
        extra = {"room": room}
        error: str | None = None
        try:
            if check:
                humans, agent_there = await self._look(room)
                if agent_there:
                    logger.info("not joining: an agent is already there", extra=extra)
                    error = "another bridge agent is already in the room"
                    return
                if need_humans and not humans:
                    logger.info("not joining: no humans in the room yet", extra=extra)
                    return
                if need_dispatch:
                    # Only rooms the policy leaves out: eligible rooms keep the shortest path
                    # from the check to the join (replicas racing for one room).
                    dispatched, extra_overrides = await self._dispatched(room)
                    if not dispatched:
                        return
                    overrides = merge_overrides(overrides, extra_overrides)
                    logger.info("joining: LiveKit lists a dispatch to us", extra=extra)
                self._checking.discard(room)
            error = await self._rooms.join(room, overrides)
            if error is not None:
                logger.warning("could not join: %s", error, extra=extra)
                return
            self._sids[room] = sid or await self._room_sid(room)
            logger.info("joined", extra=extra)
        except (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"could not check the room before joining: {exc}"
            logger.warning("%s", error, extra=extra)
        finally:
            self._joining.discard(room)
            self._checking.discard(room)
            if error is not None or self._rooms.has_room(room):
                for listener in self.listeners:
                    listener.joined(room, error)
            self.changed()

    async def _dispatched(self, room: str) -> tuple[bool, SessionOverrides | None]:
        """Whether LiveKit lists a dispatch to our agent name for ``room``, and its overrides."""
        dispatches = await asyncio.wait_for(
            self.api.agent_dispatch.list_dispatch(room), self.settings.agent_dispatch_timeout
        )
        ours = [d for d in dispatches if d.agent_name == self.settings.agent_name]
        if not ours:
            return False, None
        overrides, problem = dispatch_overrides(self.settings, ours[0].metadata)
        if problem:
            logger.warning("dispatch metadata ignored: %s", problem, extra={"room": room})
        return True, overrides

    async def _room_sid(self, room: str) -> str:
        """The sid of the live instance of ``room`` ("" if it cannot be learned now)."""
        try:
            listed = await asyncio.wait_for(
                self.api.room.list_rooms(api.ListRoomsRequest(names=[room])), API_TIMEOUT
            )
        except (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError):
            return ""
        return listed.rooms[0].sid if listed.rooms else ""

    async def _look(self, room: str) -> tuple[int, bool]:
        """(humans in the room, our agent identity present) via the server API."""
        response = await asyncio.wait_for(
            self.api.room.list_participants(api.ListParticipantsRequest(room=room)), API_TIMEOUT
        )
        self.last_api_ok = time.monotonic()
        ours = agent_identity(self.settings, room)
        humans = sum(
            1 for p in response.participants if is_human_kind(self.settings, p.identity, p.kind)
        )
        agent = any(p.identity == ours for p in response.participants)
        return humans, agent

    # ---- reconcile -----------------------------------------------------------------------------

    async def reconcile_once(self) -> int:
        """One pass; returns how many joins it started."""
        listed = await asyncio.wait_for(
            self.api.room.list_rooms(api.ListRoomsRequest()), API_TIMEOUT
        )
        self.last_api_ok = time.monotonic()
        started = 0
        rooms = list(listed.rooms)
        # Capacity may cover only some candidates per pass; a different order each pass means
        # rooms other replicas already serve cannot keep the rest from ever being looked at.
        random.shuffle(rooms)
        for room in rooms:
            if self.busy_with(room.name):
                continue
            if room.sid in self._finished:
                continue
            decision = decide(self.settings, room.name, room.metadata)
            # Rooms the policy leaves out are still joined when LiveKit lists a dispatch to us.
            need_dispatch = not decision.eligible
            if need_dispatch and not (self.settings.agent_dispatch and room.num_participants):
                continue
            if not self.takes_rooms()[0]:
                break
            # _join checks humans, an existing agent (and dispatches) before joining.
            self._start_join(
                room.name,
                decision.overrides,
                sid=room.sid,
                check=True,
                need_dispatch=need_dispatch,
            )
            started += 1
        return started

    async def run_reconcile(self) -> None:
        # Replicas start at the same time after a rollout; spread their passes.
        await asyncio.sleep(random.uniform(0, min(2.0, self.settings.reconcile_interval)))  # jitter
        while True:
            try:
                started = await self.reconcile_once()
                RECONCILE_RUNS.labels("ok").inc()
                self.last_reconcile_error = None
                if started:
                    logger.info("reconcile: joining %d rooms", started)
            except (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                RECONCILE_RUNS.labels("error").inc()
                self.last_reconcile_error = str(exc) or type(exc).__name__
                logger.warning("reconcile failed: %s", self.last_reconcile_error)
            except Exception as exc:  # a bug must not stop reconciling for good
                RECONCILE_RUNS.labels("error").inc()
                self.last_reconcile_error = f"{type(exc).__name__}: {exc}"
                logger.exception("reconcile pass failed")
            interval = self.settings.reconcile_interval
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))  # jitter

    def start(self) -> None:
        self._tasks.create_task(self.run_reconcile(), name="reconcile")

    async def aclose(self) -> None:
        await self._tasks.aclose()
        if self._api is not None:
            await self._api.aclose()
