"""RoomWorker: joins one LiveKit room as the agent and gives every human their own session.

    worker = RoomWorker(settings, "support-42")
    await worker.start()
    reason = await worker.wait()      # no humans left, room closed, duplicate identity, stopped
    await worker.aclose()

The worker keeps only what it bridges (humans' microphones, and their camera or screen share
when video is on), never other agents' tracks (``Subscriptions``). LiveKit callbacks are
synchronous; each one that needs to do network work hands it to a task the worker owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from livekit import rtc

from bridge.aio import Closer, TaskSet, cancel_and_wait
from bridge.billing.cost import Spend
from bridge.metrics import ROOMS_ACTIVE
from bridge.realtime.http import prewarm as prewarm_calls
from bridge.realtime.instruments import NO_INSTRUMENTS, Instruments
from bridge.room.admission import Admission, MicRequest
from bridge.room.agent_state import AttributeWriter
from bridge.room.answer_tracks import AnswerTracks
from bridge.room.budget import BUDGET_SPENT, RoomCost
from bridge.room.capacity import SessionBudget
from bridge.room.chat import CHAT_TOPIC, ChatRouter
from bridge.room.identity import agent_identity, agent_token, bridged, is_human
from bridge.room.media import MicrophonePump
from bridge.room.meeting import Meeting
from bridge.room.sdk import LiveKitError, sdk_call
from bridge.room.session import ParticipantSession, RoomContext
from bridge.room.shared import SharedSession
from bridge.room.subscriptions import Subscriptions
from bridge.room.tools.builtins import WorkerActions
from bridge.settings.config import SessionOverrides, Settings, apply_overrides
from bridge.tracing import spans
from bridge.tracing.calls import room_span

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0  # the SDK's, per signal connection attempt
JOIN_TIMEOUT = CONNECT_TIMEOUT  # how long start() waits for the connect
CHAT_SEND_TIMEOUT = 10.0


class RoomWorker:
    def __init__(
        self,
        settings: Settings,
        room_name: str,
        *,
        overrides: SessionOverrides | None = None,
        budget: SessionBudget | None = None,
        instruments: Instruments = NO_INSTRUMENTS,
    ) -> None:
        self.settings = apply_overrides(settings, overrides)
        self._instruments = instruments  # a benchmark's measurement hooks
        self.room_name = room_name
        self.identity = agent_identity(self.settings, room_name)
        self.room = rtc.Room()
        self.answer_tracks = AnswerTracks(self.room, queue_size_ms=self.settings.audio_queue_ms)
        self.cost = RoomCost(self.settings, room_name, on_exceeded=self._budget_passed)
        self.meeting = Meeting(self.settings)
        self.end_reason: str | None = None
        self.trace: spans.Span = spans.NO_PARENT  # the room's span, once joined
        self.duplicate = False
        self._tasks = TaskSet(f"room-{room_name}")
        self._ended = asyncio.Event()
        self._empty_timer: asyncio.Task[None] | None = None
        self._attributes: AttributeWriter | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._closed = False
        self._closer = Closer()
        self._subscriptions = Subscriptions(self.settings)
        self._extra = {"room": room_name}
        self.admission = Admission(
            shared=self.settings.mode == "shared",
            build=self._new_session,
            on_ended=self._update_permissions,
            budget=budget,
            meeting=self.meeting,
            tasks=self._tasks,
            log_extra=self._extra,
        )
        self.sessions = self.admission.sessions  # by identity, or SHARED
        self._cameras = self.admission.cameras
        self._chat = ChatRouter(
            room=self.room,
            sessions=self.sessions,
            meeting=self.meeting,
            spawn=self._spawn,
            log_extra=self._extra,
        )

    @property
    def shared(self) -> SharedSession | None:
        """The room's one session in ``mode = shared``."""
        return self.admission.shared

    def demand(self) -> int:
        """Session slots this room needs: one per human, or one for a shared room."""
        humans = len(self.humans())
        return min(1, humans) if self.settings.mode == "shared" else humans

    @property
    def usage(self) -> Spend:
        """What the room's sessions used and spent so far (the room's ledger)."""
        return self.cost.spend

    @property
    def attributes(self) -> AttributeWriter:
        assert self._attributes is not None, "worker not started"
        return self._attributes

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        await prewarm_calls()  # per-process call setup work, done before any human waits for it
        token = agent_token(settings, self.room_name)
        room = self.room
        room.on("track_published", self._subscriptions.published)
        room.on("track_subscribed", self._on_track_subscribed)
        room.on("track_unsubscribed", self._on_track_unsubscribed)
        room.on("track_unpublished", self._on_track_unpublished)
        room.on("participant_connected", self._on_participant_connected)
        room.on("participant_disconnected", self._on_participant_disconnected)
        room.on("active_speakers_changed", self._on_active_speakers)
        room.on("disconnected", self._on_disconnected)
        options = rtc.RoomOptions(auto_subscribe=True, connect_timeout=CONNECT_TIMEOUT)
        # The SDK's connect is never cancelled: a connect cancelled after the server accepted it
        # strands the SDK's native side, which then SIGTERMs the whole process 15 s later (every
        # room in it gone). On a timeout it runs on; aclose() waits for it and leaves the room.
        self._connecting = asyncio.ensure_future(room.connect(settings.livekit_url, token, options))
        await asyncio.wait_for(asyncio.shield(self._connecting), JOIN_TIMEOUT)
        room.register_text_stream_handler(CHAT_TOPIC, self._chat.on_chat)
        # Private answers: deny by default before any track exists, so no one can subscribe to a
        # new answer track in the moment between its publication and its permission.
        self._update_permissions()
        ROOMS_ACTIVE.inc()
        self.trace = room_span(settings, room=self.room_name, agent_identity=self.identity)
        self._attributes = AttributeWriter(room.local_participant, self._tasks)
        self._attributes.start()
        logger.info("agent joined as %s", self.identity, extra=self._extra)
        for participant in room.remote_participants.values():
            self._present(participant, announce=False)
        for arrival in self._subscriptions.joined():
            self._on_track_subscribed(*arrival)
        self._check_humans()

    async def wait(self) -> str:
        """Until the worker has a reason to leave; returns it."""
        await self._ended.wait()
        return self.end_reason or "stopped"

    def stop(self, reason: str = "stopped") -> None:
        self._end(reason)

    async def aclose(self, reason: str = "stopped") -> None:
        """End every session (calls hung up, tracks unpublished) and leave. Idempotent, and runs
        to the end even if the caller is cancelled meanwhile."""
        if not self._closer.started:
            self._closed = True
            self.admission.stop_admitting()
            self._end(reason)
        await self._closer.close(self._close(reason))

    async def _close(self, reason: str) -> None:
        await cancel_and_wait(self._empty_timer)
        await self.admission.aclose(reason)
        await self._tasks.aclose()
        await self.answer_tracks.aclose()
        with contextlib.suppress(KeyError, ValueError):
            self.room.unregister_text_stream_handler(CHAT_TOPIC)
        await self._connected()
        if self.room.isconnected():
            try:
                await sdk_call(self.room.disconnect(), 10.0, "disconnect")
            except LiveKitError as exc:
                logger.info("%s", exc, extra=self._extra)
        if self._attributes is not None:
            ROOMS_ACTIVE.dec()
        spans.end_span(self.trace, attributes={"bridge.room.end": self.end_reason or reason})
        spend = self.cost.spend
        spend.ended = time.monotonic()
        logger.info(
            "agent left (%s); %d responses, tokens %s, cost %s",
            self.end_reason,
            spend.responses,
            dict(spend.tokens),
            spend.describe(),
            extra={**self._extra, **spend.log_extra()},
        )

    async def _connected(self) -> None:
        """A connect that timed out still runs in the SDK: wait for it (bounded) so the room it
        may yet join is left instead of stranded."""
        connecting = self._connecting
        if connecting is None:
            return
        if not connecting.done():
            await asyncio.wait({connecting}, timeout=CONNECT_TIMEOUT)
        if not connecting.done():
            logger.warning(
                "connect to LiveKit still pending after %g s more; left to the SDK",
                CONNECT_TIMEOUT,
                extra=self._extra,
            )
        elif not connecting.cancelled() and connecting.exception() is not None:
            logger.info("connect failed: %s", connecting.exception(), extra=self._extra)

    def _end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self._ended.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._tasks.closed:
            coro.close()
            return
        self._tasks.create_task(coro, name=name)

    # ---- participants and tracks ------------------------------------------------------------

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if not self._subscriptions.arrived(track, publication, participant) or self._closed:
            return
        if publication.source == rtc.TrackSource.SOURCE_MICROPHONE:
            request = MicRequest(participant, track, publication.sid)
            self._spawn(self.admission.admit(request), f"start-{participant.identity}")
        elif bridged(self.settings, publication):
            self._cameras.added(participant.identity, track)

    def _on_track_unsubscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if self._subscriptions.wanted(publication, participant):
            self._track_gone(publication, participant, "microphone unsubscribed")

    def _on_track_unpublished(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self._track_gone(publication, participant, "microphone unpublished")

    def _track_gone(
        self,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
        why: str,
    ) -> None:
        if publication.source == rtc.TrackSource.SOURCE_MICROPHONE:
            identity = participant.identity
            self._spawn(self.admission.dismiss(identity, why), f"stop-{identity}")
        elif bridged(self.settings, publication):
            self._cameras.removed(participant.identity)

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        self._present(participant)
        self._check_humans()

    def _present(self, participant: rtc.RemoteParticipant, *, announce: bool = True) -> None:
        if is_human(self.settings, participant):
            name = participant.name or participant.identity
            self.meeting.joined(participant.identity, name, announce=announce)

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        self.meeting.left(participant.identity)
        self._cameras.left(participant.identity)
        identity = participant.identity
        self._spawn(self.admission.dismiss(identity, "left"), f"stop-{identity}")
        self._check_humans()

    def _on_active_speakers(self, speakers: list[rtc.Participant]) -> None:
        """Shared mode: the call sees the active speaker's camera (the loudest first)."""
        self._cameras.speaking([speaker.identity for speaker in speakers])

    def _on_disconnected(self, reason: rtc.DisconnectReason.ValueType) -> None:
        if reason == rtc.DisconnectReason.DUPLICATE_IDENTITY:
            self.duplicate = True
            logger.warning(
                "another agent joined as %s; this one leaves and does not rejoin",
                self.identity,
                extra=self._extra,
            )
            self._end("duplicate identity")
        else:
            name = rtc.DisconnectReason.Name(reason)
            self._end(f"disconnected: {name}")

    def humans(self) -> list[rtc.RemoteParticipant]:
        return [p for p in self.room.remote_participants.values() if is_human(self.settings, p)]

    def _check_humans(self) -> None:
        if self.humans():
            if self._empty_timer is not None:
                self._empty_timer.cancel()
                self._empty_timer = None
        elif self._empty_timer is None and not self._closed:
            self._empty_timer = self._tasks.create_task(self._leave_when_empty(), name="empty")

    async def _leave_when_empty(self) -> None:
        await asyncio.sleep(self.settings.empty_room_grace)
        if not self.humans():
            self._end("no humans left")

    # ---- sessions -----------------------------------------------------------------------------

    def _new_session(self, request: MicRequest | None) -> ParticipantSession:
        """One human's session (``request``), or the room's shared one (None)."""
        actions = WorkerActions(self.settings, self.room_name, self._tasks, self.stop)
        room, cost = self._context(), self.cost.session()
        session: ParticipantSession
        if request is None:
            session = SharedSession(
                room=room, settings=self.settings, cost=cost, tool_actions=actions
            )
        else:
            session = ParticipantSession(
                room=room,
                settings=self.settings,
                identity=request.identity,
                name=request.participant.name or request.identity,
                mic=MicrophonePump(request.track, self.settings, self._instruments.probe),
                mic_sid=request.sid,
                cost=cost,
                tool_actions=actions,
            )
        if self.cost.exceeded:
            session.stop_answering(transcribe=self.cost.transcribes_when_exceeded)
        return session

    def _context(self) -> RoomContext:
        return RoomContext(
            room=self.room,
            attributes=self.attributes,
            answer_tracks=self.answer_tracks,
            meeting=self.meeting,
            on_track_published=self._update_permissions,
            on_gave_up=self.admission.release,
            instruments=self._instruments,
            trace=self.trace,
        )

    def _update_permissions(self) -> None:
        """``private`` audience: each human may subscribe to their own answer track only."""
        if self.settings.audience != "private":
            return
        permissions = [
            rtc.ParticipantTrackPermission(
                participant_identity=identity, allow_all=False, allowed_track_sids=[sid]
            )
            for identity, session in self.sessions.items()
            if (sid := session.track_sid) is not None
        ]
        self.room.local_participant.set_track_subscription_permissions(
            allow_all_participants=False, participant_permissions=permissions
        )

    # ---- cost ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """This room for ``GET /rooms``: humans, state, duration, tokens and cost so far."""
        state = self._attributes.room_state.value if self._attributes is not None else "joining"
        return {"humans": len(self.humans()), "state": state, **self.cost.status()}

    def _budget_passed(self, message: str) -> None:
        """The room's budget is spent: tell the room once, then stop answering or leave."""
        if self._attributes is not None:
            self._attributes.set_notice(message)
        for session in self.sessions.values():
            session.stop_answering(transcribe=self.cost.transcribes_when_exceeded)
        self._spawn(
            self._tell(message, then_leave=self.settings.budget_action == "leave"), "budget"
        )

    async def _tell(self, message: str, *, then_leave: bool) -> None:
        sending = self.room.local_participant.send_text(message, topic=CHAT_TOPIC)
        try:
            await sdk_call(sending, CHAT_SEND_TIMEOUT, "send chat")
        except LiveKitError as exc:
            logger.warning("could not tell the room about its budget: %s", exc, extra=self._extra)
        if then_leave:
            self._end(BUDGET_SPENT)
