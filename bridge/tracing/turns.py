"""The turns of one model call as spans: what the room heard, when, and what it cost.

A **turn** is one thing a human said (or typed) and everything the agent did about it: its span
starts at the human's speech onset (as the room heard it) and holds the events

    speech started / speech stopped     the human's speech, in the room's time
    response created                    each response the model made for it (a child span each)
    first answer audio                  the first answer audio handed to the room
    answer end | barge-in               the answer's last audio handed to the room, or the human
                                        cutting it

and ends when the answer has played (or was cut, cancelled, or the call ended). Tool calls run
inside it (``parent``); a response that calls tools is followed by the one that answers with
their results, in the same turn. Each response is a child span named ``chat <model>`` with the
GenAI conventions' usage and our cost.

The histograms (``bridge_turn_latency_seconds``: speech end -> first answer audio;
``bridge_barge_in_seconds``: speech onset -> answer audio stopped) are observed here, with the
turn's trace as their exemplar.

Times are ``time.monotonic()`` seconds, as the room side keeps them; spans get wall-clock times.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.metrics import BARGE_IN_SECONDS, TURN_LATENCY_SECONDS, observe
from bridge.tracing import genai, spans

# Wall clock minus monotonic clock (ns), and when it was taken: one offset for a minute, so the
# times of one turn are converted alike (a fresh reading each call would jitter by microseconds).
_offset: tuple[int, float] = (0, -1e9)


def wall_ns(monotonic: float) -> int:
    """A ``time.monotonic()`` instant as wall-clock nanoseconds (a span's clock)."""
    global _offset  # noqa: PLW0603 - one conversion per process, refreshed each minute
    now = time.monotonic()
    if now - _offset[1] > 60.0:
        _offset = (time.time_ns() - time.monotonic_ns(), now)
    return int(monotonic * 1e9) + _offset[0]


@dataclass
class _Turn:
    span: spans.Span
    kind: str  # speech | text
    onset: float
    speech_end: float | None = None
    first_audio: float | None = None
    last_audio: float | None = None
    responses: set[str] = field(default_factory=set)  # made for this turn, not done yet
    answering: bool = False  # a response is in progress
    audio_playing: bool = False
    tools_pending: bool = False  # a response asked for tools: their answer follows
    interrupted: bool = False


class TurnTracer:
    """The turns of one call, under the call's span. The room side calls one method per thing
    that happened; ``parent`` is what a tool call's span hangs on."""

    def __init__(self, call_span: spans.Span, *, model: str, content: bool) -> None:
        self._call_span = call_span
        self._model = model
        self._content = content
        self._turn: _Turn | None = None
        # Each response's span, until its response.done (which may come after its turn ended:
        # a cancelled answer reports its usage too).
        self._responses: dict[str, spans.Span] = {}
        self.turns = 0

    @property
    def parent(self) -> spans.Parent:
        """The turn in progress (tool calls hang on it), else the call."""
        return self._turn.span if self._turn is not None else self._call_span

    # ---- the human -----------------------------------------------------------------------------

    def speech_started(
        self, onset: float, *, item_id: str = "", stopped: float | None = None
    ) -> None:
        """The human began speaking at ``onset`` (the room's time). An answer still playing or
        being made is cut: a barge-in (the old turn ends, interrupted; its audio stopped in the
        room at ``stopped``, default now)."""
        old = self._turn
        if old is not None:
            if old.audio_playing or old.answering:
                self.barge_in(onset, stopped=time.monotonic() if stopped is None else stopped)
            else:
                self._end("superseded")  # they spoke again before any answer
        self._start("speech", onset)
        assert self._turn is not None
        self._event("speech started", onset, {"bridge.item.id": item_id} if item_id else None)

    def speech_stopped(self, end: float) -> None:
        turn = self._turn
        if turn is None:
            return
        turn.speech_end = end
        self._event("speech stopped", end)
        turn.span.set_attribute("bridge.turn.speech_seconds", round(end - turn.onset, 3))

    def text(self, at: float, text: str) -> None:
        """A typed message is a turn of its own (it cuts an answer in progress)."""
        old = self._turn
        if old is not None:
            self._end("interrupted" if (old.audio_playing or old.answering) else "superseded")
        self._start("text", at)
        assert self._turn is not None
        spans.set_content(self._turn.span, self._content, "bridge.turn.text", text)

    def transcript(self, text: str) -> None:
        """What the human said (only with ``trace_content``)."""
        if self._turn is not None:
            spans.set_content(self._turn.span, self._content, "bridge.turn.transcript", text)

    # ---- the model -----------------------------------------------------------------------------

    def response_created(self, response_id: str, at: float) -> None:
        turn = self._turn
        if turn is None:  # a response of the model's own (session start, an idle prompt)
            self._start("model", at)
            turn = self._turn
            assert turn is not None
        turn.answering = True
        turn.tools_pending = False
        turn.responses.add(response_id)
        self._responses[response_id] = spans.start_span(
            f"{genai.CHAT} {self._model}",
            turn.span,
            {
                genai.OPERATION_NAME: genai.CHAT,
                genai.REQUEST_MODEL: self._model,
                genai.RESPONSE_ID: response_id,
            },
            start_time_ns=wall_ns(at),
        )
        self._event("response created", at, {genai.RESPONSE_ID: response_id})

    def answer_audio(self, at: float) -> None:
        """Answer audio was handed to the room from ``at`` on (its first audible frame, or the
        first after a pause)."""
        turn = self._turn
        if turn is None:
            return
        turn.audio_playing = True
        turn.last_audio = at
        if turn.first_audio is not None:
            return
        turn.first_audio = at
        self._event("first answer audio", at)
        if turn.speech_end is not None:
            latency = max(0.0, at - turn.speech_end)
            turn.span.set_attribute("bridge.turn.latency_seconds", round(latency, 3))
            observe(TURN_LATENCY_SECONDS, latency, spans.exemplar(turn.span))

    def answer_quiet(self, at: float) -> None:
        """The answer's audio has gone quiet in the room (its last audible frame was handed on
        at ``at``): the answer ended there, unless more of it is still being made."""
        turn = self._turn
        if turn is None or not turn.audio_playing:
            return
        turn.audio_playing = False
        turn.last_audio = at
        if not (turn.answering or turn.tools_pending):
            self._answered(turn)

    def _answered(self, turn: _Turn, at: float | None = None) -> None:
        """The answer is over: its last audible frame went to the room (``answer end``) and
        its responses are done (at ``at``, when that came later)."""
        end = at
        if turn.last_audio is not None:
            self._event("answer end", turn.last_audio)
            end = max(turn.last_audio, at if at is not None else 0.0)
        self._end("answered", end)

    def response_done(
        self,
        response_id: str,
        *,
        status: str,
        usage: Mapping[str, Any] | None,
        cost_usd: float | None,
        tool_calls: int,
        at: float,
    ) -> None:
        span = self._responses.pop(response_id, None)
        if span is not None:
            span.set_attributes(genai.usage_attributes(usage, cost_usd))
            span.set_attribute(genai.RESPONSE_FINISH_REASONS, [status])
            if tool_calls:
                span.set_attribute("bridge.response.tool_calls", tool_calls)
            spans.end_span(span, end_time_ns=wall_ns(at))
        turn = self._turn
        if turn is None or response_id not in turn.responses:
            return  # an earlier turn's (cut) response
        turn.responses.discard(response_id)
        if turn.responses:
            return
        turn.answering = False
        turn.tools_pending = tool_calls > 0 and status == "completed"
        if status in ("cancelled", "incomplete", "failed"):
            turn.span.set_attribute("bridge.turn.cancelled", status == "cancelled")
        if turn.audio_playing or turn.tools_pending:
            return
        if status == "completed":
            self._answered(turn, at)
        else:
            self._end(status, at)

    def barge_in(self, onset: float, *, stopped: float) -> None:
        """The human spoke over the answer from ``onset``; its audio stopped in the room at
        ``stopped``. Ends the turn as interrupted."""
        turn = self._turn
        if turn is None:
            return
        seconds = max(0.0, stopped - onset)
        turn.interrupted = True
        self._event("barge-in", stopped, {"bridge.barge_in.seconds": round(seconds, 3)})
        if turn.audio_playing or turn.first_audio is not None:
            observe(BARGE_IN_SECONDS, seconds, spans.exemplar(turn.span))
        self._end("interrupted", stopped)

    def close(self, reason: str) -> None:
        """The call ended: the turn in progress ends with it, and responses never done."""
        if self._turn is not None:
            self._end(reason)
        now = wall_ns(time.monotonic())
        for span in self._responses.values():
            spans.end_span(span, end_time_ns=now)
        self._responses.clear()

    # ---- spans ---------------------------------------------------------------------------------

    def _start(self, kind: str, at: float) -> None:
        self.turns += 1
        span = spans.start_span(
            "turn",
            self._call_span,
            {"bridge.turn.kind": kind, "bridge.turn.number": self.turns},
            start_time_ns=wall_ns(at),
        )
        self._turn = _Turn(span=span, kind=kind, onset=at)

    def _event(self, name: str, at: float, attributes: spans.Attributes | None = None) -> None:
        if self._turn is not None:
            self._turn.span.add_event(name, attributes or {}, timestamp=wall_ns(at))

    def _end(self, outcome: str, at: float | None = None) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        end = at if at is not None else time.monotonic()
        turn.span.set_attributes(
            {"bridge.turn.outcome": outcome, "bridge.turn.interrupted": turn.interrupted}
        )
        spans.end_span(turn.span, end_time_ns=wall_ns(end))
