"""The spans above the turns: a room, each human's session in it, and each model call of a
session (``TurnTracer`` hangs a call's turns under its span).

    room     livekit.room.name, bridge.mode, bridge.audience, the agent's identity and name;
             a child of the dispatch that brought the agent in (its context travels into the
             worker process), else a root span
    session  one human: their identity; ``ready`` (joined -> their first call up) as an event
             and in ``bridge_join_ready_seconds``
    call     the model, the provider, the call id, its connect steps as events, how it ended;
             ``bridge_call_setup_seconds`` when it connects

Nothing here is a transcript, a key or a token.
"""

from __future__ import annotations

import time

from bridge.metrics import CALL_SETUP_SECONDS, JOIN_READY_SECONDS, observe
from bridge.settings.config import Settings
from bridge.tracing import genai, spans
from bridge.tracing.turns import TurnTracer, wall_ns


def room_span(settings: Settings, *, room: str, agent_identity: str) -> spans.Span:
    """The room's span, under the current context: the dispatch that brought the agent in (its
    context is the current one in a worker process: bridge/service/workers.py), else a trace
    of its own."""
    return spans.start_span(
        "room",
        None,
        {
            "livekit.room.name": room,
            "bridge.mode": settings.mode,
            "bridge.audience": settings.audience,
            "livekit.agent.identity": agent_identity,
            "livekit.agent.name": settings.agent_name,
        },
        kind=spans.SpanKind.CONSUMER,
    )


class SessionTrace:
    """One human's session: a span under the room's, ended with the session."""

    def __init__(self, room: spans.Span, *, identity: str, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self.span = spans.start_span(
            "session",
            room,
            {"livekit.participant.identity": identity},
            start_time_ns=wall_ns(self.started),
        )
        self._ready = False

    def ready(self, at: float | None = None) -> None:
        """Their first call is up and listening (once per session)."""
        if self._ready:
            return
        self._ready = True
        at = time.monotonic() if at is None else at
        seconds = max(0.0, at - self.started)
        self.span.add_event("ready", {"bridge.join_ready.seconds": round(seconds, 3)}, wall_ns(at))
        observe(JOIN_READY_SECONDS, seconds, spans.exemplar(self.span))

    def end(self, reason: str) -> None:
        self.span.set_attribute("bridge.session.end", reason)
        spans.end_span(self.span)


class CallTrace:
    """One model call: a span under the session's (or the room's, in shared mode), its connect
    steps as events, and the tracer of its turns."""

    def __init__(
        self,
        parent: spans.Span,
        *,
        model: str,
        provider: str,
        content: bool,
        reason: str = "start",
    ) -> None:
        self.started = time.monotonic()
        self.span = spans.start_span(
            f"call {model}",
            parent,
            {
                **genai.call_attributes(provider=provider, model=model, call_id=None),
                "bridge.call.reason": reason,  # start, retry, rollover
            },
            kind=spans.SpanKind.CLIENT,
            start_time_ns=wall_ns(self.started),
        )
        self.turns = TurnTracer(self.span, model=model, content=content)
        self._ended = False

    def step(self, name: str, at: float | None = None) -> None:
        """A connect step (``offer``, ``answer``, ``connected``, ...)."""
        self.span.add_event(name, timestamp=wall_ns(time.monotonic() if at is None else at))

    def connected(self, call_id: str | None, seconds: float | None = None) -> None:
        """Up (``seconds``: offer to session.created as the call measured it; default since
        this trace began)."""
        at = time.monotonic()
        if call_id:
            self.span.set_attribute(genai.CONVERSATION_ID, call_id)
            self.span.set_attribute("bridge.call.id", call_id)
        seconds = max(0.0, at - self.started) if seconds is None else seconds
        self.span.add_event(
            "connected", {"bridge.call.setup_seconds": round(seconds, 3)}, wall_ns(at)
        )
        observe(CALL_SETUP_SECONDS, seconds, spans.exemplar(self.span))

    def end(self, how: str, *, error: str | None = None) -> None:
        """``how``: hung up, dropped, failed to connect, rolled over, session ended, ..."""
        if self._ended:
            return
        self._ended = True
        self.turns.close("call ended")
        self.span.set_attribute("bridge.call.end", how)
        spans.end_span(self.span, error=error)
