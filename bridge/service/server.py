"""The dispatch service's HTTP face (``room-bridge serve``).

    POST   /webhook          LiveKit room webhooks (signed JWT; see bridge/service/dispatch.py)
    POST   /dispatch         {"room": R, "overrides": {...}}  join now   (Bearer dispatch_token)
    DELETE /dispatch/{room}  leave                                       (Bearer dispatch_token)
    GET    /healthz          alive: the event loop answers in time
    GET    /readyz           takes rooms: not draining, below capacity, workers up, LiveKit seen
    GET    /metrics          Prometheus text (all worker processes summed)
    GET    /status           JSON: workers, rooms, sessions (for operators; no secrets)

Webhooks are answered at once (joins run in the background); a bad webhook gets a 4xx and a log
line, never a join. Shutdown is a short sequence (see ``BridgeServer.drain``): stop taking rooms,
let live sessions finish up to ``drain_timeout``, then end them cleanly and exit.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from google.protobuf.json_format import ParseError
from livekit import api
from pydantic import ValidationError

from bridge.aio import TaskSet
from bridge.billing.models import describe
from bridge.logs import one_line
from bridge.metrics import WEBHOOKS, exposition
from bridge.service.agent_worker import AgentWorker
from bridge.service.dispatch import Dispatcher, Outcome, Rooms
from bridge.service.http_guard import Rejections
from bridge.service.livekit_api import LiveKitServerAPI
from bridge.service.start_checks import ModelWatch
from bridge.settings.config import SessionOverrides, Settings, apply_overrides
from bridge.tracing import spans

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
WEBHOOK_PATH = "/webhook"
WEBHOOK_CONTENT_TYPES = ("application/webhook+json", "application/json")
# The event loop must have ticked within this long for /healthz to pass.
LOOP_STALL_SECONDS = 5.0
MAX_DISPATCH_BYTES = 64 * 1024
# A webhook's body must arrive within this long (LiveKit sends a few KB at once).
WEBHOOK_BODY_SECONDS = 10.0


def _json(http_status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=http_status)


class BridgeServer:
    def __init__(self, settings: Settings, rooms: Rooms, *, workers_alive: Any = None) -> None:
        self.settings = settings
        self.rooms = rooms
        # LiveKit's server API: one client for the dispatcher's checks and the agent worker's.
        self.lkapi = LiveKitServerAPI(settings)
        self.dispatcher = Dispatcher(settings, rooms, self.lkapi)
        self.model_watch = ModelWatch(settings, on_change=self.dispatcher.changed)
        self.dispatcher.blocker = self.model_watch.not_ready
        # LiveKit agent dispatch: one registration per serve instance, here in the parent.
        self.agent = (
            AgentWorker(settings, self.dispatcher, self.lkapi) if settings.agent_dispatch else None
        )
        assert settings.livekit_api_key and settings.livekit_api_secret
        self._receiver = api.WebhookReceiver(
            api.TokenVerifier(
                settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()
            )
        )
        self._workers_alive = workers_alive
        # Refusals of what a sender did: counted, and logged at most once a second per reason.
        self.rejections = Rejections()
        self._tasks = TaskSet("server")
        self._last_tick = time.monotonic()
        self.loop_lag = 0.0
        self.started = time.monotonic()

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=max(self.settings.webhook_max_bytes, MAX_DISPATCH_BYTES)
        )
        app.router.add_post(WEBHOOK_PATH, self.webhook)
        app.router.add_post("/dispatch", self.dispatch)
        app.router.add_delete("/dispatch/{room}", self.undispatch)
        app.router.add_get(HEALTH_PATH, self.healthz)
        app.router.add_get(READY_PATH, self.readyz)
        app.router.add_get(METRICS_PATH, self.metrics)
        app.router.add_get("/status", self.status)
        app.router.add_get("/rooms", self.list_rooms)
        return app

    def start(self) -> None:
        self._tasks.create_task(self._tick(), name="loop-monitor")
        self._tasks.create_task(self.model_watch.run(), name="model-check")
        self.dispatcher.start()
        if self.agent is not None:
            self.agent.start()

    async def aclose(self) -> None:
        if self.agent is not None:
            await self.agent.aclose()
        await self._tasks.aclose()
        await self.dispatcher.aclose()
        await self.lkapi.aclose()

    async def _tick(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.5)
            now = time.monotonic()
            self.loop_lag = max(0.0, now - before - 0.5)
            self._last_tick = now

    # ---- webhooks ------------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        # A join it starts continues this span's trace (bridge/service/dispatch.py).
        with spans.current_span("webhook", kind=spans.SpanKind.SERVER) as span:
            outcome = await self._webhook(request)
            span.set_attribute("bridge.dispatch.outcome", outcome.outcome)
        WEBHOOKS.labels(outcome.outcome).inc()
        status = 503 if outcome.retry_elsewhere else _STATUS.get(outcome.outcome, 200)
        return _json(status, outcome=outcome.outcome, detail=outcome.detail)

    async def _webhook(self, request: web.Request) -> Outcome:
        def reject(outcome: str, detail: str) -> Outcome:
            status = _STATUS.get(outcome, 400)
            self.rejections.reject(f"webhook_{outcome}", status, detail, request.remote)
            return Outcome(outcome, detail)

        limit = self.settings.webhook_max_bytes
        if request.content_length is not None and request.content_length > limit:
            return reject("too_large", f"body over {limit} bytes")
        auth = request.headers.get("Authorization", "")
        if not auth:
            return reject("unauthorized", "no Authorization header")
        if request.content_type not in WEBHOOK_CONTENT_TYPES:
            return reject("bad_request", f"content type {one_line(request.content_type, 60)!r}")
        chunks: list[bytes] = []
        size = 0
        try:
            # Before the signature is checked anyone may send this body, as slowly as they like.
            async with asyncio.timeout(WEBHOOK_BODY_SECONDS):
                async for chunk in request.content.iter_chunked(16_384):
                    size += len(chunk)
                    if size > limit:
                        return reject("too_large", f"body over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            return reject("timeout", f"body not received within {WEBHOOK_BODY_SECONDS:g} s")
        body = b"".join(chunks)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return reject("bad_request", "body is not UTF-8")
        try:
            event = self._receiver.receive(text, auth.removeprefix("Bearer ").strip())
        except ParseError as exc:
            return reject("bad_request", f"not a webhook event: {one_line(str(exc), 120)}")
        except Exception as exc:  # jwt and livekit raise plain exceptions
            return reject("unauthorized", f"signature check failed: {one_line(str(exc), 120)}")
        spans.current().set_attributes(
            {"livekit.webhook.event": event.event, "livekit.room.name": event.room.name}
        )
        try:
            outcome = await self.dispatcher.on_webhook(event)
        except Exception:  # a bug; reconcile heals what this webhook would have done
            logger.exception("webhook %s could not be handled", one_line(event.event, 40))
            return Outcome("error", "could not be handled")
        # One line per event that could bring or end an agent; the rest (tracks, participants
        # leaving, egress...) need nothing and would only bury those lines.
        level = logging.INFO if event.event in _ROOM_EVENTS else logging.DEBUG
        logger.log(
            level,
            "webhook %s: %s%s",
            one_line(event.event, 40) or "?",
            outcome.outcome,
            f" ({outcome.detail})" if outcome.detail else "",
            extra={
                "room": event.room.name or None,
                "participant": event.participant.identity or None,
                "event_id": one_line(event.id, 60),
            },
        )
        return outcome

    # ---- dispatch API ----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> web.Response | None:
        token = self.settings.dispatch_token
        if token is None or not token.get_secret_value():
            self.rejections.reject("api_disabled", 404, "dispatch API off", request.remote)
            return _json(404, error="dispatch API disabled: set BRIDGE_DISPATCH_TOKEN")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            self.rejections.reject("api_unauthorized", 401, "bearer token", request.remote)
            return _json(401, error="missing or wrong bearer token")
        return None

    async def dispatch(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("room"), str):
                raise ValueError('body must be {"room": NAME, "overrides": {...}}')
            room = body["room"].strip()
            if not room or len(room) > 256:
                raise ValueError("room name must be 1..256 characters")
            unknown = set(body) - {"room", "overrides"}
            if unknown:
                raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
            overrides = (
                SessionOverrides.model_validate(body["overrides"])
                if body.get("overrides")
                else None
            )
            # Consistent with the settings, and tools only selected among the configured ones.
            apply_overrides(self.settings, overrides)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            return _json(400, error=f"invalid overrides: {where}: {err['msg']}")
        except RecursionError:  # JSON nested deeper than the parser goes
            return _json(400, error="body is not usable JSON (nested too deep)")
        except (ValueError, json.JSONDecodeError) as exc:
            return _json(400, error=one_line(str(exc).splitlines()[0], 200))
        attributes = {"livekit.room.name": room}
        with spans.current_span("dispatch request", attributes, kind=spans.SpanKind.SERVER) as span:
            outcome = self.dispatcher.dispatch(room, overrides)
            span.set_attribute("bridge.dispatch.outcome", outcome.outcome)
        logger.info("dispatch %s: %s", room, outcome.outcome, extra={"room": room})
        if outcome.retry_elsewhere:
            return _json(503, room=room, status=outcome.outcome, detail=outcome.detail)
        status = 202 if outcome.outcome == "accepted" else 200
        return _json(status, room=room, status=outcome.outcome)

    async def undispatch(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        room = request.match_info["room"]
        if self.dispatcher.undispatch(room):
            logger.info("undispatch %s: leaving", room, extra={"room": room})
            return _json(202, room=room, status="leaving")
        return _json(404, room=room, error="no agent of ours in that room")

    # ---- probes and metrics ------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        stalled = time.monotonic() - self._last_tick
        if stalled > LOOP_STALL_SECONDS:
            return _json(503, status="event loop stalled", stalled_s=round(stalled, 1))
        return _json(200, status="ok", loop_lag_ms=round(self.loop_lag * 1000, 1))

    def not_ready(self) -> list[str]:
        reasons = []
        takes, why = self.dispatcher.takes_rooms()
        if not takes:
            reasons.append(why)
        if self._workers_alive is not None and self._workers_alive() == 0:
            reasons.append("no worker process is running")
        seen = self.lkapi.last_ok
        grace = max(10.0, 3 * self.settings.reconcile_interval)
        if self.lkapi.refused or time.monotonic() - (seen or self.started) > grace:
            reasons.append(self.lkapi.last_error or "LiveKit server API: no answer yet")
        return reasons

    async def readyz(self, request: web.Request) -> web.Response:
        reasons = self.not_ready()
        if reasons:
            return _json(503, status="not ready", reasons=reasons)
        return _json(200, status="ready")

    async def metrics(self, request: web.Request) -> web.Response:
        # OpenMetrics (with exemplars: trace ids on histogram buckets) when the scraper asks.
        payload, content_type = exposition(request.headers.get("Accept"))
        return web.Response(body=payload, headers={"Content-Type": content_type})

    async def status(self, request: web.Request) -> web.Response:
        describe = getattr(self.rooms, "describe", None)
        return _json(
            200,
            draining=self.dispatcher.draining,
            sessions=self.dispatcher.sessions,
            max_sessions=self.settings.max_sessions,
            rooms={r: i.as_dict() for r, i in self.rooms.rooms().items()},
            workers=describe() if describe is not None else [],
            agent_dispatch=self.agent.describe() if self.agent is not None else None,
            models=self.models(),
            outside={
                "livekit_api": self.lkapi.last_error or ("ok" if self.lkapi.last_ok else None),
                "model_service": (
                    self.model_watch.problem.line
                    if self.model_watch.problem
                    else ("ok" if self.model_watch.checked else None)
                ),
            },
        )

    def models(self) -> dict[str, Any]:
        """The model and the transcription model: status (current, deprecated, shut down,
        unknown), shutdown date and replacement, from the model table."""
        today = datetime.now(UTC).date()
        found: dict[str, Any] = {"model": describe(self.settings.model, today)}
        if self.settings.transcription_model:
            found["transcription_model"] = describe(self.settings.transcription_model, today)
        return found

    async def list_rooms(self, request: web.Request) -> web.Response:
        """``GET /rooms`` (dispatch token): each room's humans, state, duration, tokens, cost
        and budget so far (worker processes report theirs every second)."""
        denied = self._authorized(request)
        if denied is not None:
            return denied
        rooms = {name: info.report() for name, info in self.rooms.rooms().items()}
        return _json(200, rooms=rooms)

    # ---- shutdown -------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop taking rooms and wait (up to drain_timeout) for the live ones to end by
        themselves. The caller then ends what is left."""
        self.dispatcher.draining = True
        deadline = time.monotonic() + self.settings.drain_timeout
        rooms = self.rooms.rooms()
        logger.info(
            "draining: %d rooms, %d sessions; up to %.0f s",
            len(rooms),
            self.dispatcher.sessions,
            self.settings.drain_timeout,
        )
        # Rooms end in the worker processes; their status arrives every second, so polling the
        # merged view is as precise as waiting on it.
        while self.rooms.rooms() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        left = len(self.rooms.rooms())
        if left:
            logger.info("drain timeout: ending %d rooms now", left)


_ROOM_EVENTS = frozenset({"room_started", "participant_joined", "room_finished"})
_STATUS = {
    "error": 400,
    "timeout": 408,
    "too_large": 413,
    "unauthorized": 401,
    "bad_request": 400,
    "invalid": 400,
}
