"""TurnSpans: a session's turns as spans. It listens to the session's ``TurnTracker``
(bridge/room/turns.py) and hands each transition to the turn spans of the call in use
(``TurnTracer``, bridge/tracing/turns.py); between calls there is nothing to trace.

Its ``parent`` is what a tool call's span hangs on: the turn whose response asked for it, else
the call, else the session.
"""

from __future__ import annotations

from bridge.room.turns import ResponseOutcome, TurnEvent, TurnTracker
from bridge.tracing import spans
from bridge.tracing.calls import CallTrace


class TurnSpans:
    def __init__(self, session: spans.Span, turns: TurnTracker) -> None:
        """Spans under ``session``'s, told by ``turns`` (it registers as their listener)."""
        self._session = session
        self.call: CallTrace | None = None  # the call in use (``take_up`` / ``put_down``)
        # The barge-in told just before the speech that cut the answer: (its item, when).
        self._cut: tuple[str, float] | None = None
        turns.listeners.append(self)

    @property
    def parent(self) -> spans.Parent:
        return self.call.turns.parent if self.call is not None else self._session

    def turn_event(
        self, event: TurnEvent, at: float, detail: str, outcome: ResponseOutcome | None = None
    ) -> None:
        if self.call is None:
            return
        turns = self.call.turns
        if event is TurnEvent.BARGE_IN:
            self._cut = (detail, at) if detail else None  # a typed turn cuts by itself
        elif event is TurnEvent.SPEECH_STARTED:
            cut, self._cut = self._cut, None
            stopped = cut[1] if cut is not None and cut[0] == detail else None
            turns.speech_started(at, item_id=detail, stopped=stopped)
        elif event is TurnEvent.SPEECH_STOPPED:
            turns.speech_stopped(at)
        elif event is TurnEvent.TRANSCRIPT:
            turns.transcript(detail)
        elif event is TurnEvent.TEXT:
            turns.text(at, detail)
        elif event is TurnEvent.RESPONSE_CREATED:
            turns.response_created(detail, at)
        elif event in (TurnEvent.FIRST_AUDIO, TurnEvent.AUDIO_RESUMED):
            turns.answer_audio(at)
        elif event is TurnEvent.AUDIO_PAUSED:
            turns.answer_quiet(at)
        elif event is TurnEvent.RESPONSE_DONE:
            done = outcome or ResponseOutcome(status="completed")
            turns.response_done(
                detail,
                status=done.status,
                usage=done.usage,
                cost_usd=done.cost_usd,
                tool_calls=done.tool_calls,
                at=at,
            )


__all__ = ["TurnSpans"]
