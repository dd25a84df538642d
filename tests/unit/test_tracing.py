"""bridge/tracing: off without an endpoint, spans with explicit parents, context across a
process boundary, content only when asked, exemplars, the GenAI names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from bridge import metrics
from bridge.tracing import carrier, genai, spans
from bridge.tracing.export import build_provider, tracing_wanted


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_traces_are_on_only_with_an_endpoint(env: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(env) is wanted


def test_without_a_provider_every_span_is_a_free_no_op() -> None:
    span = spans.start_span("room", attributes={"bridge.room": "r"})
    assert not span.is_recording()
    assert spans.exemplar(span) is None
    assert carrier.inject(trace.set_span_in_context(span)) is None
    spans.end_span(span, error="nothing happens")


def test_the_resource_names_the_service_unless_the_environment_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    provider = build_provider("worker")
    attrs = provider.resource.attributes
    assert attrs["service.name"] == "realtime-room-bridge"
    assert attrs["bridge.process.role"] == "worker"
    assert attrs["deployment.environment.name"] == "test"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "bridge-eu")
    provider = build_provider("serve")
    assert provider.resource.attributes["service.name"] == "bridge-eu"
    provider.shutdown()


def test_the_sampler_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    provider = build_provider("serve")
    assert provider.sampler is ALWAYS_OFF
    provider.shutdown()


def test_children_hang_on_the_parent_given(exported: InMemorySpanExporter) -> None:
    room = spans.start_span("room")
    session = spans.start_span("session", room)
    turn = spans.start_span("turn", trace.set_span_in_context(session))
    for span in (turn, session, room):
        spans.end_span(span)
    done = {s.name: s for s in exported.get_finished_spans()}
    assert done["turn"].parent is not None and done["session"].parent is not None
    assert done["turn"].parent.span_id == done["session"].context.span_id
    assert done["session"].parent.span_id == done["room"].context.span_id
    assert len({s.context.trace_id for s in done.values()}) == 1


def test_a_context_crosses_a_process_boundary_as_a_small_dict(
    exported: InMemorySpanExporter,
) -> None:
    dispatch = spans.start_span("dispatch")
    sent = carrier.inject(trace.set_span_in_context(dispatch))
    assert sent is not None and set(sent) <= set(carrier.FIELDS)
    received = carrier.extract(dict(sent))  # as if read back from a JSON line
    assert received is not None
    room = spans.start_span("room", received)
    spans.end_span(room)
    spans.end_span(dispatch)
    done = {s.name: s for s in exported.get_finished_spans()}
    assert done["room"].context.trace_id == done["dispatch"].context.trace_id
    assert done["room"].parent is not None
    assert done["room"].parent.span_id == done["dispatch"].context.span_id


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "00-abc",
        [],
        {},
        {"traceparent": 5},
        {"traceparent": "not a traceparent"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},  # all-zero ids are invalid
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "x" * 100},
    ],
)
def test_a_bad_carrier_is_no_parent(bad: object) -> None:
    assert carrier.extract(bad) is None


def test_content_reaches_a_span_only_when_allowed(exported: InMemorySpanExporter) -> None:
    span = spans.start_span("turn")
    spans.set_content(span, False, "bridge.turn.transcript", "my card number is 4242")
    spans.set_content(span, True, "bridge.turn.answer", "x" * (spans.MAX_TEXT + 10))
    spans.end_span(span)
    (done,) = exported.get_finished_spans()
    assert "bridge.turn.transcript" not in (done.attributes or {})
    assert len(str((done.attributes or {})["bridge.turn.answer"])) == spans.MAX_TEXT


def test_an_error_marks_the_span_failed(exported: InMemorySpanExporter) -> None:
    spans.end_span(spans.start_span("call"), error="connect failed: 503")
    (done,) = exported.get_finished_spans()
    assert done.status.status_code is trace.StatusCode.ERROR
    assert done.status.description == "connect failed: 503"


def test_a_histogram_exemplar_links_to_the_trace(exported: InMemorySpanExporter) -> None:
    registry = CollectorRegistry()
    latency = Histogram("turn_seconds", "t", buckets=(0.5, 1.0), registry=registry)
    span = spans.start_span("turn")
    link = spans.exemplar(span)
    assert link is not None
    assert link["trace_id"] == spans.trace_id(span)
    latency.observe(0.7, exemplar=link)
    spans.end_span(span)
    text = openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    ids = f'span_id="{link["span_id"]}",trace_id="{link["trace_id"]}"'
    assert f'turn_seconds_bucket{{le="1.0"}} 1.0 # {{{ids}}} 0.7' in text


def test_an_unsampled_span_gives_no_exemplar() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    with spans.use_provider(provider):
        span = spans.start_span("turn")
    assert spans.exemplar(span) is None


def test_the_genai_names_are_the_conventions() -> None:
    for name in (
        "OPERATION_NAME",
        "PROVIDER_NAME",
        "REQUEST_MODEL",
        "RESPONSE_ID",
        "RESPONSE_FINISH_REASONS",
        "CONVERSATION_ID",
        "USAGE_INPUT_TOKENS",
        "USAGE_OUTPUT_TOKENS",
        "USAGE_CACHE_READ_INPUT_TOKENS",
        "TOOL_NAME",
        "TOOL_CALL_ID",
        "TOOL_TYPE",
    ):
        assert getattr(genai, name) == getattr(semconv, f"GEN_AI_{name}"), name
    operations = semconv.GenAiOperationNameValues
    assert (
        operations.EXECUTE_TOOL.value,
        operations.CHAT.value,
    ) == (genai.EXECUTE_TOOL, genai.CHAT)
    assert genai.provider_name("https://api.openai.com/v1", "Authorization") == "openai"
    assert genai.provider_name("https://x.openai.azure.com/openai", "api-key") == "azure.ai.openai"
    assert semconv.GenAiProviderNameValues.AZURE_AI_OPENAI.value == "azure.ai.openai"


def test_usage_becomes_tokens_and_cost() -> None:
    usage = {"input_tokens": 120, "output_tokens": 40, "input_token_details": {"cached_tokens": 64}}
    assert genai.usage_attributes(usage, 0.0123456789) == {
        genai.USAGE_INPUT_TOKENS: 120,
        genai.USAGE_OUTPUT_TOKENS: 40,
        genai.USAGE_CACHE_READ_INPUT_TOKENS: 64,
        genai.COST_USD: 0.01234568,
    }
    assert genai.usage_attributes(None, None) == {}


def test_a_tool_span_names_the_tool_and_never_its_arguments() -> None:
    attributes = genai.tool_attributes(name="lookup", kind="http", call_id="call_1")
    assert attributes[genai.TOOL_NAME] == "lookup"
    assert not any("argument" in key for key in attributes)


def test_exemplars_survive_multiprocess_mode_through_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prometheus_client drops exemplars in multiprocess mode: each process writes its latest per
    bucket to a file, and the exposition puts the newest back on the bucket lines."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(metrics, "_exemplars", {})
    registry = CollectorRegistry()
    tool = Histogram("t_seconds", "t", ["tool"], buckets=(0.5, 1.0), registry=registry)
    first = {"trace_id": "a" * 32, "span_id": "b" * 16}
    metrics.observe(tool, 0.7, first, tool="lookup")
    metrics.observe(tool, 0.2, None, tool="lookup")  # no trace: no exemplar
    # Another process's file: an older exemplar on the same bucket, a newer one on another.
    (tmp_path / metrics.EXEMPLAR_FILE.format(pid=1)).write_text(
        json.dumps(
            [
                {
                    "name": "t_seconds_bucket",
                    "labels": {"tool": "lookup", "le": "1.0"},
                    "exemplar": {"trace_id": "c" * 32},
                    "value": 0.9,
                    "ts": 1.0,
                },
                {
                    "name": "t_seconds_bucket",
                    "labels": {"tool": "lookup", "le": "+Inf"},
                    "exemplar": {"trace_id": "d" * 32},
                    "value": 3.0,
                    "ts": 2.0,
                },
            ]
        )
    )
    (tmp_path / metrics.EXEMPLAR_FILE.format(pid=2)).write_text("{half-writ")
    wrapped = CollectorRegistry()
    wrapped.register(metrics._WithExemplars(registry, tmp_path))
    text = openmetrics(wrapped).decode()  # type: ignore[no-untyped-call]
    assert (
        f'le="1.0",tool="lookup"}} 2.0 # {{span_id="{"b" * 16}",trace_id="{"a" * 32}"}} 0.7' in text
    )
    assert f'le="+Inf",tool="lookup"}} 2.0 # {{trace_id="{"d" * 32}"}} 3.0' in text
    assert 'le="0.5",tool="lookup"} 1.0\n' in text


def test_the_exposition_speaks_what_the_scraper_asks_for() -> None:
    body, kind = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert kind.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    body, kind = metrics.exposition(None)
    assert kind.startswith("text/plain") and b"# EOF" not in body
