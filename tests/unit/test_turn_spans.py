"""TurnTracer: the turns of one call as spans, driven the way the room side drives it (times in
``time.monotonic()`` seconds), read back from an in-memory exporter."""

from __future__ import annotations

import time

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from bridge.tracing import genai, spans
from bridge.tracing.turns import TurnTracer, wall_ns

USAGE = {"input_tokens": 300, "output_tokens": 90, "input_token_details": {"cached_tokens": 128}}


def tracer() -> tuple[spans.Span, TurnTracer]:
    call = spans.start_span("call")
    return call, TurnTracer(call, model="gpt-realtime-2.1", content=False)


def events(span: ReadableSpan) -> dict[str, int]:
    return {e.name: e.timestamp for e in span.events}


def count(name: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_count") or 0.0


def test_a_spoken_turn_with_a_tool_is_one_span_with_its_responses_inside(
    exported: InMemorySpanExporter,
) -> None:
    call, turns = tracer()
    t0 = time.monotonic()
    latencies = count("bridge_turn_latency_seconds")
    turns.speech_started(t0, item_id="item_1")
    turns.speech_stopped(t0 + 1.2)
    turns.transcript("order 42 please")
    turns.response_created("resp_1", t0 + 1.9)
    tool = spans.start_span("execute_tool get_order", turns.parent)
    turns.response_done(
        "resp_1", status="completed", usage=USAGE, cost_usd=0.002, tool_calls=1, at=t0 + 2.0
    )
    spans.end_span(tool)
    turns.response_created("resp_2", t0 + 2.3)
    turns.answer_audio(t0 + 2.5)
    turns.answer_quiet(t0 + 2.8)  # a pause while the response is still being made: not the end
    turns.answer_audio(t0 + 3.1)
    turns.response_done(
        "resp_2", status="completed", usage=USAGE, cost_usd=0.003, tool_calls=0, at=t0 + 3.0
    )
    turns.answer_quiet(t0 + 4.0)  # its last audible frame: the answer's end
    spans.end_span(call)
    done = {s.name: s for s in exported.get_finished_spans()}
    turn = done["turn"]
    assert turn.parent is not None and turn.parent.span_id == done["call"].context.span_id
    assert done["execute_tool get_order"].parent.span_id == turn.context.span_id  # type: ignore[union-attr]
    responses = [s for s in exported.get_finished_spans() if s.name == "chat gpt-realtime-2.1"]
    assert [r.attributes[genai.RESPONSE_ID] for r in responses] == ["resp_1", "resp_2"]  # type: ignore[index]
    assert all(r.parent.span_id == turn.context.span_id for r in responses)  # type: ignore[union-attr]
    assert responses[0].attributes[genai.USAGE_CACHE_READ_INPUT_TOKENS] == 128  # type: ignore[index]
    assert responses[1].attributes[genai.COST_USD] == 0.003  # type: ignore[index]
    marks = events(turn)
    assert [e.name for e in turn.events] == [
        "speech started",
        "speech stopped",
        "response created",
        "response created",
        "first answer audio",
        "answer end",
    ]
    assert turn.start_time == marks["speech started"]
    assert turn.end_time == marks["answer end"]
    assert abs(marks["answer end"] - wall_ns(t0 + 4.0)) < 1e6
    # Wall-clock times keep the monotonic spacing (within a millisecond of conversion).
    assert abs((marks["first answer audio"] - marks["speech stopped"]) / 1e9 - 1.3) < 0.001
    attrs = turn.attributes or {}
    assert attrs["bridge.turn.outcome"] == "answered"
    assert attrs["bridge.turn.latency_seconds"] == 1.3
    assert attrs["bridge.turn.interrupted"] is False
    assert "bridge.turn.transcript" not in attrs  # trace_content off
    assert count("bridge_turn_latency_seconds") == latencies + 1


def test_speaking_over_the_answer_is_a_barge_in_and_starts_the_next_turn(
    exported: InMemorySpanExporter,
) -> None:
    call, turns = tracer()
    t0 = time.monotonic() - 10
    barge_ins = count("bridge_barge_in_seconds")
    turns.speech_started(t0)
    turns.speech_stopped(t0 + 1.0)
    turns.response_created("resp_1", t0 + 1.5)
    turns.answer_audio(t0 + 1.8)
    turns.barge_in(t0 + 3.0, stopped=t0 + 3.2)
    turns.speech_started(t0 + 3.0)
    turns.response_done(
        "resp_1", status="cancelled", usage=USAGE, cost_usd=None, tool_calls=0, at=t0 + 3.3
    )  # the cut answer's usage still lands on its response span, the new turn goes on
    turns.close("call ended")
    (response,) = [s for s in exported.get_finished_spans() if s.name.startswith("chat")]
    assert (response.attributes or {})[genai.RESPONSE_FINISH_REASONS] == ("cancelled",)
    assert (response.attributes or {})[genai.USAGE_INPUT_TOKENS] == 300
    spans.end_span(call)
    first, second = sorted(
        (s for s in exported.get_finished_spans() if s.name == "turn"),
        key=lambda s: s.start_time or 0,
    )
    assert (first.attributes or {})["bridge.turn.outcome"] == "interrupted"
    assert (first.attributes or {})["bridge.turn.interrupted"] is True
    barge = next(e for e in first.events if e.name == "barge-in")
    assert (barge.attributes or {})["bridge.barge_in.seconds"] == 0.2
    assert (second.attributes or {})["bridge.turn.outcome"] == "call ended"
    assert count("bridge_barge_in_seconds") == barge_ins + 1


def test_speech_starting_while_answering_cuts_the_answer_by_itself(
    exported: InMemorySpanExporter,
) -> None:
    _, turns = tracer()
    t0 = time.monotonic() - 5
    turns.speech_started(t0)
    turns.response_created("resp_1", t0 + 1)
    turns.answer_audio(t0 + 1.2)
    turns.speech_started(t0 + 2)
    turns.close("call ended")
    done = [s for s in exported.get_finished_spans() if s.name == "turn"]
    outcomes = [(s.attributes or {})["bridge.turn.outcome"] for s in done]
    assert outcomes[-2:] == ["interrupted", "call ended"]


def test_transcripts_and_chat_text_only_with_trace_content(
    exported: InMemorySpanExporter,
) -> None:
    call = spans.start_span("call")
    turns = TurnTracer(call, model="m", content=True)
    turns.text(time.monotonic(), "hello there")
    turns.close("call ended")
    (turn,) = [s for s in exported.get_finished_spans() if s.name == "turn"]
    assert (turn.attributes or {})["bridge.turn.text"] == "hello there"
    assert (turn.attributes or {})["bridge.turn.kind"] == "text"


def test_a_response_without_audio_ends_its_turn_when_done(exported: InMemorySpanExporter) -> None:
    _, turns = tracer()
    t0 = time.monotonic()
    turns.text(t0, "x")
    turns.response_created("r", t0 + 0.1)
    turns.response_done("r", status="completed", usage=None, cost_usd=None, tool_calls=0, at=t0 + 1)
    (turn,) = [s for s in exported.get_finished_spans() if s.name == "turn"]
    assert turn.end_time == wall_ns(t0 + 1) or abs((turn.end_time or 0) - wall_ns(t0 + 1)) < 2e6


def test_without_tracing_the_tracer_costs_nothing_and_still_counts() -> None:
    call = spans.start_span("call")
    turns = TurnTracer(call, model="m", content=True)
    t0 = time.monotonic()
    before = count("bridge_turn_latency_seconds")
    turns.speech_started(t0)
    turns.speech_stopped(t0 + 1)
    turns.response_created("r", t0 + 1.5)
    turns.answer_audio(t0 + 1.6)
    assert not turns._turn.span.is_recording()  # type: ignore[union-attr]
    assert count("bridge_turn_latency_seconds") == before + 1  # the metric does not need a trace
