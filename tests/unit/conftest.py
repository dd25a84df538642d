"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.tracing import spans


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """The spans a test makes, kept in memory (an SDK provider of its own, then none)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with spans.use_provider(provider):
        yield exporter
    provider.shutdown()
