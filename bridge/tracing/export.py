"""Turning traces on: the OpenTelemetry SDK with its OTLP/HTTP exporter, configured the standard
way, or nothing at all.

Read from the environment by OpenTelemetry itself (nothing of ours to learn):

* ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): where spans go
  (OTLP over HTTP, e.g. ``http://otel-collector:4318``). **Unset: tracing is off** — no SDK, no
  exporter thread; every span is the API's no-op and costs next to nothing.
* ``OTEL_SERVICE_NAME`` (default ``realtime-room-bridge``), ``OTEL_RESOURCE_ATTRIBUTES``;
* ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``);
* ``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``, ``..._COMPRESSION``, ``OTEL_BSP_*`` (batching);
* ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off with an endpoint set.

Every process that makes spans (``serve``, each of its worker processes, ``join``) calls
``start_tracing`` once at start and ``Tracing.shutdown`` at exit (which sends what is queued).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "realtime-room-bridge"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SHUTDOWN_TIMEOUT_MS = 5_000


def tracing_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and neither
    ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none``."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


@dataclass
class Tracing:
    """What ``start_tracing`` installed (``provider`` None: tracing is off)."""

    provider: TracerProvider | None = None

    @property
    def on(self) -> bool:
        return self.provider is not None

    def shutdown(self) -> None:
        """Send the spans still queued (bounded wait) and stop the exporter. Idempotent."""
        provider, self.provider = self.provider, None
        if provider is not None:
            provider.force_flush(SHUTDOWN_TIMEOUT_MS)
            provider.shutdown()


def build_provider(role: str) -> TracerProvider:
    """An SDK TracerProvider exporting over OTLP/HTTP in batches. Its resource merges
    ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` (ours only when neither names the
    service) with the version and ``bridge.process.role`` (serve, worker, join)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.version": __version__, "bridge.process.role": role})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # The sampler comes from OTEL_TRACES_SAMPLER (TracerProvider reads it when given none).
    provider = TracerProvider(resource=resource)
    # Endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def start_tracing(role: str) -> Tracing:
    """Install the SDK as the process's tracer provider when the environment asks for traces
    (``tracing_wanted``); otherwise leave OpenTelemetry's no-op in place. Call once per
    process."""
    if not tracing_wanted():
        return Tracing()
    from opentelemetry import trace

    provider = build_provider(role)
    trace.set_tracer_provider(provider)
    endpoint = next(os.environ[n] for n in ENDPOINT_VARIABLES if os.environ.get(n, "").strip())
    logger.info("traces exported over OTLP to %s", _without_credentials(endpoint))
    return Tracing(provider)


def _without_credentials(url: str) -> str:
    """An endpoint for a log line: no user:password part."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rsplit("@", 1)[-1]
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
