"""TurnTracker: where one session's conversation stands, turn by turn.

The session tells it what happens, one method per transition: what the model reports (the
human's speech started or stopped, a turn committed, its transcript back, a response created or
done, the answer's audio started, stopped or cleared), what the human typed, and when the
speaker pump handed the first answer audio to the room. From that it keeps, for everyone who
reads it:

- the agent state the room sees (``lk.agent.state``, published through ``on_state``);
- whether an answer is in progress, so that a new turn cuts it (``speech_started`` and
  ``answer_requested`` say when that is a barge-in);
- whether the conversation is quiet, between turns (``quiet``: what rollover.py waits for);
- when the latest answer started (what a carried-over answer is stamped with).

Every transition is also told to the ``listeners`` (``TurnListener``) with its time: a turn is
speech started -> stopped (as the room heard them), response created and done, the answer's audio
in the room (its first frame, a pause, more), and the answer's end or a barge-in. That is where
tracing hangs its turn spans (bridge/room/turn_spans.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from bridge.room.agent_state import AgentState

logger = logging.getLogger(__name__)

# The conversation counts as quiet once nothing has happened for this long.
QUIET_GAP_S = 1.0
# After a committed turn (auto responses), a response is expected within this long.
RESPONSE_WAIT_S = 3.0
# An input transcript not back after this long no longer holds a quiet moment up.
TRANSCRIPT_WAIT_S = 5.0


@dataclass
class Answering:
    """How a session treats turns now: its response policy (``auto``, ``addressed``, ``listen``)
    and whether it transcribes. The room's budget can stop it answering (the settings, frozen,
    stay as given)."""

    policy: str
    transcribes: bool

    @property
    def speaks(self) -> bool:
        return self.policy != "listen"

    def stop(self, *, transcribe: bool) -> None:
        self.policy = "listen"
        self.transcribes = self.transcribes and transcribe


class TurnEvent(Enum):
    SPEECH_STARTED = "speech started"  # detail: the user item id; at: as the room heard it
    SPEECH_STOPPED = "speech stopped"  # at: as the room heard it
    TRANSCRIPT = "transcript"  # the human's turn transcribed; detail: its text
    TEXT = "text"  # the human typed a turn; detail: its text
    RESPONSE_CREATED = "response created"  # detail: the response id
    FIRST_AUDIO = "first answer audio"  # a response's first audible frame handed to the room
    AUDIO_PAUSED = "answer audio paused"  # at: its last audible frame (it went quiet)
    AUDIO_RESUMED = "answer audio resumed"  # audible again after a pause
    ANSWER_ENDED = "answer end"  # the model's audio stopped (output_audio_buffer.stopped)
    BARGE_IN = "barge-in"  # an answer in progress was cut by a new turn (its audio dropped)
    RESPONSE_DONE = "response done"  # detail: the response id; with its ``ResponseOutcome``


@dataclass(frozen=True)
class ResponseOutcome:
    """How a response ended (``response.done``): for its span, never for the state."""

    status: str  # completed, cancelled, incomplete, failed
    usage: Mapping[str, Any] | None = None
    cost_usd: float | None = None  # by the price table; None: unpriced
    tool_calls: int = 0


class TurnListener(Protocol):
    def turn_event(
        self, event: TurnEvent, at: float, detail: str, outcome: ResponseOutcome | None = None
    ) -> None:
        """``at``: ``time.monotonic()`` when it happened; ``outcome`` with RESPONSE_DONE."""


class Busy(Protocol):
    """Tools at work (bridge/room/tools/runner.py): the agent is thinking, not quiet."""

    @property
    def busy(self) -> bool: ...


class TurnTracker:
    def __init__(
        self,
        *,
        on_state: Callable[[AgentState], None],
        answering: Answering,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_state = on_state
        self._clock = clock
        self.answering = answering
        self.tools: Busy | None = None
        self.listeners: list[TurnListener] = []
        self.state = AgentState.INITIALIZING
        self.response_id: str | None = None  # the latest response, until its response.done
        self._open: set[str] = set()  # every response created and not done
        self.audio_playing = False
        self.speaking = False
        self._transcripts: dict[str, float] = {}  # committed item -> when
        self._response_due: float | None = None
        self._first_audio_sent = True
        self._sounding = False  # answer audio is going to the room (not paused, not cut)
        self.last_change = clock()  # the last transition
        self.last_activity = self.last_change  # the last sign of life: speech, chat, a response
        self.answer_started = self.last_change

    @property
    def responding(self) -> bool:
        """An answer is being made or played: a new turn would cut it."""
        return self.audio_playing or self.response_id is not None

    # ---- the call ------------------------------------------------------------------------------

    def connecting(self) -> None:
        self._set_state(AgentState.INITIALIZING)

    def idle(self) -> None:
        self._set_state(AgentState.IDLE)

    def held(self) -> None:
        """While the call connects, the human's speech is captured and held for it
        (bridge/room/backlog.py): listening already."""
        if self.state is AgentState.INITIALIZING:
            self._set_state(AgentState.LISTENING)

    def call_up(self) -> None:
        """A call is in use: a fresh conversation state, listening."""
        self.response_id = None
        self._open.clear()
        self.audio_playing = False
        self._sounding = False
        self.speaking = False
        self._transcripts.clear()
        self._response_due = None
        self.last_change = self.last_activity = self._clock()
        self._set_state(AgentState.LISTENING)

    def stop_answering(self, *, transcribe: bool, call_up: bool) -> None:
        """No more answers (the room's budget is spent); with a call up, it listens now."""
        self.answering.stop(transcribe=transcribe)
        if call_up:
            self._set_state(AgentState.LISTENING)

    # ---- the human -----------------------------------------------------------------------------

    def speech_started(self, item_id: str, heard: float | None = None) -> bool:
        """The human started speaking (``heard``: when the room heard it begin, if known). True:
        an answer was in progress and is cut (its audio is dropped now: the barge-in's time)."""
        now = self._changed()
        self.last_activity = now
        self.speaking = True
        cut = self.responding
        if cut:
            self.audio_playing = False
            self._sounding = False
            self._tell(TurnEvent.BARGE_IN, now, item_id)
        self._tell(TurnEvent.SPEECH_STARTED, now if heard is None else heard, item_id)
        self._set_state(AgentState.LISTENING)
        return cut

    def speech_stopped(self, heard: float | None = None) -> None:
        """The human stopped speaking (``heard``: when the room heard the end, if known)."""
        self.speaking = False
        now = self._changed()
        self._tell(TurnEvent.SPEECH_STOPPED, now if heard is None else heard)
        if self.answering.policy == "auto":  # server VAD answers each committed turn
            self._set_state(AgentState.THINKING)

    def committed(self, item_id: str) -> None:
        """The human's turn is in the conversation: its transcript, and with auto responses
        an answer, are on their way."""
        now = self._changed()
        if self.answering.transcribes:
            self._transcripts[item_id] = now
        if self.answering.policy == "auto":
            self._response_due = now + RESPONSE_WAIT_S

    def transcript_done(self, item_id: str, transcript: str | None = None) -> None:
        """The turn's transcript is back (``transcript``), or failed (None)."""
        now = self._changed()
        self._transcripts.pop(item_id, None)
        if transcript is not None:
            self._tell(TurnEvent.TRANSCRIPT, now, transcript)

    def chatted(self, text: str = "") -> None:
        """The human typed ``text`` (an answer may or may not be asked for)."""
        self.last_activity = self._clock()
        self._tell(TurnEvent.TEXT, self.last_activity, text)

    def answer_requested(self) -> None:
        """We asked for an answer (a chat, an addressed turn); one still open was cancelled."""
        if self.response_id is not None:
            self._tell(TurnEvent.BARGE_IN, self._clock())
        self._set_state(AgentState.THINKING)

    def thinking(self) -> None:
        """Tools started for the latest response."""
        self._set_state(AgentState.THINKING)

    # ---- the model -----------------------------------------------------------------------------

    def response_created(self, response_id: str) -> None:
        now = self._changed()
        self.last_activity = self.answer_started = now
        self.response_id = response_id
        self._open.add(response_id)
        self._response_due = None
        self._first_audio_sent = False
        self._tell(TurnEvent.RESPONSE_CREATED, now, response_id)
        if self.state is not AgentState.SPEAKING:
            self._set_state(AgentState.THINKING)

    def audio_started(self) -> None:
        self._changed()
        self.audio_playing = True
        self._set_state(AgentState.SPEAKING)

    def answer_audio(self, at: float) -> None:
        """The speaker pump handed answer audio to the room at ``at``: the first frame of a
        stretch of sound (later frames of it count for nothing)."""
        if not self._first_audio_sent:
            self._first_audio_sent = True
            self._sounding = True
            self._tell(TurnEvent.FIRST_AUDIO, at)
        elif not self._sounding:
            self._sounding = True
            self._tell(TurnEvent.AUDIO_RESUMED, at)

    def answer_quiet(self, at: float) -> None:
        """The answer's audio went quiet in the room; its last audible frame was handed on at
        ``at`` (a pause, or its end)."""
        if self._sounding:
            self._sounding = False
            self._tell(TurnEvent.AUDIO_PAUSED, at)

    def audio_stopped(self) -> None:
        """The answer's audio ended."""
        self.audio_playing = False
        self._tell(TurnEvent.ANSWER_ENDED, self._changed())
        if self.response_id is None:
            self._set_state(self.resting_state())

    def audio_cleared(self) -> None:
        """The answer's audio was dropped (a barge-in at the service)."""
        self._changed()
        self.audio_playing = False
        self._sounding = False
        if self.state is AgentState.SPEAKING:
            self._set_state(AgentState.LISTENING)

    def response_done(self, response_id: str, outcome: ResponseOutcome | None = None) -> None:
        """After the tools have seen it (they may start and make the agent think)."""
        self._tell(TurnEvent.RESPONSE_DONE, self._changed(), response_id, outcome)
        self._open.discard(response_id)
        if response_id == self.response_id:
            self.response_id = None
        if not self.audio_playing:
            self._set_state(self.resting_state())

    def resting_state(self) -> AgentState:
        """Between answers: ``thinking`` while tools run, else ``listening``."""
        busy = self.tools is not None and self.tools.busy
        return AgentState.THINKING if busy else AgentState.LISTENING

    # ---- quiet ---------------------------------------------------------------------------------

    def quiet(self, *, since: float, audio_queued: float, now: float | None = None) -> bool:
        """Between turns now: nobody speaking, no response open, no answer playing or still
        queued toward the room (``audio_queued`` s), no transcript or answer due, no tool at
        work, and nothing for a moment (the last sound heard was at ``since``)."""
        now = self._clock() if now is None else now
        for item, committed in list(self._transcripts.items()):
            if now - committed > TRANSCRIPT_WAIT_S:
                del self._transcripts[item]
        if self._response_due is not None and now > self._response_due:
            self._response_due = None
        return (
            not self.speaking
            and not self._open
            and not self.audio_playing
            and not self._transcripts
            and self._response_due is None
            and not (self.tools is not None and self.tools.busy)
            and audio_queued <= 0.0
            and now - max(self.last_change, self.last_activity, since) >= QUIET_GAP_S
        )

    # ---- internals -----------------------------------------------------------------------------

    def _changed(self) -> float:
        self.last_change = self._clock()
        return self.last_change

    def _set_state(self, state: AgentState) -> None:
        self.state = state
        self._on_state(state)

    def _tell(
        self, event: TurnEvent, at: float, detail: str = "", outcome: ResponseOutcome | None = None
    ) -> None:
        for listener in self.listeners:
            # A listener (tracing) that fails costs its own record, never the conversation's
            # state: the agent state and the other listeners go on.
            try:
                listener.turn_event(event, at, detail, outcome)
            except Exception as exc:
                logger.warning(
                    "turn listener %s failed on %s: %s: %s",
                    type(listener).__name__,
                    event.value,
                    type(exc).__name__,
                    exc,
                )


__all__ = [
    "QUIET_GAP_S",
    "RESPONSE_WAIT_S",
    "TRANSCRIPT_WAIT_S",
    "Answering",
    "Busy",
    "ResponseOutcome",
    "TurnEvent",
    "TurnListener",
    "TurnTracker",
]
