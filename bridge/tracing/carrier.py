"""A span's context across a process boundary (W3C Trace Context: ``traceparent`` and
``tracestate``), as a small dict that travels in a control message or any JSON.

The serve process puts the dispatch span's context into the worker's ``join`` message; the
worker continues the trace from it, so a room's spans sit under the webhook or LiveKit job that
brought the agent in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
# W3C fields and their size limits (traceparent is 55 characters; tracestate at most 32 members).
FIELDS = {"traceparent": 64, "tracestate": 512}


def inject(ctx: otel_context.Context | None = None) -> dict[str, str] | None:
    """The current (or given) context's span as a carrier; None when there is no valid span."""
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier or None


def extract(carrier: Any) -> otel_context.Context | None:
    """The remote context a carrier holds; None when it holds none (absent, malformed, or
    anything but string fields within their limits: it came over a pipe, not from a user, but
    a bad one must not break a join)."""
    if not isinstance(carrier, Mapping):
        return None
    clean = {
        key: value
        for key, limit in FIELDS.items()
        if isinstance(value := carrier.get(key), str) and len(value) <= limit
    }
    if "traceparent" not in clean:
        return None
    ctx = _PROPAGATOR.extract(clean, context=otel_context.Context())
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def attach(carrier: Any) -> None:
    """Make the carrier's context the current one for the rest of the calling task (each task
    has its own context, so it ends with the task); nothing when it holds none."""
    ctx = extract(carrier)
    if ctx is not None:
        otel_context.attach(ctx)
