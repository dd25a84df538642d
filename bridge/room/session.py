"""ParticipantSession: one human <-> their model calls. The only module where LiveKit and the
Realtime API meet.

A session lives while the human's microphone is subscribed. Inside it, calls come and go, kept up
by its ``CallSupervisor`` (bridge/room/supervisor.py): the first one when the session starts, a
new one after a retryable failure (with backoff), before the service's 60-minute limit
(make-before-break at a quiet moment, see rollover.py) or after the service ends the session
anyway (the recent conversation is carried over as text), or when the human speaks again after
the session idled out. A non-retryable failure (401, a rejected session) ends the session with
one error line; the room and other sessions go on.

The session itself is the loop of one call (``converse``: the model's events, each to its
handler), the human's text and the meeting's lines into the call, and the budget's stop. Where
the conversation stands is its ``TurnTracker`` (bridge/room/turns.py); what it sends and hears is
its ``SessionMedia`` (bridge/room/session_media.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from livekit import rtc

from bridge.aio import Closer, TaskSet, cancel_and_wait
from bridge.billing.cost import Spend
from bridge.metrics import CHAT_TEXTS_DROPPED
from bridge.realtime import RealtimeCall, RealtimeClosedError, RealtimeError
from bridge.realtime import events as ev
from bridge.realtime.instruments import NO_INSTRUMENTS, Instruments
from bridge.realtime.session_config import listen_only
from bridge.room.agent_state import AttributeWriter
from bridge.room.answer_tracks import AnswerTracks
from bridge.room.budget import SessionCost
from bridge.room.conversation import ConversationState, Line
from bridge.room.dialer import Dialer
from bridge.room.meeting import Meeting
from bridge.room.model_events import ModelEvents, addresses
from bridge.room.retry import RetryPolicy
from bridge.room.rollover import CallLeg, Rollover
from bridge.room.session_media import SessionMedia
from bridge.room.supervisor import CallSupervisor, Ending, SessionStats
from bridge.room.tools.builtins import RoomActions
from bridge.room.tools.http import Caller
from bridge.room.tools.runner import ToolRunner
from bridge.room.transcripts import Transcripts
from bridge.room.turn_spans import TurnSpans
from bridge.room.turns import Answering, TurnTracker
from bridge.room.uplink import Uplink
from bridge.settings.config import Settings
from bridge.tracing import spans
from bridge.tracing.calls import SessionTrace

logger = logging.getLogger(__name__)

PENDING_TEXTS = 20


@dataclass(frozen=True)
class RoomContext:
    """What the sessions of one room share, from its worker."""

    room: rtc.Room
    attributes: AttributeWriter
    answer_tracks: AnswerTracks
    meeting: Meeting
    on_track_published: Callable[[], None]  # an answer track appeared (private audience)
    on_gave_up: Callable[[ParticipantSession], None]  # its calls gave up: its slot is free
    instruments: Instruments = NO_INSTRUMENTS  # a benchmark's
    trace: spans.Span = spans.NO_PARENT  # the room's span: sessions' spans hang on it


class ParticipantSession:
    answer_name: str | None = None  # a fixed name for the answer track (else ``answer-<n>``)

    def __init__(
        self,
        *,
        room: RoomContext,
        settings: Settings,
        identity: str,
        name: str,
        mic: Uplink,
        mic_sid: str,
        cost: SessionCost,
        tool_actions: RoomActions | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.name = name
        self.cost = cost
        self._room = room
        self._meeting = room.meeting
        self._mic_sid = mic_sid
        self._tool_actions = tool_actions
        attributes = room.attributes
        self.log_extra = {"room": room.room.name, "participant": identity}
        self.trace = SessionTrace(room.trace, identity=identity)
        self._tasks = TaskSet(f"session-{identity}")
        self.answering = Answering(settings.response_policy, bool(settings.transcription_model))
        self.turns = TurnTracker(
            on_state=functools.partial(attributes.set_state, identity), answering=self.answering
        )
        self.turn_spans = TurnSpans(self.trace.span, self.turns)  # the call in use's turns
        self.stats = SessionStats()
        self.media = SessionMedia(
            settings, mic=mic, instruments=room.instruments, turns=self.turns, stats=self.stats
        )
        self.transcripts: Transcripts | None = None
        self.tools: ToolRunner | None = None  # when tools are configured (bridge/room/tools)
        self._events = ModelEvents(self)
        # History carried over to a new call, and the meeting context (bridge/room/conversation.py).
        self.conversation = ConversationState(
            max_chars=settings.meeting_context_max_chars, extra=self.log_extra
        )
        if room.meeting.enabled:
            self.conversation.seed(room.meeting.recent())  # a late joiner gets the recent meeting
        self._pending_texts: deque[str] = deque(maxlen=PENDING_TEXTS)
        self.expired = False  # the service said session_expired: the call's end is planned
        self._closed = False
        self._closer = Closer()
        self.ended_reason: str | None = None
        dial = Dialer(
            settings,
            answering=self.answering,
            media=self.media,
            instructions=self._instructions,
            instruments=room.instruments,
            log_extra=self.log_extra,
            room=room.room.name,
            trace=self.trace,
        )
        policy = RetryPolicy.from_settings(settings)
        self.rollover = Rollover(
            after_s=settings.session_rollover_s,
            open_call=dial,
            turns=self.turns,
            levels=self.media,
            policy=policy,
            log_extra=self.log_extra,
        )
        self.calls: CallSupervisor[CallLeg] = CallSupervisor(
            dial=dial,
            host=self,
            successor=self.rollover,
            policy=policy,
            stats=self.stats,
            log_extra=self.log_extra,
        )

    # ---- what others read ----------------------------------------------------------------------

    @property
    def usage(self) -> Spend:
        """What this session used and spent (its ledger; the room's has it too)."""
        return self.cost.spend

    @property
    def call(self) -> RealtimeCall | None:
        """The model call in use, if a call is up."""
        leg = self.calls.leg
        return leg.call if leg is not None else None

    @property
    def call_id(self) -> str | None:
        call = self.call
        return call.call_id if call is not None else None

    @property
    def track_sid(self) -> str | None:
        return self.media.track_sid

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Capture the microphone, publish the agent track for this human, start the loops.
        The first call connects meanwhile (see ``SessionMedia.connecting``)."""
        self.stats.started_at = time.perf_counter()
        self.calls.dial_early(self._tasks)
        self.turns.connecting()
        self.media.start_mic(self._tasks)
        room = self._room
        agent = room.room.local_participant
        if self.answering.speaks:
            await self.media.publish(room.answer_tracks, self.identity, self.answer_name)
            self.stats.published_at = time.perf_counter()
            room.attributes.set_track(self.identity, self.track_sid)
            room.on_track_published()
        self.transcripts = Transcripts(
            agent,
            agent_identity=agent.identity,
            human_identity=self.identity,
            human_track_sid=self._mic_sid,
            pump=self.media.pump,
            private=self.settings.audience == "private",
            extra=self.log_extra,
            on_cut=self.answered,  # what was heard of a cut answer is carried over too
        )
        self.transcripts.agent_track_sid = self.track_sid or ""
        if self.settings.tools:
            self.tools = ToolRunner(
                settings=self.settings,
                participant=agent,
                room=room.room.name,
                caller=self._tool_caller,
                tasks=self._tasks,
                actions=self._tool_actions,
                on_thinking=self.turns.thinking,
                on_running=functools.partial(room.attributes.set_tools, self.identity),
                playout=self.media.played_out(),
                extra=self.log_extra,
                span_parent=lambda: self.turn_spans.parent,
            )
            self.turns.tools = self.tools
        self._tasks.create_task(self.transcripts.run(), name="transcripts")
        self._tasks.create_task(self.calls.run(), name="calls")

    def attach_video(self, track: rtc.Track) -> None:
        if not self._closed:
            self.media.attach_video(track, self._tasks)

    def detach_video(self) -> None:
        self.media.detach_video()

    async def aclose(self, reason: str = "closed") -> None:
        """End the session: hang up, park the answer track (muted), close streams. Idempotent, and
        runs to the end even if the caller is cancelled meanwhile."""
        if not self._closer.started:
            self._closed = True
            self.ended_reason = self.ended_reason or reason
        await self._closer.close(self._close())

    async def _close(self) -> None:
        if self.transcripts is not None:
            await self.transcripts.drain()
        await self._tasks.aclose()
        await self.calls.aclose()  # a first call connected but never used: hung up
        if self.tools is not None:
            await self.tools.aclose()
        await self.rollover.aclose()
        self.media.release(self._room.answer_tracks)
        self._room.attributes.remove(self.identity)
        self.trace.end(self.ended_reason or "closed")
        self.cost.end()
        spent = self.usage
        logger.info(
            "session ended (%s): %d calls, %d responses, tokens %s, cost %s",
            self.ended_reason,
            self.stats.calls,
            spent.responses,
            dict(spent.tokens),
            spent.describe(),
            extra={**self.log_extra, "call_id": self.calls.last_call_id, **spent.log_extra()},
        )

    # ---- calls (what the supervisor drives) -----------------------------------------------------

    @property
    def responses(self) -> int:
        return self.usage.responses

    def connecting(self) -> None:
        self.media.connecting()

    def take_up(self, leg: CallLeg) -> None:
        self.expired = False
        self.turn_spans.call = leg.trace
        self.trace.ready()
        if self.tools is not None:
            self.tools.attach(leg.call)
        self.media.attach(leg)

    def put_down(self) -> None:
        self.turn_spans.call = None
        if self.tools is not None:
            self.tools.attach(None)

    async def sleep_until_woken(self) -> None:
        self.turns.idle()
        await self.media.mic.gate.woke.wait()

    def gave_up(self, failure: RealtimeError) -> None:
        self.ended_reason = f"call failed: {failure}"
        self.turns.idle()
        self._room.on_gave_up(self)  # its capacity slot can serve someone else

    async def converse(self, leg: CallLeg) -> Ending:
        """Run one call until it ends (or a prepared next call is up and the conversation is
        quiet: ``ROLLOVER``)."""
        call = leg.call
        self.rollover.begin(leg)
        speaker = self.media.speak(call, self._tasks)
        self.turns.call_up()
        try:
            self.conversation.start_call(call)
            while self._pending_texts:
                self._send_text(call, self._pending_texts.popleft())
            while True:
                timeout = self.turns.last_activity + self.settings.idle_timeout - time.monotonic()
                if timeout <= 0:
                    return Ending.IDLE
                if self.rollover.ready():
                    return Ending.ROLLOVER
                timeout = min(timeout, self.rollover.poll_interval() or timeout)
                try:
                    # asyncio.timeout, not wait_for: no task per event, and (Python 3.11) a
                    # cancellation arriving with an event is never swallowed.
                    async with asyncio.timeout(timeout):
                        event = await call.next_event()
                except TimeoutError:
                    continue  # re-check against the latest activity (chat counts too)
                if event is None:
                    return Ending.EXPIRED if self.expired else Ending.CLOSED
                self._events.handle(event)
        finally:
            self.conversation.end_call()
            self._events.call_ended()
            self.media.attach(None)
            if self.transcripts is not None:
                self.transcripts.interrupted()
            await cancel_and_wait(speaker)

    def stop_answering(self, *, transcribe: bool) -> None:
        """The room's budget is spent: no more answers from now on (this call and the next),
        and no transcription unless ``transcribe``."""
        responding = self.turns.response_id is not None
        call = self.call
        self.turns.stop_answering(transcribe=transcribe, call_up=call is not None)
        if call is None:
            return  # the next call is set up as ``answering`` says
        with contextlib.suppress(RealtimeClosedError):  # then so is the next call
            if responding:
                self.interrupt()
                call.cancel_response()
            call.update_session(**listen_only(self.settings, transcribe=transcribe))

    # ---- room -> model --------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """A chat message from this human: a text turn in their call."""
        self.turns.chatted(text)
        call = self.call
        if call is not None:
            try:
                self._send_text(call, text)
                return
            except RealtimeClosedError:
                pass  # the call just ended; the next one gets it
        if len(self._pending_texts) == self._pending_texts.maxlen:
            self.stats.texts_dropped += 1
            CHAT_TEXTS_DROPPED.inc()
            logger.warning(
                "no model call up and %d chat texts waiting for the next: the oldest is dropped",
                PENDING_TEXTS,
                extra=self.log_extra,
            )
        self._pending_texts.append(text)  # delivered when the next call is up
        self.media.mic.gate.woke.set()

    def _send_text(self, call: RealtimeCall, text: str) -> None:
        call.send(ev.ConversationItemCreate.user_text(text))
        self.conversation.own("user", text)
        policy = self.answering.policy
        if policy == "listen" or (
            policy == "addressed" and not addresses(text, self.settings.addressed_by)
        ):
            return
        if self.turns.response_id is not None:
            self.interrupt()
            call.cancel_response()
        if self.tools is not None:
            self.tools.barge_in()  # a new turn: waiting tool results are not answered on their own
        call.send(ev.ResponseCreate())
        self.turns.answer_requested()

    def interrupt(self) -> None:
        """Barge-in: what the room was about to hear of the answer is dropped."""
        self.media.flush()
        if self.transcripts is not None:
            self.transcripts.interrupted()
        self.stats.barge_ins += 1

    # ---- the meeting (bridge/room/meeting.py) --------------------------------------------------

    def _instructions(self) -> str:
        return self._meeting.instructions(self.settings.instructions, self.name)

    def meeting_line(self, line: Line) -> None:
        """What someone else said in the meeting: context in this call, no response."""
        with contextlib.suppress(RealtimeClosedError):  # recorded: the next call gets it
            self.conversation.add(line)

    def presence_changed(self) -> None:
        """Someone joined or left: the instructions say who is present."""
        call = self.call
        if call is None or not self._meeting.enabled:
            return
        with contextlib.suppress(RealtimeClosedError):  # the next call gets them at set-up
            call.update_session(instructions=self._instructions())

    # Hooks shared mode (bridge/room/shared.py) overrides; the model's events call them.

    def observe(self, event: ev.ServerEvent) -> None:
        """Every handled event, before its handler (shared mode follows turns' spans)."""

    def speaker(self, item_id: str) -> tuple[str, str] | None:
        """Who spoke user turn ``item_id`` (identity, microphone sid); None: this human."""
        return None

    def _tool_caller(self) -> Caller | None:
        """Whom the model's tool calls are for (RPC target, HTTP ``participant``): this human."""
        return Caller(self.identity, self.name)

    def user_said(self, item_id: str, transcript: str) -> None:
        spoken_at = self.conversation.spoken_at(item_id)
        self.conversation.own("user", transcript, spoken_at)
        self._meeting.said(self.identity, self.name, transcript, spoken_at)

    def answered(self, transcript: str) -> None:
        started = self.turns.answer_started
        self.conversation.own("assistant", transcript, started)
        self._meeting.answered(self.identity, self.name, transcript, started)
