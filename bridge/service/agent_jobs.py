"""The agent worker's job book: LiveKit's offers, assignments and terminations, and what each
job's room does, reported back (bridge/service/agent_worker.py says the protocol).

It answers offers from memory (the dispatcher's capacity), turns assignments into joins, leaves
rooms whose job LiveKit terminated (or whose dispatch is gone, for jobs of an earlier
registration: bridge/service/orphan_jobs.py), and reports each job's status and the worker's
load through the socket (bridge/service/agent_socket.py). It is the dispatcher's listener.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from livekit.protocol import agent as lkagent

from bridge.aio import TaskSet
from bridge.metrics import AGENT_OFFERS, AGENT_OFFERS_REFUSED, AGENT_TERMINATIONS
from bridge.room.identity import NAME_ATTRIBUTE, STATE_ATTRIBUTE, agent_identity
from bridge.service.agent_socket import AgentSocket
from bridge.service.dispatch import Dispatcher
from bridge.service.eligibility import decide, dispatch_overrides, merge_overrides
from bridge.service.livekit_api import LiveKitAPIError, LiveKitServerAPI
from bridge.service.orphan_jobs import watch_orphans
from bridge.settings.config import SessionOverrides, Settings
from bridge.tracing import spans

logger = logging.getLogger(__name__)

# An accepted offer whose assignment does not come within this long frees its reservation.
ASSIGNMENT_TIMEOUT = 15.0

# How a room's end is reported to LiveKit (update_job): its agent disconnected by the SDK for one
# of these reasons (bridge/room/worker.py: "disconnected: <DisconnectReason>") ended its job
# normally; for any other it failed, with that reason as the error. Every other end is ours
# (no humans left, budget spent, the model left, asked to leave, shutting down): success.
DISCONNECTED = "disconnected: "
NORMAL_DISCONNECTS = frozenset(
    {"CLIENT_INITIATED", "PARTICIPANT_REMOVED", "ROOM_DELETED", "ROOM_CLOSED"}
)


def job_outcome(reason: str, duplicate: bool) -> tuple[int, str]:
    """(``JobStatus``, error) for a room that ended for ``reason``."""
    if duplicate:
        return lkagent.JS_FAILED, "another agent took the room"
    if reason.startswith(DISCONNECTED) and reason[len(DISCONNECTED) :] not in NORMAL_DISCONNECTS:
        return lkagent.JS_FAILED, reason
    return lkagent.JS_SUCCESS, ""


@dataclass
class _Offer:
    room: str
    overrides: SessionOverrides | None
    join: bool  # False: a room this process already serves (acknowledged, not joined twice)
    expiry: asyncio.TimerHandle | None = None


@dataclass
class _Job:
    id: str
    room: str
    dispatch_id: str
    worker_id: str  # the registration LiveKit gave the job to
    running: bool = False


class JobBook:
    """Offers and jobs of this ``serve`` instance's registration."""

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        lkapi: LiveKitServerAPI,
        socket: AgentSocket,
    ) -> None:
        self.settings = settings
        self._dispatcher = dispatcher
        self._lkapi = lkapi
        self._socket = socket
        self._tasks = TaskSet("agent-jobs")
        self._offers: dict[str, _Offer] = {}
        self._jobs: dict[str, _Job] = {}
        self._last_status: tuple[int, float, int] | None = None
        self._orphan_watch: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        for offer in self._offers.values():
            if offer.expiry is not None:
                offer.expiry.cancel()
        self._offers.clear()
        await self._tasks.aclose()

    def describe(self) -> dict[str, Any]:
        return {j.id: {"room": j.room, "running": j.running} for j in self._jobs.values()}

    # ---- the connection (bridge/service/agent_socket.py) -------------------------------------

    def registered(self) -> None:
        """A new registration: LiveKit hears our status afresh."""
        self._last_status = None
        self.changed()

    def disconnected(self) -> None:
        self._watch_orphans()
        # Offers not yet assigned will not be; their assignment would come on the old socket.
        for offer in self._offers.values():
            if offer.expiry is not None:
                offer.expiry.cancel()
            if offer.join:
                self._dispatcher.release(offer.room)
        self._offers.clear()

    # ---- messages from LiveKit -----------------------------------------------------------------

    def handle_frame(self, data: bytes) -> lkagent.WorkerMessage | None:
        """One binary frame from the server; returns the answer to an offer (to send at once).
        Never raises: bad input is logged and dropped."""
        try:
            message = lkagent.ServerMessage.FromString(data)
            kind = message.WhichOneof("message")
        except (DecodeError, ValueError) as exc:
            logger.warning(
                "agent dispatch: ignoring a malformed message from LiveKit (%d bytes: %s)",
                len(data),
                str(exc)[:120] or type(exc).__name__,
            )
            return None
        try:
            if kind == "availability":
                answer = self._on_offer(message.availability.job)
                return lkagent.WorkerMessage(availability=answer)
            if kind == "assignment":
                self._on_assignment(message.assignment)
            elif kind == "termination":
                self._on_termination(message.termination.job_id)
            elif kind == "go_away":
                logger.info("agent dispatch: LiveKit asks us to go away; registering again")
                self._socket.go_away = True
            elif kind in ("pong", "register"):
                pass
            else:
                logger.warning("agent dispatch: ignoring an unknown message from LiveKit")
        except Exception:  # a bug here must not end the registration
            logger.exception("agent dispatch: could not handle a %s message", kind)
        return None

    def _refuse(self, job: lkagent.Job, reason: str, detail: str) -> lkagent.AvailabilityResponse:
        AGENT_OFFERS.labels("refused").inc()
        AGENT_OFFERS_REFUSED.labels(reason).inc()
        logger.info(
            "agent dispatch: offer %s refused: %s", job.id, detail, extra={"room": job.room.name}
        )
        return lkagent.AvailabilityResponse(job_id=job.id, available=False)

    def _on_offer(self, job: lkagent.Job) -> lkagent.AvailabilityResponse:
        room = job.room.name
        if job.agent_name != self.settings.agent_name:
            return self._refuse(job, "wrong_agent", f"for agent {job.agent_name[:64]!r}, not us")
        if job.type != lkagent.JT_ROOM or not room or not job.id:
            return self._refuse(job, "invalid", "not a room job with a room name and id")
        if job.id in self._offers or job.id in self._jobs:
            return self._refuse(job, "invalid", "a job id offered before")
        outcome = self._dispatcher.offer(room)
        if outcome.outcome == "unavailable":
            detail = outcome.detail
            reason = "draining" if detail == "draining" else "at_capacity"
            reason = "cannot_serve" if detail.startswith("cannot serve") else reason
            return self._refuse(job, reason, outcome.detail)
        overrides = self._overrides(job)
        join = outcome.outcome == "accepted"
        offer = _Offer(room=room, overrides=overrides, join=join)
        offer.expiry = asyncio.get_running_loop().call_later(
            ASSIGNMENT_TIMEOUT, self._expire, job.id
        )
        self._offers[job.id] = offer
        AGENT_OFFERS.labels(outcome.outcome).inc()
        name = overrides.agent_name if overrides and overrides.agent_name else None
        name = name or self.settings.agent_name
        logger.info(
            "agent dispatch: offer %s %s",
            job.id,
            "accepted" if join else "acknowledged (we serve this room)",
            extra={"room": room},
        )
        return lkagent.AvailabilityResponse(
            job_id=job.id,
            available=True,
            participant_identity=agent_identity(self.settings, room),
            participant_name=name,
            participant_attributes={NAME_ATTRIBUTE: name, STATE_ATTRIBUTE: "initializing"},
        )

    def _overrides(self, job: lkagent.Job) -> SessionOverrides | None:
        """The room metadata's overrides, with the dispatch metadata's on top. Either one being
        unusable is logged and ignored: the dispatch itself is an explicit request."""
        room = job.room.name
        decision = decide(self.settings, room, job.room.metadata)
        from_dispatch, problem = dispatch_overrides(self.settings, job.metadata)
        if problem:
            logger.warning("dispatch metadata ignored: %s", problem, extra={"room": room})
        try:
            return merge_overrides(decision.overrides, from_dispatch)
        except ValueError as exc:
            logger.warning("dispatch metadata ignored: %s", exc, extra={"room": room})
            return decision.overrides

    def _expire(self, job_id: str) -> None:
        offer = self._offers.pop(job_id, None)
        if offer is None:
            return
        logger.warning(
            "agent dispatch: no assignment for offer %s; slot freed",
            job_id,
            extra={"room": offer.room},
        )
        if offer.join:
            self._dispatcher.release(offer.room)

    def _on_assignment(self, assignment: lkagent.JobAssignment) -> None:
        job = assignment.job
        offer = self._offers.pop(job.id, None)
        if offer is None:
            logger.warning(
                "agent dispatch: assignment of job %s we did not accept; ignored", job.id
            )
            return
        if offer.expiry is not None:
            offer.expiry.cancel()
        if assignment.HasField("url") and assignment.url.rstrip("/") not in (
            "",
            self.settings.livekit_url,
        ):
            logger.warning(
                "agent dispatch: assignment names another server; joining ours",
                extra={"room": offer.room},
            )
        tracked = _Job(
            id=job.id,
            room=offer.room,
            dispatch_id=job.dispatch_id,
            worker_id=self._socket.worker_id,
        )
        self._jobs[job.id] = tracked
        attributes = {
            "livekit.room.name": offer.room,
            "livekit.job.id": job.id,
            "livekit.dispatch.id": job.dispatch_id,
            "livekit.agent.name": self.settings.agent_name,
        }
        # The join it starts continues this span's trace, into the room's worker process.
        with spans.current_span("agent job", attributes, kind=spans.SpanKind.CONSUMER):
            if offer.join:
                self._dispatcher.assigned(offer.room, offer.overrides)
            elif not self._dispatcher.busy_with(offer.room):
                # The room ended between offer and assignment: join it after all.
                self._dispatcher.dispatch(offer.room, offer.overrides)
            elif self._dispatcher.serves(offer.room):
                self._job_status(tracked, lkagent.JS_RUNNING)
        self.changed()

    def _on_termination(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is None:
            AGENT_TERMINATIONS.labels("unknown").inc()
            logger.debug("agent dispatch: termination of job %s we do not run", job_id)
            return
        self._tasks.create_task(self._terminate(job), name=f"terminate-{job.room}")
        self.changed()

    async def _terminate(self, job: _Job) -> None:
        """Leave the job's room, unless LiveKit ended the job only because an earlier agent of
        ours left (a restarted worker process) and the job's dispatch still stands."""
        extra = {"room": job.room}
        stands = False
        if job.dispatch_id and self._dispatcher.serves(job.room):
            try:
                listed = await self._lkapi.list_dispatch(
                    job.room, self.settings.agent_dispatch_timeout
                )
                stands = any(d.id == job.dispatch_id for d in listed)
            except LiveKitAPIError as exc:
                logger.info("agent dispatch: could not list dispatches (%s); leaving", exc)
        if stands:
            AGENT_TERMINATIONS.labels("kept").inc()
            logger.info(
                "agent dispatch: job %s ended by LiveKit (an agent of ours left the room); "
                "its dispatch stands, so the room is not left",
                job.id,
                extra=extra,
            )
            return
        others = [j for j in self._jobs.values() if j.room == job.room]
        left = self._dispatcher.undispatch(job.room)
        AGENT_TERMINATIONS.labels("left" if left else "unknown").inc()
        if left:
            logger.info("agent dispatch: job %s terminated; leaving the room", job.id, extra=extra)
            for other in others:
                self._jobs.pop(other.id, None)
                self._job_status(other, lkagent.JS_SUCCESS)

    # ---- jobs of an earlier registration (bridge/service/orphan_jobs.py) -------------------

    def _orphans(self) -> list[_Job]:
        """Jobs whose termination can no longer reach us: given to an earlier registration, or
        we are not registered at all."""
        return [
            j
            for j in self._jobs.values()
            if j.dispatch_id
            and (not self._socket.connected or j.worker_id != self._socket.worker_id)
        ]

    def _watch_orphans(self) -> None:
        if self._tasks.closed or not self._orphans():
            return
        if self._orphan_watch is None or self._orphan_watch.done():
            self._orphan_watch = self._tasks.create_task(
                watch_orphans(self.settings, self._lkapi, self._orphans, self._orphan_ended),
                name="orphans",
            )

    def _orphan_ended(self, job: _Job) -> None:
        """An orphaned job's dispatch is gone: leave its room, as its termination would."""
        if self._jobs.pop(job.id, None) is None:
            return
        others = [j for j in self._jobs.values() if j.room == job.room]
        left = self._dispatcher.undispatch(job.room)
        AGENT_TERMINATIONS.labels("orphan_left" if left else "unknown").inc()
        for ended in [job, *others] if left else [job]:
            self._jobs.pop(ended.id, None)
            self._job_status(ended, lkagent.JS_SUCCESS)
        self.changed()

    # ---- what happens to rooms (Dispatcher listener) -------------------------------------------

    def joined(self, room: str, error: str | None) -> None:
        for job in [j for j in self._jobs.values() if j.room == room]:
            if error is None:
                if not job.running:
                    self._job_status(job, lkagent.JS_RUNNING)
            else:
                del self._jobs[job.id]
                self._job_status(job, lkagent.JS_FAILED, error)

    def ended(self, room: str, reason: str, duplicate: bool) -> None:
        status, error = job_outcome(reason, duplicate)
        for job in [j for j in self._jobs.values() if j.room == room]:
            del self._jobs[job.id]
            self._job_status(job, status, error)

    def changed(self) -> None:
        """Report status and load when either changed."""
        if not self._socket.connected:
            return
        dispatcher = self._dispatcher
        maximum = self.settings.max_sessions
        committed = dispatcher.sessions
        full = not dispatcher.takes_rooms()[0]
        status = lkagent.WS_FULL if full else lkagent.WS_AVAILABLE
        load = round(min(1.0, committed / maximum), 4)
        current = (status, load, len(self._jobs))
        if current == self._last_status:
            return
        self._last_status = current
        update = lkagent.UpdateWorkerStatus(status=status, load=load, job_count=len(self._jobs))
        self._socket.send(lkagent.WorkerMessage(update_worker=update))

    def _job_status(self, job: _Job, status: int, error: str = "") -> None:
        job.running = status == lkagent.JS_RUNNING
        update = lkagent.UpdateJobStatus(job_id=job.id, status=status, error=error[:300])  # type: ignore[arg-type]
        self._socket.send(lkagent.WorkerMessage(update_job=update))


__all__ = ["JobBook", "job_outcome"]
