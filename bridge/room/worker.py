"""RoomWorker: joins one LiveKit room as the agent and gives every human their own session.

    worker = RoomWorker(settings, "support-42")
    await worker.start()
    reason = await worker.wait()      # no humans left, room closed, duplicate identity, stopped
    await worker.aclose()

The worker subscribes only to what it bridges (humans' microphones, and their camera or screen
share when video is on), never to other agents. LiveKit callbacks are synchronous; each one that
needs to do network work hands it to a task the worker owns.
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
from bridge.logs import one_line
from bridge.metrics import ROOMS_ACTIVE
from bridge.realtime.http import prewarm as prewarm_calls
from bridge.realtime.instruments import NO_INSTRUMENTS, Instruments
from bridge.room.agent_state import AttributeWriter
from bridge.room.answer_tracks import AnswerTracks
from bridge.room.budget import BUDGET_SPENT, RoomCost
from bridge.room.capacity import SessionBudget
from bridge.room.chat import CHAT_TOPIC, MAX_CHAT_CHARS, MAX_CHATS_IN_FLIGHT, read_chat
from bridge.room.identity import agent_identity, agent_token, is_human
from bridge.room.media import MicrophonePump
from bridge.room.meeting import Meeting
from bridge.room.session import ParticipantSession
from bridge.room.shared import SHARED, SharedSession
from bridge.room.tools.builtins import WorkerActions
from bridge.settings.config import SessionOverrides, Settings, apply_overrides

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
        self._budget = budget
        # Humans waiting for a free session slot: identity -> (participant, mic track, mic sid)
        self._waiting: dict[str, tuple[rtc.RemoteParticipant, rtc.Track, str]] = {}
        self._waiter: asyncio.Task[None] | None = None
        self.room_name = room_name
        self.identity = agent_identity(self.settings, room_name)
        self.room = rtc.Room()
        self.answer_tracks = AnswerTracks(self.room, queue_size_ms=self.settings.audio_queue_ms)
        self.sessions: dict[str, ParticipantSession] = {}
        self.cost = RoomCost(self.settings, room_name, on_exceeded=self._budget_passed)
        self.meeting = Meeting(self.settings)
        self.end_reason: str | None = None
        self.duplicate = False
        self._tasks = TaskSet(f"room-{room_name}")
        self._locks: dict[str, asyncio.Lock] = {}
        self._video: dict[str, rtc.Track] = {}
        self._ended = asyncio.Event()
        self._empty_timer: asyncio.Task[None] | None = None
        self._attributes: AttributeWriter | None = None
        self._ending: set[ParticipantSession] = set()
        self._chats_in_flight = 0
        self._connecting: asyncio.Future[None] | None = None
        self._closed = False
        self._closer = Closer()
        self._extra = {"room": room_name}
        self._video_of: str | None = None  # shared mode: whose camera the call sees

    @property
    def shared(self) -> SharedSession | None:
        """The room's one session in ``mode = shared``."""
        session = self.sessions.get(SHARED)
        return session if isinstance(session, SharedSession) else None

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
        room.on("track_published", self._on_track_published)
        room.on("track_subscribed", self._on_track_subscribed)
        room.on("track_unsubscribed", self._on_track_unsubscribed)
        room.on("track_unpublished", self._on_track_unpublished)
        room.on("participant_connected", self._on_participant_connected)
        room.on("participant_disconnected", self._on_participant_disconnected)
        room.on("active_speakers_changed", self._on_active_speakers)
        room.on("disconnected", self._on_disconnected)
        options = rtc.RoomOptions(auto_subscribe=False, connect_timeout=CONNECT_TIMEOUT)
        # The SDK's connect is never cancelled: a connect cancelled after the server accepted it
        # strands the SDK's native side, which then SIGTERMs the whole process 15 s later (every
        # room in it gone). On a timeout it runs on; aclose() waits for it and leaves the room.
        self._connecting = asyncio.ensure_future(room.connect(settings.livekit_url, token, options))
        await asyncio.wait_for(asyncio.shield(self._connecting), JOIN_TIMEOUT)
        room.register_text_stream_handler(CHAT_TOPIC, self._on_chat)
        # Private answers: deny by default before any track exists, so no one can subscribe to a
        # new answer track in the moment between its publication and its permission.
        self._update_permissions()
        ROOMS_ACTIVE.inc()
        self._attributes = AttributeWriter(room.local_participant, self._tasks)
        self._attributes.start()
        logger.info("agent joined as %s", self.identity, extra=self._extra)
        for participant in room.remote_participants.values():
            self._present(participant, announce=False)
            for publication in participant.track_publications.values():
                self._on_track_published(publication, participant)
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
            self._end(reason)
        await self._closer.close(self._close(reason))

    async def _close(self, reason: str) -> None:
        await cancel_and_wait(self._empty_timer)
        # Sessions being ended by a stop task are ended here too (the same run is awaited).
        sessions = [*self.sessions.values(), *self._ending]
        self.sessions.clear()
        self._waiting.clear()
        await asyncio.gather(*(self._finish_session(s, reason) for s in sessions))
        await self._tasks.aclose()
        await self.answer_tracks.aclose()
        with contextlib.suppress(KeyError, ValueError):
            self.room.unregister_text_stream_handler(CHAT_TOPIC)
        await self._connected()
        if self.room.isconnected():
            try:
                await asyncio.wait_for(self.room.disconnect(), 10.0)
            except (TimeoutError, Exception) as exc:  # the SDK raises Exception
                logger.info("disconnect failed: %s", exc, extra=self._extra)
        if self._attributes is not None:
            ROOMS_ACTIVE.dec()
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

    def _wanted(self, publication: rtc.TrackPublication) -> bool:
        if publication.source == rtc.TrackSource.SOURCE_MICROPHONE:
            return True
        if not self.settings.video_enabled:
            return False
        wanted = (
            rtc.TrackSource.SOURCE_CAMERA
            if self.settings.video_source == "camera"
            else rtc.TrackSource.SOURCE_SCREENSHARE
        )
        return bool(publication.source == wanted)

    def _on_track_published(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if is_human(self.settings, participant) and self._wanted(publication):
            publication.set_subscribed(True)

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if not is_human(self.settings, participant) or self._closed:
            return
        if publication.source == rtc.TrackSource.SOURCE_MICROPHONE:
            self._spawn(
                self._start_session(participant, track, publication.sid),
                f"start-{participant.identity}",
            )
        elif self._wanted(publication):
            self._video[participant.identity] = track
            session = self.sessions.get(participant.identity)
            if session is not None:
                session.attach_video(track)
            elif self._video_of is None:
                self._show(participant.identity)

    def _on_track_unsubscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
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
            self._spawn(
                self._stop_session(participant.identity, why), f"stop-{participant.identity}"
            )
        elif self._wanted(publication):
            self._video.pop(participant.identity, None)
            session = self.sessions.get(participant.identity)
            if session is not None:
                session.detach_video()
            elif self._video_of == participant.identity:
                self._show(next(iter(self._video), None))

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        self._present(participant)
        self._check_humans()

    def _present(self, participant: rtc.RemoteParticipant, *, announce: bool = True) -> None:
        if is_human(self.settings, participant):
            name = participant.name or participant.identity
            self.meeting.joined(participant.identity, name, announce=announce)

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        self.meeting.left(participant.identity)
        self._video.pop(participant.identity, None)
        self._spawn(
            self._stop_session(participant.identity, "left"), f"stop-{participant.identity}"
        )
        self._check_humans()

    def _on_active_speakers(self, speakers: list[rtc.Participant]) -> None:
        """Shared mode: the call sees the active speaker's camera (the loudest first)."""
        for speaker in speakers:
            if speaker.identity in self._video:
                if speaker.identity != self._video_of:
                    self._show(speaker.identity)
                return

    def _show(self, identity: str | None) -> None:
        shared = self.shared
        self._video_of = identity
        if shared is None:
            return
        track = self._video.get(identity) if identity is not None else None
        if track is None:
            shared.detach_video()
        else:
            shared.attach_video(track)

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

    def _lock(self, identity: str) -> asyncio.Lock:
        return self._locks.setdefault(identity, asyncio.Lock())

    async def _start_session(
        self,
        participant: rtc.RemoteParticipant,
        track: rtc.Track,
        mic_sid: str,
        *,
        waiting: bool = False,
    ) -> None:
        if self.settings.mode == "shared":
            await self._join_shared(participant, track, mic_sid, waiting=waiting)
            return
        async with self._lock(participant.identity):
            if participant.identity in self.sessions or self._closed:
                return
            if waiting and participant.identity not in self._waiting:
                return  # they left (or unpublished) while waiting for a slot
            if self._budget is not None and not self._budget.try_acquire():
                logger.warning(
                    "at capacity (%d sessions); %s waits for a free slot",
                    self._budget.limit,
                    participant.identity,
                    extra=self._extra,
                )
                self._waiting[participant.identity] = (participant, track, mic_sid)
                if self._waiter is None or self._waiter.done():
                    self._waiter = self._tasks.create_task(self._retry_waiting(), name="waiting")
                return
            self._waiting.pop(participant.identity, None)
            session = ParticipantSession(
                settings=self.settings,
                room=self.room,
                identity=participant.identity,
                name=participant.name or participant.identity,
                mic=MicrophonePump(track, self.settings, self._instruments.probe),
                mic_sid=mic_sid,
                attributes=self.attributes,
                answer_tracks=self.answer_tracks,
                on_track_published=self._update_permissions,
                on_gave_up=self._release_slot,
                tool_actions=WorkerActions(self.settings, self.room_name, self._tasks, self.stop),
                cost=self.cost.session(),
                meeting=self.meeting,
                instruments=self._instruments,
            )
            if self.cost.exceeded:
                session.stop_answering(transcribe=self._transcribe_over_budget)
            self.sessions[participant.identity] = session
            self.meeting.listen(participant.identity, session)
            logger.info(
                "session starting", extra={**self._extra, "participant": participant.identity}
            )
            try:
                await session.start()
            except (TimeoutError, Exception) as exc:  # the SDK raises Exception
                logger.error(
                    "session could not start: %s",
                    exc,
                    extra={**self._extra, "participant": participant.identity},
                )
                self.sessions.pop(participant.identity, None)
                await self._finish_session(session, "could not start")
                return
            video = self._video.get(participant.identity)
            if video is not None:
                session.attach_video(video)

    async def _join_shared(
        self, participant: rtc.RemoteParticipant, track: rtc.Track, mic_sid: str, *, waiting: bool
    ) -> None:
        """Shared mode: the human's microphone joins the room's one call (started by the first
        microphone; it takes one slot of the budget)."""
        identity = participant.identity
        async with self._lock(SHARED):
            if self._closed or (waiting and identity not in self._waiting):
                return
            shared = self.shared
            if shared is None:
                if self._budget is not None and not self._budget.try_acquire():
                    logger.warning(
                        "at capacity (%d sessions); the room's shared call waits for a slot",
                        self._budget.limit,
                        extra=self._extra,
                    )
                    self._waiting[identity] = (participant, track, mic_sid)
                    if self._waiter is None or self._waiter.done():
                        self._waiter = self._tasks.create_task(self._retry_waiting(), name="wait")
                    return
                shared = SharedSession(
                    settings=self.settings,
                    room=self.room,
                    attributes=self.attributes,
                    answer_tracks=self.answer_tracks,
                    on_track_published=self._update_permissions,
                    on_gave_up=self._release_slot,
                    meeting=self.meeting,
                    tool_actions=WorkerActions(
                        self.settings, self.room_name, self._tasks, self.stop
                    ),
                    cost=self.cost.session(),
                    instruments=self._instruments,
                )
                self.sessions[SHARED] = shared
                self.meeting.listen(SHARED, shared)
                logger.info("shared session starting", extra=self._extra)
                try:
                    await shared.start()
                except (TimeoutError, Exception) as exc:  # the SDK raises Exception
                    logger.error("shared session could not start: %s", exc, extra=self._extra)
                    self.sessions.pop(SHARED, None)
                    await self._finish_session(shared, "could not start")
                    return
                self._show(self._video_of or next(iter(self._video), None))
            self._waiting.pop(identity, None)
            shared.add_microphone(identity, participant.name or identity, track, mic_sid)
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
                await self._finish_session(shared, f"last microphone gone ({why})")

    async def _stop_session(self, identity: str, why: str) -> None:
        if self.settings.mode == "shared":
            await self._leave_shared(identity, why)
            return
        async with self._lock(identity):
            self._waiting.pop(identity, None)
            session = self.sessions.pop(identity, None)
            if session is None:
                return
            await self._finish_session(session, why)
            self._update_permissions()

    async def _finish_session(self, session: ParticipantSession, why: str) -> None:
        self._ending.add(session)
        self.meeting.unlisten(session.identity, session)
        try:
            await session.aclose(why)
        finally:
            self._ending.discard(session)
            self._release_slot(session)
            lock = self._locks.get(session.identity)
            if lock is not None and not lock.locked() and session.identity not in self._waiting:
                del self._locks[session.identity]

    def _release_slot(self, session: ParticipantSession) -> None:
        """Give the session's budget slot back, once (it ended, or its calls gave up)."""
        if self._budget is not None and not session.slot_released:
            session.slot_released = True
            self._budget.release()

    async def _retry_waiting(self) -> None:
        assert self._budget is not None
        while self._waiting:
            freed = self._budget.freed()
            for participant, track, sid in list(self._waiting.values()):
                await self._start_session(participant, track, sid, waiting=True)
            if self._waiting:
                await freed.wait()

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

    @property
    def _transcribe_over_budget(self) -> bool:
        # Listening on past the budget costs only transcription: keep it when its price is
        # known (it is counted and shown), drop it when it would be spent blind.
        return self.cost.session().transcription_priced

    def _budget_passed(self, message: str) -> None:
        """The room's budget is spent: tell the room once, then stop answering or leave."""
        if self._attributes is not None:
            self._attributes.set_notice(message)
        for session in self.sessions.values():
            session.stop_answering(transcribe=self._transcribe_over_budget)
        self._spawn(
            self._tell(message, then_leave=self.settings.budget_action == "leave"), "budget"
        )

    async def _tell(self, message: str, *, then_leave: bool) -> None:
        try:
            await asyncio.wait_for(
                self.room.local_participant.send_text(message, topic=CHAT_TOPIC), CHAT_SEND_TIMEOUT
            )
        except (TimeoutError, Exception) as exc:  # the SDK raises Exception
            logger.warning("could not tell the room about its budget: %s", exc, extra=self._extra)
        if then_leave:
            self._end(BUDGET_SPENT)

    # ---- chat ---------------------------------------------------------------------------------

    def _on_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        if self._chats_in_flight >= MAX_CHATS_IN_FLIGHT:
            logger.warning(
                "chat from %s dropped: too many chat streams open",
                one_line(sender),
                extra=self._extra,
            )
            reader.close()
            return
        self._chats_in_flight += 1
        self._spawn(self._read_chat(reader, sender), f"chat-{sender}")

    async def _read_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        try:
            message = await read_chat(reader)
        finally:
            reader.close()  # a reader left open keeps an SDK subscription alive
            self._chats_in_flight -= 1
        if message.problem is not None:
            logger.warning(
                "chat from %s could not be read: %s",
                one_line(sender),
                message.problem,
                extra=self._extra,
            )
            return
        if message.cut:
            logger.info(
                "chat from %s cut at %d characters",
                one_line(sender),
                MAX_CHAT_CHARS,
                extra=self._extra,
            )
        text = message.text
        session = self.sessions.get(sender)
        if not text:
            return
        who = self.room.remote_participants.get(sender)
        name = (who.name if who is not None else "") or sender
        shared = self.shared
        if self.settings.mode == "shared" and shared is not None:
            shared.chat(sender, name, text)
            return
        if session is None:
            logger.info(
                "chat from %s not bridged: they have no session (no microphone published)",
                one_line(sender),
                extra=self._extra,
            )
            return
        session.send_text(text)
        self.meeting.said(sender, name, text, time.monotonic(), chat=True)
