"""Prometheus metrics. Module-level collectors in the default registry; ``serve`` exposes them at
``/metrics`` (worker processes report theirs to the HTTP process, see bridge/service/workers.py).

Histograms of what traces show (turn latency, barge-in, call setup, join -> ready, tools) are
observed through ``observe`` with the trace's ids as an exemplar. prometheus_client keeps no
exemplars in its multiprocess mode, so each process also writes the latest exemplar per bucket to
``exemplars-<pid>.json`` in the multiprocess directory, and ``exposition`` puts them back on the
bucket lines of the OpenMetrics format (a scraper asking for ``application/openmetrics-text``);
the classic text format has no exemplars.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

logger = logging.getLogger(__name__)


class Renamed:
    """A counter under its new name and, for one release, its old one too (docs/metrics.md
    says which); ``inc`` and ``labels`` reach both."""

    def __init__(self, new: Counter, old: Counter) -> None:
        self.new = new
        self.old = old

    def labels(self, *values: str) -> Renamed:
        return Renamed(self.new.labels(*values), self.old.labels(*values))

    def inc(self, amount: float = 1.0) -> None:
        self.new.inc(amount)
        self.old.inc(amount)


# Gauges add up across worker processes (prometheus_client multiprocess mode, see
# bridge/service/workers.py).
ROOMS_ACTIVE = Gauge("bridge_rooms_active", "Rooms with an agent.", multiprocess_mode="livesum")
SESSIONS_ACTIVE = Gauge(
    "bridge_sessions_active", "Human sessions with a live model call.", multiprocess_mode="livesum"
)
CALLS_STARTED = Renamed(
    Counter(
        "bridge_calls_started_total",
        "Model calls a session took into use (its first, each retry, each rollover).",
    ),
    Counter("bridge_sessions_started_total", "Deprecated: bridge_calls_started_total."),
)
CALL_FAILURES = Renamed(
    Counter(
        "bridge_call_failures_total",
        "Model calls that could not be set up or ended unexpectedly, by reason.",
        ["reason"],
    ),
    Counter("bridge_sessions_failed_total", "Deprecated: bridge_call_failures_total.", ["reason"]),
)
CALL_SETUP_SECONDS = Histogram(
    "bridge_call_setup_seconds",
    "Offer to session.created.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
CHAT_TEXTS_DROPPED = Counter(
    "bridge_chat_texts_dropped_total",
    "Chat texts dropped unanswered: more arrived while a session had no model call up than it "
    "keeps for the next call (20).",
)
TOKENS_USED = Counter(
    "bridge_tokens_used_total",
    "Tokens used, by model and price kind (text_in, text_in_cached, audio_out, ...; the input "
    "transcription model's prefixed transcription_), as the cost is reckoned.",
    ["model", "kind"],
)
TOKENS = Counter(
    "bridge_tokens_total",
    "Deprecated: bridge_tokens_used_total (kinds input_text, input_audio, input_image, "
    "input_cached, output_text, output_audio, transcription_*).",
    ["kind"],
)
AUDIO_FRAMES_DROPPED = Counter(
    "bridge_audio_frames_dropped_total",
    "Audio frames dropped because a stage fell behind, by direction.",
    ["direction"],
)
WEBHOOKS = Counter("bridge_webhooks_total", "Webhook deliveries, by outcome.", ["outcome"])
HTTP_REJECTED = Counter(
    "bridge_http_rejected_total",
    "Requests to `serve`'s port refused for what the sender did (unparseable HTTP, over-long "
    "lines, bad signature or token, body too large), by reason.",
    ["reason"],
)
LIVEKIT_API_CALLS = Counter(
    "bridge_livekit_api_calls_total",
    "Calls to LiveKit's server API, by method and result (ok, refused, unreachable, timeout, or "
    "LiveKit's error code).",
    ["method", "result"],
)
RECONCILE_RUNS = Counter("bridge_reconcile_runs_total", "Reconcile passes, by result.", ["result"])
TOOL_CALLS = Counter(
    "bridge_tool_calls_total", "Tool calls, by tool and outcome.", ["tool", "outcome"]
)
TOOL_SECONDS = Histogram(
    "bridge_tool_seconds",
    "Time a tool call took, by tool.",
    ["tool"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
# LiveKit agent dispatch (bridge/service/agent_worker.py; the serve parent process only).
AGENT_OFFERS = Counter(
    "bridge_agent_offers_total",
    "LiveKit job offers, by outcome (accepted, already: a room we serve, refused).",
    ["outcome"],
)
AGENT_OFFERS_REFUSED = Counter(
    "bridge_agent_offers_refused_total", "Job offers refused, by reason.", ["reason"]
)
AGENT_OFFER_SECONDS = Histogram(
    "bridge_agent_offer_seconds",
    "Job offer received to answer sent.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 3.0),
)
AGENT_TERMINATIONS = Counter(
    "bridge_agent_terminations_total",
    "Job terminations from LiveKit, by what they led to (left, kept, unknown); orphan_left: a "
    "job of an earlier registration whose dispatch was found gone.",
    ["outcome"],
)
AGENT_REGISTERED = Gauge(
    "bridge_agent_registered",
    "1 while registered with LiveKit as an agent worker.",
    multiprocess_mode="livesum",
)
AGENT_REGISTRATIONS = Counter(
    "bridge_agent_registrations_total",
    "Agent-worker registration attempts, by result (ok, failed).",
    ["result"],
)
COST_USD = Counter(
    "bridge_cost_usd_total",
    "Model and transcription cost in USD, by model (priced by `prices`; unpriced usage not "
    "included).",
    ["model"],
)
BUDGET_EVENTS = Counter(
    "bridge_room_budget_total",
    "Rooms reaching their budget: `warning` at 80 %, `exceeded` when passed.",
    ["event"],
)
CONTEXT_ITEMS_ADDED = Counter(
    "bridge_context_items_added_total",
    "Text items added to model calls as context (meeting lines, history carried over).",
)
CONTEXT_ITEMS_TRIMMED = Counter(
    "bridge_context_items_trimmed_total",
    "Added items deleted from calls to stay under meeting_context_max_chars.",
)
# What a trace shows, as distributions (observed with the turn's or call's trace id as an
# exemplar, shown in the OpenMetrics exposition where prometheus_client keeps exemplars).
TURN_LATENCY_SECONDS = Histogram(
    "bridge_turn_latency_seconds",
    "A turn's latency as the room hears it: the human's speech end to the first answer audio "
    "published into the room.",
    buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0),
)
BARGE_IN_SECONDS = Histogram(
    "bridge_barge_in_seconds",
    "Barge-in: the human's speech onset during an answer to that answer's audio stopping in "
    "the room.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
)
JOIN_READY_SECONDS = Histogram(
    "bridge_join_ready_seconds",
    "A human's session started (they joined with a microphone) to their model call ready "
    "(the agent listening to them).",
    buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
SESSION_CAPACITY = Gauge(
    "bridge_session_capacity",
    "Sessions this process (serve: the pod) takes at most (`max_sessions`).",
    multiprocess_mode="livesum",
)


# ---- exemplars ---------------------------------------------------------------------------------

EXEMPLAR_FILE = "exemplars-{pid}.json"
# Bucket lines (metric name, labels as sorted items) -> the latest exemplar of this process.
_exemplars: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}


def observe(
    histogram: Histogram,
    value: float,
    exemplar: Mapping[str, str] | None = None,
    **labels: str,
) -> None:
    """``histogram`` (with ``labels``) observes ``value``; ``exemplar`` (a trace's ids, from
    ``bridge.tracing.spans.exemplar``) goes on the bucket it falls in."""
    target = histogram.labels(**labels) if labels else histogram
    target.observe(value, exemplar=dict(exemplar) if exemplar else None)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if exemplar and directory:
        bound = next(b for b in target._upper_bounds if value <= b)
        key = (
            f"{histogram._name}_bucket",
            tuple(sorted({**labels, "le": floatToGoString(bound)}.items())),  # type: ignore[no-untyped-call]
        )
        _exemplars[key] = {"exemplar": dict(exemplar), "value": value, "ts": time.time()}
        _write_exemplars(Path(directory))


def _write_exemplars(directory: Path) -> None:
    path = directory / EXEMPLAR_FILE.format(pid=os.getpid())
    rows = [
        {"name": name, "labels": dict(labels), **exemplar}
        for (name, labels), exemplar in _exemplars.items()
    ]
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(rows))
        tmp.replace(path)
    except OSError as exc:  # a full or read-only /tmp must not break a turn
        logger.debug("exemplars not written: %s", exc)


def read_exemplars(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], Exemplar]:
    """The newest exemplar per bucket line over every process's file."""
    newest: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    for path in directory.glob(EXEMPLAR_FILE.format(pid="*")):
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced, or a dead process's half-written file
        for row in rows if isinstance(rows, list) else []:
            try:
                key = (
                    str(row["name"]),
                    tuple(sorted((str(k), str(v)) for k, v in row["labels"].items())),
                )
                if key not in newest or row["ts"] > newest[key]["ts"]:
                    newest[key] = row
            except (KeyError, TypeError, AttributeError):
                continue
    return {
        key: Exemplar(
            {str(k): str(v) for k, v in row["exemplar"].items()},
            float(row["value"]),
            float(row["ts"]),
        )
        for key, row in newest.items()
        if isinstance(row.get("exemplar"), dict)
    }


class _WithExemplars:
    """The multiprocess collector's metrics with the files' exemplars on their bucket lines."""

    def __init__(self, inner: Collector, directory: Path) -> None:
        self._inner = inner
        self._directory = directory

    def collect(self) -> Iterable[Metric]:
        exemplars = read_exemplars(self._directory)
        for metric in self._inner.collect():
            if metric.type == "histogram" and exemplars:
                metric.samples = [
                    sample._replace(exemplar=exemplars.get(_key(sample), sample.exemplar))
                    for sample in metric.samples
                ]
            yield metric


def _key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))


def exposition(accept: str | None) -> tuple[bytes, str]:
    """This process's metrics (all of serve's processes in multiprocess mode) in the format the
    scraper asked for: OpenMetrics with exemplars, or the classic text format."""
    encode, content_type = choose_encoder(accept or "")
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return encode(REGISTRY), content_type
    from prometheus_client import multiprocess

    inner = CollectorRegistry()
    multiprocess.MultiProcessCollector(inner)  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(_WithExemplars(inner, Path(directory)))
    return encode(registry), content_type
