"""Prometheus metrics. Module-level collectors in the default registry; ``serve`` exposes them at
``/metrics`` (worker processes report theirs to the HTTP process, see bridge/service/workers.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Gauges add up across worker processes (prometheus_client multiprocess mode, see
# bridge/service/workers.py).
ROOMS_ACTIVE = Gauge("bridge_rooms_active", "Rooms with an agent.", multiprocess_mode="livesum")
SESSIONS_ACTIVE = Gauge(
    "bridge_sessions_active", "Human sessions with a live model call.", multiprocess_mode="livesum"
)
SESSIONS_STARTED = Counter("bridge_sessions_started_total", "Model calls connected.")
SESSIONS_FAILED = Counter(
    "bridge_sessions_failed_total", "Model calls that failed, by reason.", ["reason"]
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
TOKENS = Counter("bridge_tokens_total", "Model tokens used, by kind.", ["kind"])
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
