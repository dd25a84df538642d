"""Traces: OpenTelemetry spans for what the bridge does, so an operator can see where one
answer's time went (room -> session -> call -> turn -> tool calls, and the dispatch that brought
the agent in).

``export`` installs the SDK and its OTLP exporter when the standard ``OTEL_EXPORTER_OTLP_*``
variables name an endpoint; without one nothing is installed and every span is OpenTelemetry's
no-op. ``spans`` starts our spans (names, explicit parents, exemplars for the histograms);
``carrier`` carries a span's context across a process boundary; ``genai`` holds the GenAI
semantic-convention attributes of the model side.

May import: ``bridge.settings``, ``bridge.billing`` and the shared plumbing; never ``livekit``.
The realtime, room, service and local sides and the entry points import it.
"""
