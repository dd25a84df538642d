"""LiveKit agent dispatch: ``serve`` registers with LiveKit as an agent worker.

LiveKit's own way to bring an agent into a room is to name it and dispatch it: in a participant's
token (``RoomConfiguration.agents``) or with ``AgentDispatchService.CreateDispatch``. LiveKit's
dispatcher then offers the job to one registered worker of that name, chosen by load. This module
is that worker, speaking the protocol directly (protobuf ``WorkerMessage`` / ``ServerMessage``
over a WebSocket at ``<LIVEKIT_URL>/agent``; see shared docs "Agent dispatch"):

    worker -> server   register(JT_ROOM, agent_name)       server -> worker   register(worker_id)
                       availability(job_id, available,                        availability(job)
                         participant_identity, ...)                           assignment(job, token)
                       update_worker(status, load, jobs)                      termination(job_id)
                       update_job(job_id, status, error)

* An offer is answered at once, from memory: available unless draining or at ``max_sessions``
  (then LiveKit offers it to another worker). The identity is the bridge's deterministic agent
  identity for the room, so webhooks, reconcile and any number of dispatches give one agent per
  room; an offer for a room this process serves is acknowledged, not joined twice. The job's
  metadata is a JSON object of session overrides (like a room's ``"ai": {...}``); bad metadata is
  logged and ignored. Dispatched rooms are joined whatever the ``rooms`` policy says.
* The assignment starts the same join as a webhook or ``POST /dispatch`` (with our own agent
  token: same identity as the one LiveKit minted). ``update_job`` follows the room's life:
  running when joined, failed (with the error) when the join fails or the agent is disconnected
  by an error, success when the agent leaves normally.
* ``update_worker`` (load = sessions / ``max_sessions``; ``WS_FULL`` at capacity or while
  draining) is sent whenever it changes.
* A termination (after ``DeleteDispatch``) makes the agent leave that room. LiveKit also sends
  one when an agent participant of ours left the room; if our agent is in the room again (a
  worker process restarted) and the job's dispatch still exists, the agent stays.
* If the socket drops (livekit-server restarted, network), the worker registers again with
  exponential backoff and jitter; rooms already joined keep going. LiveKit cannot terminate the
  jobs of the old registration any more: their dispatches are looked up instead
  (bridge/service/orphan_jobs.py), and a job whose dispatch was deleted leaves its room.

LiveKit never re-dispatches a job whose worker died or that found every worker full: the
reconcile loop (bridge/service/dispatch.py) joins rooms with humans, no agent and a dispatch to
our agent name.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent as lkagent

from bridge import __version__
from bridge.aio import TaskSet, cancel_and_wait, wait_in_loop
from bridge.metrics import (
    AGENT_OFFER_SECONDS,
    AGENT_OFFERS,
    AGENT_OFFERS_REFUSED,
    AGENT_REGISTERED,
    AGENT_REGISTRATIONS,
    AGENT_TERMINATIONS,
)
from bridge.room.identity import NAME_ATTRIBUTE, STATE_ATTRIBUTE, agent_identity
from bridge.service.dispatch import Dispatcher
from bridge.service.eligibility import decide, dispatch_overrides, merge_overrides
from bridge.service.livekit_api import LiveKitAPIError, LiveKitServerAPI
from bridge.service.orphan_jobs import watch_orphans
from bridge.settings.config import SessionOverrides, Settings
from bridge.tracing import spans

logger = logging.getLogger(__name__)

AGENT_PATH = "/agent"
TOKEN_TTL = timedelta(minutes=10)
# An accepted offer whose assignment does not come within this long frees its reservation.
ASSIGNMENT_TIMEOUT = 15.0
BACKOFF_INITIAL = 0.5
# A registration that lasted this long resets the backoff.
STABLE_SECONDS = 30.0
HEARTBEAT = 15.0
MAX_MESSAGE_BYTES = 1 << 20
OUTBOX_SIZE = 1024
ANSWER_SAMPLES = 2048
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


class ProtocolError(Exception):
    """The server broke the protocol (e.g. no register answer): reconnect."""


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


def agent_socket_url(settings: Settings) -> str:
    url = settings.livekit_url
    if url.startswith("http://"):
        url = "ws://" + url.removeprefix("http://")
    elif url.startswith("https://"):
        url = "wss://" + url.removeprefix("https://")
    return url + AGENT_PATH


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class AgentWorker:
    """One registration with LiveKit for this ``serve`` instance (its parent process)."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, lkapi: LiveKitServerAPI) -> None:
        self.settings = settings
        self._dispatcher = dispatcher
        self._lkapi = lkapi
        dispatcher.listeners.append(self)
        self._tasks = TaskSet("agent-worker")
        self._outbox: asyncio.Queue[lkagent.WorkerMessage] = asyncio.Queue(OUTBOX_SIZE)
        self._connected = False
        self._go_away = False
        self._offers: dict[str, _Offer] = {}
        self._jobs: dict[str, _Job] = {}
        self._last_status: tuple[int, float, int] | None = None
        self._orphan_watch: asyncio.Task[None] | None = None
        self._answer_seconds: deque[float] = deque(maxlen=ANSWER_SAMPLES)
        self.state = "stopped"
        self.worker_id = ""
        self.last_error: str | None = None
        self.registrations = 0

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.state = "connecting"
        self._tasks.create_task(self._run(), name="connection")

    async def aclose(self) -> None:
        for offer in self._offers.values():
            if offer.expiry is not None:
                offer.expiry.cancel()
        self._offers.clear()
        await self._tasks.aclose()
        self.state = "stopped"

    def describe(self) -> dict[str, Any]:
        """For /status (no secrets)."""
        answers = list(self._answer_seconds)
        return {
            "state": self.state,
            "agent_name": self.settings.agent_name,
            "worker_id": self.worker_id,
            "registrations": self.registrations,
            "last_error": self.last_error,
            "jobs": {j.id: {"room": j.room, "running": j.running} for j in self._jobs.values()},
            "offer_answer_ms": {
                "count": len(answers),
                "p50": round(percentile(answers, 0.5) * 1000, 3) if answers else None,
                "p99": round(percentile(answers, 0.99) * 1000, 3) if answers else None,
            },
        }

    async def _run(self) -> None:
        attempt = 0
        async with aiohttp.ClientSession() as http:
            while True:
                began = time.monotonic()
                try:
                    await self._session(http)
                    reason = "the server closed the connection"
                except (aiohttp.ClientError, TimeoutError, OSError, ProtocolError) as exc:
                    reason = str(exc) or type(exc).__name__
                finally:
                    self._disconnected()
                if self.state == "registered" and time.monotonic() - began > STABLE_SECONDS:
                    attempt = 0
                self.state = "disconnected"
                self.last_error = reason
                ceiling = min(self.settings.agent_reconnect_max, BACKOFF_INITIAL * 2**attempt)
                delay = random.uniform(ceiling / 2, ceiling)  # jitter: replicas spread out
                attempt = min(attempt + 1, 16)
                logger.warning(
                    "agent dispatch: not registered with LiveKit (%s); retrying in %.1f s",
                    reason,
                    delay,
                )
                await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """The backoff's wait (the reconnect test replaces it to see the delays)."""
        await asyncio.sleep(seconds)

    def _token(self) -> str:
        settings = self.settings
        assert settings.livekit_api_key and settings.livekit_api_secret
        return (
            api.AccessToken(
                settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()
            )
            .with_grants(api.VideoGrants(agent=True))
            .with_ttl(TOKEN_TTL)
            .to_jwt()
        )

    async def _session(self, http: aiohttp.ClientSession) -> None:
        """One connection: register, then serve messages until it ends."""
        timeout = self.settings.agent_dispatch_timeout
        self.state = "connecting"
        try:
            ws = await asyncio.wait_for(
                http.ws_connect(
                    agent_socket_url(self.settings),
                    headers={"Authorization": f"Bearer {self._token()}"},
                    heartbeat=HEARTBEAT,
                    max_msg_size=MAX_MESSAGE_BYTES,
                ),
                timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError):
            AGENT_REGISTRATIONS.labels("failed").inc()
            raise
        sender: asyncio.Task[None] | None = None
        try:
            await self._register(ws, timeout)
            self._connected = True
            self._go_away = False
            self._last_status = None
            sender = asyncio.get_running_loop().create_task(self._send_loop(ws), name="sender")
            self.changed()
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    received = time.perf_counter()
                    answer = self.handle_frame(message.data)
                    if answer is not None:
                        # Straight from here (no queue hop): LiveKit waits for it.
                        await wait_in_loop(ws.send_bytes(answer.SerializeToString()), timeout)
                        self._answered(time.perf_counter() - received)
                    if self._go_away:
                        break
                elif message.type == aiohttp.WSMsgType.TEXT:
                    logger.warning("agent dispatch: ignoring a text frame from LiveKit")
                else:  # closing or error: the iterator ends
                    break
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                raise ProtocolError(f"sending failed: {sender.exception()}")
        finally:
            await cancel_and_wait(sender)
            await ws.close()

    async def _register(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> None:
        request = lkagent.WorkerMessage(
            register=lkagent.RegisterWorkerRequest(
                type=lkagent.JT_ROOM,
                agent_name=self.settings.agent_name,
                version=__version__,
            )
        )
        try:
            async with asyncio.timeout(timeout):
                await ws.send_bytes(request.SerializeToString())
                answer = await self._register_answer(ws)
        except (ProtocolError, aiohttp.ClientError, TimeoutError, OSError):
            AGENT_REGISTRATIONS.labels("failed").inc()
            raise
        self.worker_id = answer.worker_id
        self.state = "registered"
        self.last_error = None
        self.registrations += 1
        AGENT_REGISTERED.set(1)
        AGENT_REGISTRATIONS.labels("ok").inc()
        logger.info(
            "agent dispatch: registered with LiveKit as worker %s for agent %r",
            self.worker_id,
            self.settings.agent_name,
        )

    async def _register_answer(
        self, ws: aiohttp.ClientWebSocketResponse
    ) -> lkagent.RegisterWorkerResponse:
        """The server's answer to our register request (only pongs may come before it)."""
        while True:
            frame = await ws.receive()
            if frame.type != aiohttp.WSMsgType.BINARY:
                raise ProtocolError(f"registration answered with a {frame.type.name} frame")
            try:
                answer = lkagent.ServerMessage.FromString(frame.data)
            except DecodeError:
                raise ProtocolError("registration answer is not a ServerMessage") from None
            kind = answer.WhichOneof("message")
            if kind == "register":
                return answer.register
            if kind != "pong":
                raise ProtocolError(f"registration answered with a {kind or 'empty'} message")

    def _disconnected(self) -> None:
        if self._connected:
            AGENT_REGISTERED.set(0)
        self._connected = False
        self._watch_orphans()
        # Offers not yet assigned will not be; their assignment would come on the old socket.
        for offer in self._offers.values():
            if offer.expiry is not None:
                offer.expiry.cancel()
            if offer.join:
                self._dispatcher.release(offer.room)
        self._offers.clear()
        while not self._outbox.empty():
            self._outbox.get_nowait()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        timeout = self.settings.agent_dispatch_timeout
        while True:
            message = await self._outbox.get()
            await wait_in_loop(ws.send_bytes(message.SerializeToString()), timeout)

    def _answered(self, seconds: float) -> None:
        self._answer_seconds.append(seconds)
        AGENT_OFFER_SECONDS.observe(seconds)

    def _send(self, message: lkagent.WorkerMessage) -> None:
        if not self._connected:
            return
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            logger.error("agent dispatch: outgoing queue full; a message to LiveKit was dropped")

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
                self._go_away = True
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
            reason = "draining" if outcome.detail == "draining" else "at_capacity"
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
            id=job.id, room=offer.room, dispatch_id=job.dispatch_id, worker_id=self.worker_id
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
            if j.dispatch_id and (not self._connected or j.worker_id != self.worker_id)
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
        if not self._connected:
            return
        dispatcher = self._dispatcher
        maximum = self.settings.max_sessions
        committed = dispatcher.sessions
        full = dispatcher.draining or committed >= maximum
        status = lkagent.WS_FULL if full else lkagent.WS_AVAILABLE
        load = round(min(1.0, committed / maximum), 4)
        current = (status, load, len(self._jobs))
        if current == self._last_status:
            return
        self._last_status = current
        update = lkagent.UpdateWorkerStatus(status=status, load=load, job_count=len(self._jobs))
        self._send(lkagent.WorkerMessage(update_worker=update))

    def _job_status(self, job: _Job, status: int, error: str = "") -> None:
        job.running = status == lkagent.JS_RUNNING
        update = lkagent.UpdateJobStatus(job_id=job.id, status=status, error=error[:300])  # type: ignore[arg-type]
        self._send(lkagent.WorkerMessage(update_job=update))


__all__ = ["AgentWorker", "agent_socket_url", "job_outcome"]
