"""TurnSpans (bridge/room/turn_spans.py): a session's TurnTracker drives the turn spans of the
call in use through its listener hooks; the barge-in is timed when the answer's audio was cut,
tool spans hang on the turn, and nothing is traced between calls."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.room.turn_spans import TurnSpans
from bridge.room.turns import Answering, ResponseOutcome, TurnTracker
from bridge.tracing import spans
from bridge.tracing.calls import CallTrace
from bridge.tracing.turns import wall_ns


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def session() -> tuple[TurnTracker, TurnSpans, Clock, spans.Span]:
    clock = Clock()
    turns = TurnTracker(on_state=lambda _: None, answering=Answering("auto", True), clock=clock)
    session_span = spans.start_span("session")
    traced = TurnSpans(session_span, turns)
    return turns, traced, clock, session_span


def test_the_trackers_hooks_make_the_turn_and_a_barge_in_is_timed_at_the_cut(
    exported: InMemorySpanExporter,
) -> None:
    turns, traced, clock, session_span = session()
    assert traced.parent is session_span  # no call yet
    call = CallTrace(session_span, model="m", provider="openai", content=False)
    traced.call = call
    turns.call_up()
    turns.speech_started("u1", heard=clock.now - 0.3)
    clock.now += 1.0
    turns.speech_stopped(heard=clock.now - 0.1)
    turns.response_created("r1")
    tool = spans.start_span("execute_tool t", traced.parent)
    turns.response_done("r1", ResponseOutcome(status="completed", tool_calls=1))
    spans.end_span(tool)
    turns.response_created("r2")
    turns.audio_started()
    turns.answer_audio(clock.now + 0.5)
    clock.now += 2.0
    turns.speech_started("u2", heard=clock.now - 0.25)  # over the answer: cut now
    traced.call = None
    turns.speech_stopped()  # between calls: nothing traced
    call.end("hung up")
    done = {s.name: s for s in exported.get_finished_spans() if s.name != "turn"}
    first, second = sorted(
        (s for s in exported.get_finished_spans() if s.name == "turn"),
        key=lambda s: s.start_time or 0,
    )
    assert done["execute_tool t"].parent.span_id == first.context.span_id  # type: ignore[union-attr]
    assert (first.attributes or {})["bridge.turn.outcome"] == "interrupted"
    barge = next(e for e in first.events if e.name == "barge-in")
    assert (barge.attributes or {})["bridge.barge_in.seconds"] == 0.25
    assert abs(barge.timestamp - wall_ns(clock.now)) < 1e6
    assert abs((second.start_time or 0) - wall_ns(clock.now - 0.25)) < 1e6
    assert [e.name for e in second.events] == ["speech started"]  # the stop came after the call
