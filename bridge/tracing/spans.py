"""Starting our spans: one tracer, explicit parents, and what links a metric to a trace.

A room, session, call or turn outlives any one task, so its span is started with an explicit
parent (a span or a context) instead of whatever happens to be current, and ended by its owner.
Without tracing (no SDK installed) every span here is OpenTelemetry's non-recording no-op.

``trace_content`` (a setting, off by default) is the only way transcripts or chat text reach a
span (``set_content``); no key, token or tool argument value is ever an attribute.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from bridge import __version__

__all__ = [
    "MAX_TEXT",
    "NO_PARENT",
    "Attributes",
    "Parent",
    "Span",
    "SpanKind",
    "current",
    "current_span",
    "end_span",
    "exemplar",
    "fail",
    "set_content",
    "start_span",
    "trace_id",
    "tracer",
    "use_provider",
]

TRACER_NAME = "realtime-room-bridge"
# Longest text attribute we set (a transcript with trace_content on, an error message).
MAX_TEXT = 4_000

# Set by tests (``use_provider``); otherwise the process's global provider.
_provider: TracerProvider | None = None

Parent = Span | otel_context.Context | None
# A parent that is none: the span starts a trace of its own.
NO_PARENT: Span = trace.INVALID_SPAN
Attributes = Mapping[str, AttributeValue]


def tracer() -> Tracer:
    return trace.get_tracer(TRACER_NAME, __version__, tracer_provider=_provider)


@contextmanager
def use_provider(provider: TracerProvider | None) -> Iterator[None]:
    """Spans started meanwhile go to ``provider`` (tests with an in-memory exporter)."""
    global _provider  # noqa: PLW0603 - the one seam, used by tests only
    previous, _provider = _provider, provider
    try:
        yield
    finally:
        _provider = previous


def _context(parent: Parent) -> otel_context.Context | None:
    if parent is None or isinstance(parent, otel_context.Context):
        return parent
    return trace.set_span_in_context(parent)


def start_span(
    name: str,
    parent: Parent = None,
    attributes: Attributes | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    start_time_ns: int | None = None,
) -> Span:
    """A span under ``parent`` (a span, a context; None: the current context). The caller ends
    it (``end_span``)."""
    return tracer().start_span(
        name,
        context=_context(parent),
        kind=kind,
        attributes=attributes,
        start_time=start_time_ns,
    )


@contextmanager
def current_span(
    name: str, attributes: Attributes | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span]:
    """A span that is the current one for the block (tasks created inside inherit it as their
    parent); an exception leaving the block marks it failed."""
    with tracer().start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False
    ) as span:
        yield span


def current() -> Span:
    """The current span (the no-op one when there is none)."""
    return trace.get_current_span()


def fail(span: Span, error: str) -> None:
    """Mark ``span`` failed with that (bounded) description."""
    span.set_status(Status(StatusCode.ERROR, error[:MAX_TEXT]))


def end_span(
    span: Span,
    *,
    error: str | None = None,
    end_time_ns: int | None = None,
    attributes: Attributes | None = None,
) -> None:
    """End ``span`` (with these last ``attributes``); ``error`` marks it failed with that
    (one-line, bounded) description."""
    if attributes:
        span.set_attributes(attributes)
    if error is not None:
        fail(span, error)
    span.end(end_time=end_time_ns)


def set_content(span: Span, allowed: bool, key: str, text: str) -> None:
    """What people said or typed, only with ``trace_content`` on (``allowed``)."""
    if allowed and span.is_recording():
        span.set_attribute(key, text[:MAX_TEXT])


def exemplar(span: Span | None = None) -> dict[str, str] | None:
    """``{"trace_id": ..., "span_id": ...}`` of a sampled span (the current one by default),
    for a histogram observation's exemplar; None when nothing is traced."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if not (ctx.is_valid and ctx.trace_flags.sampled):
        return None
    return {
        "trace_id": trace.format_trace_id(ctx.trace_id),
        "span_id": trace.format_span_id(ctx.span_id),
    }


def trace_id(span: Span) -> str | None:
    """The span's trace id in hex (for logs and GET /rooms), None when it has none."""
    ctx = span.get_span_context()
    return trace.format_trace_id(ctx.trace_id) if ctx.is_valid else None
