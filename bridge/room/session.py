"""ParticipantSession: one human <-> their model calls. The only module where LiveKit and the
Realtime API meet.

A session lives while the human's microphone is subscribed. Inside it, calls come and go: the
first one when the session starts, a new one after a retryable failure (with backoff), before the
service's 60-minute limit (make-before-break at a quiet moment, see rollover.py) or after the
service ends the session anyway (the recent conversation is carried over as text), or when the
human speaks again after the session idled out. A non-retryable failure (401, a
rejected session) ends the session with one error line; the room and other sessions go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit import rtc

from bridge.aio import Closer, TaskSet, cancel_and_wait
from bridge.billing.cost import Spend
from bridge.metrics import (
    CALL_FAILURES,
    CALL_SETUP_SECONDS,
    CALLS_STARTED,
    CHAT_TEXTS_DROPPED,
    SESSIONS_ACTIVE,
)
from bridge.realtime import (
    RealtimeAPIError,
    RealtimeCall,
    RealtimeClosedError,
    RealtimeError,
    build_session,
)
from bridge.realtime import events as ev
from bridge.realtime.instruments import NO_INSTRUMENTS, Instruments
from bridge.realtime.session_config import turn_detection
from bridge.realtime.tracks import PcmAudioTrack, VideoFrameTrack
from bridge.room.agent_state import AgentState, AttributeWriter
from bridge.room.answer_tracks import AnswerTrack, AnswerTracks
from bridge.room.budget import SessionCost
from bridge.room.conversation import ConversationState, Line
from bridge.room.media import SpeakerPump, VideoSampler
from bridge.room.meeting import Meeting
from bridge.room.rollover import CallLeg, Rollover
from bridge.room.tools.builtins import RoomActions
from bridge.room.tools.http import Caller
from bridge.room.tools.runner import ToolRunner, played_out
from bridge.room.transcripts import Transcripts
from bridge.room.uplink import Uplink
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)

PENDING_TEXTS = 20
# A call that lasted this long (or that answered) counts as a success: retries start over.
STABLE_CALL_SECONDS = 30.0


@dataclass
class SessionStats:
    """What a session did; benchmarks and tests read it."""

    started_at: float | None = None  # perf_counter() times: start(), agent track published,
    published_at: float | None = None  # first call connected, first call in use
    first_connected_at: float | None = None
    first_ready_at: float | None = None
    calls: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    barge_ins: int = 0
    texts_dropped: int = 0  # chat texts that arrived while no call was up, beyond PENDING_TEXTS


def addresses(transcript: str, names: list[str]) -> bool:
    return any(re.search(rf"\b{re.escape(name)}\b", transcript, re.IGNORECASE) for name in names)


class _CallEnded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ParticipantSession:
    def __init__(
        self,
        *,
        settings: Settings,
        room: rtc.Room,
        identity: str,
        name: str,
        mic: Uplink,
        mic_sid: str,
        attributes: AttributeWriter,
        answer_tracks: AnswerTracks,
        on_track_published: Callable[[], None],
        cost: SessionCost,
        on_gave_up: Callable[[ParticipantSession], None] | None = None,
        tool_actions: RoomActions | None = None,
        meeting: Meeting | None = None,
        instruments: Instruments = NO_INSTRUMENTS,
    ) -> None:
        self.settings = settings
        self._instruments = instruments
        self.identity = identity
        self.name = name
        self._room = room
        self._answer_tracks = answer_tracks
        self._answer: AnswerTrack | None = None
        self._mic_sid = mic_sid
        self._attributes = attributes
        self._on_track_published = on_track_published
        self._on_gave_up = on_gave_up
        self._extra = {"room": room.name, "participant": identity}
        self._tasks = TaskSet(f"session-{identity}")
        self._mic = mic
        self._sampler = VideoSampler(settings)
        self._video_task: asyncio.Task[None] | None = None
        self._source: rtc.AudioSource | None = None
        self._pump: SpeakerPump | None = None
        self._transcripts: Transcripts | None = None
        self._call: RealtimeCall | None = None
        # The first call, connecting while the agent track is published (see ``start``).
        self._early_leg: asyncio.Task[CallLeg | Exception] | None = None
        self._state = AgentState.INITIALIZING
        self._response_id: str | None = None
        self._audio_playing = False
        self._input_text: dict[str, str] = {}
        # History carried over to a new call, and the meeting context (bridge/room/conversation.py).
        self._meeting = meeting
        self.conversation = ConversationState(
            max_chars=settings.meeting_context_max_chars, extra=self._extra
        )
        if meeting is not None and meeting.enabled:
            self.conversation.seed(meeting.recent())  # a late joiner gets the recent meeting
        self._answer_started = time.monotonic()
        self._pending_texts: deque[str] = deque(maxlen=PENDING_TEXTS)
        self._last_activity = time.monotonic()
        self._expired = False
        self._closed = False
        self._closer = Closer()
        self.slot_released = False  # the room worker's session budget, given back once
        self.cost = cost
        self.stats = SessionStats()
        self._uplink_residence: deque[float] = deque(maxlen=10_000)
        self.ended_reason: str | None = None
        self.last_call_id: str | None = None
        self._tool_actions = tool_actions
        self._tools: ToolRunner | None = None  # when tools are configured (bridge/room/tools)
        self.rollover = Rollover(
            after_s=settings.session_rollover_s,
            open_call=self._open_leg,
            activity=self._last_sound,
            audio_queued=lambda: self._source.queued_duration if self._source else 0.0,
            busy=lambda: self._tools is not None and self._tools.busy,
            listen=lambda on: setattr(self._mic.gate, "watch_level", on),
            expect_responses=settings.response_policy == "auto",
            expect_transcripts=bool(settings.transcription_model),
            backoff_initial=settings.retry_backoff_initial,
            backoff_max=settings.retry_backoff_max,
            log_extra=self._extra,
        )

    # ---- measurements ------------------------------------------------------------------------

    def uplink_residence(self) -> list[float]:
        """Seconds each microphone frame spent in the bridge before the model's encoder."""
        return list(self._uplink_residence)

    def downlink_residence(self) -> list[float]:
        """Seconds each model frame spent in the bridge before LiveKit took it."""
        return list(self._pump.residence) if self._pump is not None else []

    def dropped_frames(self) -> int:
        return self._mic.gate.dropped + (self._pump.dropped if self._pump is not None else 0)

    def _last_sound(self) -> float:
        """When the human or the agent was last heard, or the human last chatted (monotonic)."""
        agent = self._pump.last_sound_at if self._pump is not None else -float("inf")
        return max(self._last_activity, self._mic.gate.last_loud_at, agent)

    @property
    def usage(self) -> Spend:
        """What this session used and spent (its ledger; the room's has it too)."""
        return self.cost.spend

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def speaks(self) -> bool:
        return self.settings.response_policy != "listen"

    @property
    def call_id(self) -> str | None:
        """The current model call's id, if a call is up."""
        return self._call.call_id if self._call is not None else None

    @property
    def track_sid(self) -> str | None:
        return self._answer.sid if self._answer is not None else None

    answer_name: str | None = None  # a fixed name for the answer track (else ``answer-<n>``)

    @property
    def track_name(self) -> str | None:
        """The name of the agent track that answers this session (``answer-<n>``)."""
        return self._answer.name if self._answer is not None else None

    async def start(self) -> None:
        """Publish the agent track for this human and start the session's loops. The first call
        connects meanwhile: the two are independent, and join -> ready is the longer of them."""
        self.stats.started_at = time.perf_counter()
        self._early_leg = self._tasks.create_task(self._open_early(), name="first-call")
        agent = self._room.local_participant
        if self.speaks:
            self._answer = await self._answer_tracks.acquire(self.identity, self.answer_name)
            self._source = self._answer.source
            self._pump = SpeakerPump(self._source, self._instruments.probe)
            self.stats.published_at = time.perf_counter()
            self._attributes.set_track(self.identity, self._answer.sid)
            self._on_track_published()
        self._transcripts = Transcripts(
            agent,
            agent_identity=agent.identity,
            human_identity=self.identity,
            human_track_sid=self._mic_sid,
            pump=self._pump,
            private=self.settings.audience == "private",
            extra=self._extra,
            on_cut=self._answered,  # what was heard of a cut answer is carried over too
        )
        self._transcripts.agent_track_sid = self.track_sid or ""
        if self.settings.tools:
            self._tools = ToolRunner(
                settings=self.settings,
                participant=agent,
                room=self._room.name,
                caller=self._tool_caller,
                tasks=self._tasks,
                actions=self._tool_actions,
                on_thinking=lambda: self._set_state(AgentState.THINKING),
                on_running=functools.partial(self._attributes.set_tools, self.identity),
                playout=(
                    functools.partial(played_out, self._pump, self._source)
                    if self._pump is not None and self._source is not None
                    else None
                ),
                extra=self._extra,
            )
        self._set_state(AgentState.INITIALIZING)
        self._tasks.create_task(self._mic.run(), name="mic")
        self._tasks.create_task(self._transcripts.run(), name="transcripts")
        self._tasks.create_task(self._run(), name="calls")

    def attach_video(self, track: rtc.Track) -> None:
        if not self.settings.video_enabled or self._closed:
            return
        if self._video_task is not None:
            self._video_task.cancel()
        self._video_task = self._tasks.create_task(self._sampler.run(track), name="video")

    def detach_video(self) -> None:
        if self._video_task is not None:
            self._video_task.cancel()
            self._video_task = None

    async def aclose(self, reason: str = "closed") -> None:
        """End the session: hang up, park the answer track (muted), close streams. Idempotent, and
        runs to the end even if the caller is cancelled meanwhile."""
        if not self._closer.started:
            self._closed = True
            self.ended_reason = self.ended_reason or reason
        await self._closer.close(self._close())

    async def _close(self) -> None:
        if self._transcripts is not None:
            await self._transcripts.drain()
        await self._tasks.aclose()
        early, self._early_leg = self._early_leg, None
        unused = early.result() if early is not None and not early.cancelled() else None
        if isinstance(unused, CallLeg):
            await unused.aclose()  # connected, but the session ended before using it
        if self._tools is not None:
            await self._tools.aclose()
        await self.rollover.aclose()
        answer, self._answer = self._answer, None
        if answer is not None:
            self._answer_tracks.release(answer)  # muted and kept for the next session
        self._attributes.remove(self.identity)
        self.cost.end()
        spent = self.usage
        logger.info(
            "session ended (%s): %d calls, %d responses, tokens %s, cost %s",
            self.ended_reason,
            self.stats.calls,
            spent.responses,
            dict(spent.tokens),
            spent.describe(),
            extra={**self._extra, "call_id": self.last_call_id, **spent.log_extra()},
        )

    # ---- calls --------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        leg: CallLeg | None = None
        while True:
            if leg is None:
                self._set_state(AgentState.INITIALIZING)
                try:
                    leg = await self._next_leg()
                except Exception as exc:  # one session's failure must never reach the room
                    failure = self._as_failure(exc)
                    self._count_failure(failure)
                    attempt += 1
                    if not failure.retryable or attempt > self.settings.retry_attempts:
                        self._give_up(failure, attempt)
                        return
                    await self._backoff(attempt, failure)
                    continue
                self._use(leg)
            call = leg.call
            answered = self.usage.responses
            ending = "closed"
            try:
                ending = await self._converse(leg)
            except RealtimeClosedError:
                pass  # the call went away while we were sending on it
            except Exception:  # a bug must end this call, not the session
                logger.exception("call failed unexpectedly", extra=self._extra)
            finally:
                old, leg = leg, await self._hand_over(leg, ending)
            # A call that lasted, or that carried the conversation (an answer came), was no
            # flapping: its drop starts the retries over, and the first call again goes at once.
            healthy = (
                time.monotonic() - old.connected_at >= STABLE_CALL_SECONDS
                or self.usage.responses > answered
            )
            if healthy:
                attempt = 0
            if leg is not None:
                continue
            if ending == "idle":
                logger.info("session idle; call ended until the human speaks", extra=self._extra)
                self._set_state(AgentState.IDLE)
                await self._mic.gate.woke.wait()
            elif ending == "closed":
                # A call that keeps dropping soon after connecting is retried like a refusal,
                # so a flapping service gets backoff, not a reconnect storm.
                attempt += 1
                failure = RealtimeError(f"call ended unexpectedly: {call.closed_reason}")
                self._count_failure(failure)
                if attempt > self.settings.retry_attempts:
                    self._give_up(failure, attempt)
                    return
                # Only the first call after a working one goes at once; its failures back off.
                await self._backoff(attempt, failure, at_once=healthy)

    async def _hand_over(self, old: CallLeg, ending: str) -> CallLeg | None:
        """After a call: make-before-break, the next call prepared by the rollover (if any)
        takes the microphone and the speaker before the old one is hung up. Returns it."""
        new = self.rollover.take() if ending in ("rollover", "expired") else None
        self._call = None
        if self._tools is not None:
            self._tools.attach(None)
        if new is not None:
            self._use(new)
        SESSIONS_ACTIVE.dec()
        await old.aclose()
        await self.rollover.reset()
        if new is not None:
            logger.info(
                "call rolled over after %.0f s (%s)",
                time.monotonic() - old.connected_at,
                "quiet moment" if ending == "rollover" else "service limit",
                extra={**self._extra, "call_id": old.call.call_id},
            )
        return new

    def _as_failure(self, exc: Exception) -> RealtimeError:
        if isinstance(exc, RealtimeError):
            return exc
        logger.error("unexpected error setting up a call", exc_info=exc, extra=self._extra)
        return RealtimeError(f"unexpected {type(exc).__name__}: {exc}", retryable=True)

    async def _open_leg(self) -> CallLeg:
        """Connect a new call (not yet fed by the microphone: see ``_use``)."""
        create = self.settings.response_policy == "auto"
        session = build_session(
            self.settings,
            create_response=create,
            interrupt_response=self.speaks,
            room=self._room.name,
        )
        session["instructions"] = self._instructions()
        probe = self._instruments.probe
        audio = PcmAudioTrack(residence=self._uplink_residence, probe=probe)
        video = VideoFrameTrack() if self.settings.video_enabled else None
        call = RealtimeCall(
            self.settings,
            session=session,
            audio=audio,
            video=video,
            log_extra=self._extra,
            impairment=self._instruments.impairment,
            probe=probe,
        )
        try:
            await call.connect()
        except BaseException:
            audio.stop()
            if video is not None:
                video.stop()
            raise
        return CallLeg(call, audio, video)

    async def _open_early(self) -> CallLeg | Exception:
        """``_open_leg``, its failure returned for ``_run`` to count and retry like any other."""
        try:
            return await self._open_leg()
        except Exception as exc:
            return exc

    async def _next_leg(self) -> CallLeg:
        """The call started with the session (see ``start``) the first time, then a new one."""
        early = self._early_leg
        # Cleared only once taken: a session closing while this await is woken (the call just
        # connected) finds it still there and hangs it up, instead of leaking a live call.
        leg = await early if early is not None else await self._open_leg()
        self._early_leg = None
        if isinstance(leg, Exception):
            raise leg
        if self.stats.first_connected_at is None:
            self.stats.first_connected_at = time.perf_counter()
        return leg

    def _use(self, leg: CallLeg) -> None:
        """Make ``leg`` the session's call: the microphone and camera go to it."""
        call = leg.call
        self._call = call
        if self._tools is not None:
            self._tools.attach(call)
        self.last_call_id = call.call_id
        self._expired = False
        self.stats.calls += 1
        if self.stats.first_ready_at is None:
            self.stats.first_ready_at = time.perf_counter()
        CALLS_STARTED.inc()
        SESSIONS_ACTIVE.inc()
        if call.connect_seconds is not None:
            CALL_SETUP_SECONDS.observe(call.connect_seconds)
        self._mic.gate.attach(leg.audio)
        self._sampler.attach(leg.video)
        logger.info("session call ready", extra={**self._extra, "call_id": call.call_id})

    async def _converse(self, leg: CallLeg) -> str:
        """Run one call until it ends; returns ``idle``, ``expired``, ``closed`` or ``rollover``
        (a prepared next call is up and the conversation is quiet)."""
        call = leg.call
        self.rollover.begin(leg)
        speaker: asyncio.Task[None] | None = None
        if self._pump is not None:
            self._pump.reopen()
            speaker = self._tasks.create_task(self._pump.run(call.audio_out), name="speaker")
        self._response_id = None
        self._audio_playing = False
        self._last_activity = time.monotonic()
        self._set_state(AgentState.LISTENING)
        try:
            self.conversation.start_call(call)
            while self._pending_texts:
                self._send_text(call, self._pending_texts.popleft())
            while True:
                timeout = self._last_activity + self.settings.idle_timeout - time.monotonic()
                if timeout <= 0:
                    return "idle"
                if self.rollover.ready():
                    return "rollover"
                timeout = min(timeout, self.rollover.poll_interval() or timeout)
                try:
                    # asyncio.timeout, not wait_for: no task per event, and (Python 3.11) a
                    # cancellation arriving with an event is never swallowed.
                    async with asyncio.timeout(timeout):
                        event = await call.next_event()
                except TimeoutError:
                    continue  # re-check against the latest activity (chat counts too)
                if event is None:
                    return "expired" if self._expired else "closed"
                self.rollover.observe(event)
                handler = _HANDLERS.get(event.type)
                if handler is None:
                    continue
                try:
                    self._observe(event)
                    handler(self, event)
                except Exception:  # a bug with one event must not end the conversation
                    logger.exception("handling %s failed", event.type, extra=self._extra)
        finally:
            self.conversation.end_call()
            self._input_text.clear()
            self._mic.gate.attach(None)
            self._sampler.attach(None)
            if self._transcripts is not None:
                self._transcripts.interrupted()
            await cancel_and_wait(speaker)

    async def _backoff(self, attempt: int, exc: RealtimeError, *, at_once: bool = False) -> None:
        if at_once:
            logger.warning("model call dropped (%s); calling again", exc, extra=self._extra)
            return
        delay = min(
            self.settings.retry_backoff_max,
            self.settings.retry_backoff_initial * 2 ** (attempt - 1),
        )
        delay *= random.uniform(0.8, 1.2)  # jitter, not crypto
        if isinstance(exc, RealtimeAPIError) and exc.retry_after:
            delay = max(delay, min(exc.retry_after, self.settings.retry_backoff_max))
        logger.warning(
            "model call failed (%s); retry %d/%d in %.1f s",
            exc,
            attempt,
            self.settings.retry_attempts,
            delay,
            extra=self._extra,
        )
        await asyncio.sleep(delay)

    def _count_failure(self, exc: RealtimeError) -> None:
        reason = type(exc).__name__
        if isinstance(exc, RealtimeAPIError):
            reason = f"http_{exc.status}"
        self.stats.failures[reason] += 1
        CALL_FAILURES.labels(reason).inc()

    def _give_up(self, exc: RealtimeError, attempts: int) -> None:
        why = "not retryable" if not exc.retryable else f"{attempts - 1} retries failed"
        self.ended_reason = f"call failed: {exc}"
        logger.error("model call failed (%s): %s; session ended", why, exc, extra=self._extra)
        self._set_state(AgentState.IDLE)
        if self._on_gave_up is not None:
            self._on_gave_up(self)  # its capacity slot can serve someone else

    def stop_answering(self, *, transcribe: bool) -> None:
        """The room's budget is spent: no more answers from now on (this call and the next),
        and no transcription unless ``transcribe``."""
        update: dict[str, object] = {"response_policy": "listen"}
        if not transcribe:
            update["transcription_model"] = ""
        self.settings = self.settings.model_copy(update=update)
        call = self._call
        if call is None:
            return
        audio_input: dict[str, object] = {
            "turn_detection": turn_detection(
                self.settings, create_response=False, interrupt_response=False
            )
        }
        if not transcribe:
            audio_input["transcription"] = None
        try:
            if self._response_id is not None:
                self._interrupt()
                call.cancel_response()
            call.send(
                ev.SessionUpdate(session={"type": "realtime", "audio": {"input": audio_input}})
            )
        except RealtimeClosedError:
            pass  # the next call is set up from the settings above
        self._set_state(AgentState.LISTENING)

    # ---- room -> model --------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """A chat message from this human: a text turn in their call."""
        self._last_activity = time.monotonic()
        call = self._call
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
                extra=self._extra,
            )
        self._pending_texts.append(text)  # delivered when the next call is up
        self._mic.gate.woke.set()

    def _send_text(self, call: RealtimeCall, text: str) -> None:
        call.send(ev.ConversationItemCreate.user_text(text))
        self.conversation.own("user", text)
        policy = self.settings.response_policy
        if policy == "listen" or (
            policy == "addressed" and not addresses(text, self.settings.addressed_by)
        ):
            return
        if self._response_id is not None:
            self._interrupt()
            call.cancel_response()
        if self._tools is not None:
            self._tools.barge_in()  # a new turn: waiting tool results are not answered on their own
        call.send(ev.ResponseCreate())
        self._set_state(AgentState.THINKING)

    # ---- the meeting (bridge/room/meeting.py) --------------------------------------------------

    def _instructions(self) -> str:
        if self._meeting is None:
            return self.settings.instructions
        return self._meeting.instructions(self.settings.instructions, self.name)

    def meeting_line(self, line: Line) -> None:
        """What someone else said in the meeting: context in this call, no response."""
        with contextlib.suppress(RealtimeClosedError):  # recorded: the next call gets it
            self.conversation.add(line)

    def presence_changed(self) -> None:
        """Someone joined or left: the instructions say who is present."""
        call = self._call
        if call is None or self._meeting is None or not self._meeting.enabled:
            return
        with contextlib.suppress(RealtimeClosedError):  # the next call gets them at set-up
            call.update_session(instructions=self._instructions())

    def _observe(self, event: ev.ServerEvent) -> None:
        """Every handled event, before its handler (shared mode follows turns' spans)."""

    def _speaker(self, item_id: str) -> tuple[str, str] | None:
        """Who spoke user turn ``item_id`` (identity, microphone sid); None: this human."""
        return None

    def _tool_caller(self) -> Caller | None:
        """Whom the model's tool calls are for (RPC target, HTTP ``participant``): this human."""
        return Caller(self.identity, self.name)

    def _user_said(self, item_id: str, transcript: str) -> None:
        spoken_at = self.conversation.spoken_at(item_id)
        self.conversation.own("user", transcript, spoken_at)
        if self._meeting is not None:
            self._meeting.said(self.identity, self.name, transcript, spoken_at)

    def _answered(self, transcript: str) -> None:
        self.conversation.own("assistant", transcript, self._answer_started)
        if self._meeting is not None:
            self._meeting.answered(self.identity, self.name, transcript, self._answer_started)

    # ---- model -> room --------------------------------------------------------------------------

    def _set_state(self, state: AgentState) -> None:
        self._state = state
        self._attributes.set_state(self.identity, state)

    def _interrupt(self) -> None:
        if self._pump is not None:
            self._pump.flush()
        if self._transcripts is not None:
            self._transcripts.interrupted()
        self.stats.barge_ins += 1

    def _on_speech_started(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.SpeechStarted)
        self._last_activity = time.monotonic()
        self.conversation.speech_started(event.item_id)
        if self._audio_playing or self._response_id is not None:
            self._interrupt()
            self._audio_playing = False
        if self._tools is not None:
            self._tools.barge_in()
        self._set_state(AgentState.LISTENING)

    def _on_speech_stopped(self, event: ev.ServerEvent) -> None:
        if self.settings.response_policy == "auto":
            self._set_state(AgentState.THINKING)

    def _on_input_delta(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.InputTranscriptDelta)
        text = self._input_text.get(event.item_id, "") + event.delta
        self._input_text[event.item_id] = text
        if self._transcripts is not None:
            speaker = self._speaker(event.item_id)
            self._transcripts.human(event.item_id, text, final=False, speaker=speaker)

    def _on_input_completed(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.InputTranscriptCompleted)
        self._input_text.pop(event.item_id, None)
        self.cost.transcription(event.usage)
        transcript = event.transcript.strip()
        if self._transcripts is not None:
            speaker = self._speaker(event.item_id)
            self._transcripts.human(event.item_id, transcript, final=True, speaker=speaker)
        if transcript:
            self._user_said(event.item_id, transcript)
        if (
            self.settings.response_policy == "addressed"
            and self._call is not None
            and self._response_id is None
            and addresses(transcript, self.settings.addressed_by)
        ):
            self._call.send(ev.ResponseCreate())
            self._set_state(AgentState.THINKING)

    def _on_input_failed(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.InputTranscriptFailed)
        self._input_text.pop(event.item_id, None)
        logger.warning("transcription failed: %s", event.error.message, extra=self._extra)

    def _on_response_created(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ResponseCreated)
        self._last_activity = time.monotonic()
        self._response_id = event.response.id
        if self._tools is not None:
            self._tools.response_created(event.response.id)
        self._answer_started = self._last_activity
        if self._pump is not None:
            self._pump.reopen()
        if self._state is not AgentState.SPEAKING:
            self._set_state(AgentState.THINKING)

    def _on_audio_started(self, event: ev.ServerEvent) -> None:
        self._audio_playing = True
        if self._pump is not None:
            self._pump.reopen()
        if self._transcripts is not None:
            self._transcripts.audio_started()
        self._set_state(AgentState.SPEAKING)

    def _on_audio_stopped(self, event: ev.ServerEvent) -> None:
        self._audio_playing = False
        if self._transcripts is not None:
            self._transcripts.audio_stopped()
        if self._tools is not None:
            self._tools.audio_finished(str(getattr(event, "response_id", "")))
        if self._response_id is None:
            self._set_state(self._resting_state())

    def _on_audio_cleared(self, event: ev.ServerEvent) -> None:
        if self._tools is not None:
            self._tools.audio_finished(str(getattr(event, "response_id", "")))
        self._audio_playing = False
        if self._transcripts is not None:
            self._transcripts.interrupted()
        if self._state is AgentState.SPEAKING:
            self._set_state(AgentState.LISTENING)

    def _on_transcript_delta(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.AudioTranscriptDelta)
        if self._transcripts is not None:
            self._transcripts.agent_delta(event.item_id, event.delta)

    def _on_transcript_done(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.AudioTranscriptDone)
        if self._transcripts is None or self._transcripts.agent_done(
            event.item_id, event.transcript
        ):
            self._answered(event.transcript)

    def _on_text_done(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.TextDone)
        if self._transcripts is not None:
            self._transcripts.agent_text_only(event.item_id, event.text)

    def _on_response_done(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ResponseDone)
        usage = event.response.usage
        if usage is not None:
            self.cost.response(usage.model_dump())
        if event.response.id == self._response_id:
            self._response_id = None
        if self._tools is not None:
            self._tools.response_done(event.response)  # may run tools, or answer their results
        if not self._audio_playing:
            self._set_state(self._resting_state())

    def _resting_state(self) -> AgentState:
        """Between answers: ``thinking`` while tools run, else ``listening``."""
        busy = self._tools is not None and self._tools.busy
        return AgentState.THINKING if busy else AgentState.LISTENING

    def _on_item_added(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ItemAdded)
        self.conversation.item_added(str(event.item.get("id", "")), event.previous_item_id)

    def _on_item_deleted(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ItemDeleted)
        self.conversation.item_deleted(event.item_id)

    def _on_error(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ErrorEvent)
        if event.error.code == "session_expired":
            self._expired = True
            logger.info("model session expired; reconnecting", extra=self._extra)
            return
        logger.warning(
            "model error %s: %s",
            event.error.code or event.error.type,
            event.error.message,
            extra=self._extra,
        )


_HANDLERS: dict[str, Callable[[ParticipantSession, ev.ServerEvent], None]] = {
    ev.SpeechStarted.TYPE: ParticipantSession._on_speech_started,
    ev.SpeechStopped.TYPE: ParticipantSession._on_speech_stopped,
    ev.InputTranscriptDelta.TYPE: ParticipantSession._on_input_delta,
    ev.InputTranscriptCompleted.TYPE: ParticipantSession._on_input_completed,
    ev.InputTranscriptFailed.TYPE: ParticipantSession._on_input_failed,
    ev.ResponseCreated.TYPE: ParticipantSession._on_response_created,
    ev.OutputAudioStarted.TYPE: ParticipantSession._on_audio_started,
    ev.OutputAudioStopped.TYPE: ParticipantSession._on_audio_stopped,
    ev.OutputAudioCleared.TYPE: ParticipantSession._on_audio_cleared,
    ev.AudioTranscriptDelta.TYPE: ParticipantSession._on_transcript_delta,
    ev.AudioTranscriptDone.TYPE: ParticipantSession._on_transcript_done,
    ev.TextDone.TYPE: ParticipantSession._on_text_done,
    ev.ResponseDone.TYPE: ParticipantSession._on_response_done,
    ev.ItemAdded.TYPE: ParticipantSession._on_item_added,
    ev.ItemDeleted.TYPE: ParticipantSession._on_item_deleted,
    ev.ErrorEvent.TYPE: ParticipantSession._on_error,
}
