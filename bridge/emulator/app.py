"""The emulator's HTTP face: the Realtime API endpoints plus ``/v1/_emulator/...`` inspection.

    POST /v1/realtime/calls                  multipart (sdp + session) or raw SDP with an ek_ key
    POST /v1/realtime/client_secrets         mint an ek_ key bound to a session
    GET  /v1/realtime?model=…                the WebSocket transport (Bearer key or ek_ key)
    POST /v1/realtime/calls/{id}/hangup
    GET  /v1/models[/{model}]                the models it serves (bridge/emulator/models_api.py)
    GET  /v1/_emulator/calls[/{id}]          what each call saw (tests, benchmarks)
    GET|PATCH /v1/_emulator/options          the fake model's options and fault injection

Errors are OpenAI-shaped JSON (``{"error": {message, type, param, code}}``); no request can make
it answer 500 unless told to by ``fail_calls_status``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiortc import RTCPeerConnection
from pydantic import ValidationError

from bridge.emulator import models_api
from bridge.emulator.context import new_id
from bridge.emulator.model import session_from_request
from bridge.emulator.models_api import refuse_unserved
from bridge.emulator.options import EmulatorOptions
from bridge.emulator.peer import EmulatedCall, OfferError
from bridge.emulator.schema import check_session
from bridge.emulator.session import EmulatedSession
from bridge.emulator.websocket import WebSocketSession
from bridge.realtime.errors import redact
from bridge.realtime.ice import rtc_configuration
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
# Largest WebSocket message (an input_audio_buffer.append may carry up to 15 MiB of audio).
MAX_WS_MESSAGE = 16 * 1024 * 1024
BETA_MESSAGE = (
    "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
)
# Ended calls kept for inspection.
MAX_ENDED_CALLS = 500


@dataclass
class _Secret:
    session: dict[str, Any]
    expires_at: float


def openai_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class Emulator:
    """State shared by the routes; ``aclose()`` ends every call."""

    def __init__(self, settings: Settings, options: EmulatorOptions) -> None:
        self.settings = settings
        self.options = options
        # WebRTC calls (rtc_ ids) and WebSocket sessions (sess_ ids), live and recently ended.
        self.calls: dict[str, EmulatedSession] = {}
        self.secrets: dict[str, _Secret] = {}
        # (time.monotonic(), status) of each authorised POST /calls that an injected failure
        # answered, or None when it went on to be answered: for storm benchmarks.
        self.call_posts: deque[tuple[float, int | None]] = deque(maxlen=10_000)

    # ---- auth ---------------------------------------------------------------------------------

    def _presented_key(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth.removeprefix("Bearer ").strip()
        return request.headers.get("api-key")  # Azure's header

    def _authorize(
        self, request: web.Request, *, allow_ephemeral: bool
    ) -> tuple[str, web.Response | None]:
        key = self._presented_key(request)
        if not key:
            return "", openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )
        if key == self.options.api_key.get_secret_value():
            return key, None
        if allow_ephemeral and key.startswith("ek_"):
            secret = self.secrets.get(key)
            if secret is not None and secret.expires_at > time.time():
                return key, None
        shown = redact(key) if len(key) > 8 else "***"
        return "", openai_error(
            401, f"Incorrect API key provided: {shown}.", code="invalid_api_key"
        )

    # ---- routes -------------------------------------------------------------------------------

    async def create_call(self, request: web.Request) -> web.StreamResponse:
        key, denied = self._authorize(request, allow_ephemeral=True)
        if denied is not None:
            return denied
        if "realtime=v1" in request.headers.get("OpenAI-Beta", ""):
            return openai_error(
                400,
                "The Realtime API beta is shut down; remove the OpenAI-Beta header and use the "
                "GA interface.",
                code="beta_api_shape_disabled",
            )
        if self.options.calls_delay_ms:
            await asyncio.sleep(self.options.calls_delay_ms / 1000)
        injected = self._injected_failure()
        self.call_posts.append((time.monotonic(), injected.status if injected else None))
        if injected is not None:
            return injected
        if request.content_length is not None and request.content_length > MAX_BODY:
            return openai_error(413, "Request body too large.")
        offer = await self._read_offer(request, key)
        if isinstance(offer, web.Response):
            return offer
        offer_sdp, requested = offer
        problem = check_session(requested)
        if problem is not None:
            return openai_error(400, problem.message, param=problem.param, code=problem.code)
        refused = refuse_unserved(requested)
        if refused is not None:
            return refused

        call_id = new_id("rtc")
        pc = RTCPeerConnection(rtc_configuration(self.settings))
        call = EmulatedCall(call_id, session_from_request(requested), self.options, pc)
        try:
            answer = await call.answer(offer_sdp)
        except OfferError as exc:
            await call.aclose()
            return openai_error(400, str(exc), param="sdp", code="invalid_offer")
        self._remember(call)
        logger.info("call %s created", call_id)
        return web.Response(
            status=201,
            body=answer.encode(),
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{call_id}"},
        )

    async def connect_websocket(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/realtime?model=…`` upgraded to a WebSocket: a session over the WebSocket
        transport, served until either side closes."""
        key, denied = self._authorize(request, allow_ephemeral=True)
        if denied is not None:
            return denied
        if "call_id" in request.query or request.query.get("intent") == "transcription":
            return openai_error(
                400,
                "The emulator serves realtime sessions only (no call_id sideband, no "
                "transcription intent).",
                param="call_id" if "call_id" in request.query else "intent",
            )
        injected = self._injected_failure()
        if injected is not None:
            return injected
        secret = self.secrets.get(key)
        model = request.query.get("model")
        if secret is not None:
            requested = secret.session
        elif model:
            requested = {"type": "realtime", "model": model}
        else:
            return openai_error(
                400,
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
        problem = check_session(requested)
        if problem is not None:
            return openai_error(400, problem.message, param=problem.param, code=problem.code)
        refused = refuse_unserved(requested)
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, autoping=True)
        if not ws.can_prepare(request).ok:
            return openai_error(400, "This endpoint expects a WebSocket upgrade.")
        await ws.prepare(request)
        if "realtime=v1" in request.headers.get("OpenAI-Beta", ""):
            # What the service does with the retired beta shape: an error event, then close 4000.
            error = {
                "type": "invalid_request_error",
                "code": "beta_api_shape_disabled",
                "message": BETA_MESSAGE,
                "param": None,
            }
            await ws.send_json({"type": "error", "event_id": new_id("event"), "error": error})
            await ws.close(code=4000, message=b"invalid_request_error.beta_api_shape_disabled")
            return ws
        session = WebSocketSession(
            new_id("sess"), session_from_request(requested), self.options, ws, request
        )
        self._remember(session)
        logger.info("websocket session %s opened", session.id)
        await session.run()
        return ws

    def _injected_failure(self) -> web.Response | None:
        options = self.options
        if options.fail_calls_count <= 0 or options.fail_calls_status is None:
            return None
        options.fail_calls_count -= 1
        if options.fail_calls_status == 429:
            return openai_error(
                429,
                "Rate limit reached for requests. Please try again in a moment.",
                error_type="requests",
                code="rate_limit_exceeded",
            )
        return openai_error(
            options.fail_calls_status,
            "The server had an error processing your request.",
            error_type="server_error",
        )

    async def _read_offer(
        self, request: web.Request, key: str
    ) -> tuple[str, dict[str, Any]] | web.Response:
        ctype = request.content_type
        if ctype == "multipart/form-data":
            parsed = await self._read_multipart(request)
            if isinstance(parsed, web.Response):
                return parsed
            offer, requested = parsed
        elif ctype == "application/sdp":
            offer = (await request.read()).decode("utf-8", errors="replace")
            secret = self.secrets.get(key)
            if secret is not None:
                requested = secret.session
            else:
                model = request.query.get("model")
                requested = {"type": "realtime", **({"model": model} if model else {})}
        else:
            return openai_error(
                400,
                f"Unsupported content type: '{ctype}'. Send multipart/form-data with 'sdp' and "
                "'session' parts, or application/sdp with an ephemeral key.",
            )
        if not offer.strip():
            return openai_error(
                400,
                "Missing required parameter: 'sdp'.",
                param="sdp",
                code="missing_required_parameter",
            )
        return offer, requested

    async def _read_multipart(
        self, request: web.Request
    ) -> tuple[str, dict[str, Any]] | web.Response:
        parts: dict[str, str] = {}
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                data = await part.read(decode=False)
                if len(data) > MAX_BODY:
                    return openai_error(413, "Request body too large.")
                parts[part.name] = data.decode("utf-8")
        except (ValueError, AssertionError, UnicodeDecodeError, HttpProcessingError) as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            return openai_error(400, f"Malformed multipart body: {detail}")
        if "sdp" not in parts:
            return openai_error(
                400,
                "Missing required parameter: 'sdp'.",
                param="sdp",
                code="missing_required_parameter",
            )
        if "session" not in parts:
            return openai_error(
                400,
                "Missing required parameter: 'session'.",
                param="session",
                code="missing_required_parameter",
            )
        try:
            session = json.loads(parts["session"])
        except json.JSONDecodeError as exc:
            return openai_error(400, f"Invalid 'session': not JSON ({exc.msg}).", param="session")
        return parts["sdp"], session

    async def create_client_secret(self, request: web.Request) -> web.Response:
        _, denied = self._authorize(request, allow_ephemeral=False)
        if denied is not None:
            return denied
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return openai_error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return openai_error(400, "The body must be a JSON object.")
        unknown = set(body) - {"expires_after", "session"}
        if unknown:
            name = sorted(unknown)[0]
            return openai_error(
                400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"
            )
        expires = body.get("expires_after") or {"anchor": "created_at", "seconds": 600}
        seconds = expires.get("seconds", 600) if isinstance(expires, dict) else None
        if (
            not isinstance(seconds, int)
            or not 10 <= seconds <= 7200
            or expires.get("anchor", "created_at") != "created_at"
        ):
            return openai_error(
                400,
                "Invalid 'expires_after': anchor must be 'created_at' and seconds 10..7200.",
                param="expires_after",
            )
        requested = body.get("session") or {"type": "realtime"}
        problem = check_session(requested)
        if problem is not None:
            return openai_error(400, problem.message, param=problem.param, code=problem.code)
        value = "ek_" + secrets.token_hex(16)
        expires_at = int(time.time()) + seconds
        self.secrets[value] = _Secret(session=requested, expires_at=expires_at)
        self._forget_expired_secrets()
        session = {**session_from_request(requested), "id": new_id("sess")}
        return web.json_response({"value": value, "expires_at": expires_at, "session": session})

    async def hangup(self, request: web.Request) -> web.Response:
        _, denied = self._authorize(request, allow_ephemeral=True)
        if denied is not None:
            return denied
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            return openai_error(404, "Call not found.", code="call_not_found")
        await call.end("hangup")
        return web.Response(status=200)

    async def list_calls(self, request: web.Request) -> web.Response:
        return web.json_response([call.snapshot() for call in self.calls.values()])

    async def get_call(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            return openai_error(404, "Call not found.", code="call_not_found")
        return web.json_response(call.snapshot())

    async def fault(self, request: web.Request) -> web.Response:
        """``POST /v1/_emulator/calls/{id}/expire|drop``: end one live call now, as the service
        would at its session limit, or as a lost connection would."""
        call = self.calls.get(request.match_info["call_id"])
        if call is None or call.state != "active":
            return openai_error(404, "No active call with that id.", code="call_not_found")
        if request.match_info["fault"] == "expire":
            await call.expire()
        else:
            await call.end("dropped")
        return web.json_response(call.snapshot())

    async def get_options(self, request: web.Request) -> web.Response:
        return web.json_response(self.options.model_dump())

    async def patch_options(self, request: web.Request) -> web.Response:
        try:
            update = await request.json()
            if not isinstance(update, dict) or "api_key" in update:
                raise ValueError("a JSON object of options (api_key cannot change)")
            merged = EmulatorOptions.model_validate(
                {**self.options.model_dump(), "api_key": self.options.api_key, **update}
            )
        except (ValueError, ValidationError, json.JSONDecodeError) as exc:
            message = str(exc).splitlines()[0]
            return openai_error(400, f"Invalid options: {message}")
        for name in update:
            setattr(self.options, name, getattr(merged, name))
        return web.json_response(self.options.model_dump())

    # ---- bookkeeping ---------------------------------------------------------------------------

    def _remember(self, call: EmulatedSession) -> None:
        self.calls[call.id] = call
        ended = [c for c in self.calls.values() if c.state == "ended"]
        for old in ended[: max(0, len(ended) - MAX_ENDED_CALLS)]:
            del self.calls[old.id]

    def _forget_expired_secrets(self) -> None:
        now = time.time()
        for value in [v for v, s in self.secrets.items() if s.expires_at <= now]:
            del self.secrets[value]

    async def aclose(self) -> None:
        for call in list(self.calls.values()):
            await call.aclose()


EMULATOR_KEY = web.AppKey("emulator", Emulator)


def create_app(settings: Settings, options: EmulatorOptions) -> web.Application:
    emulator = Emulator(settings, options)
    app = web.Application(client_max_size=MAX_BODY)
    app[EMULATOR_KEY] = emulator
    app.router.add_post("/v1/realtime/calls", emulator.create_call)
    app.router.add_routes(
        models_api.routes(lambda request: emulator._authorize(request, allow_ephemeral=False)[1])
    )
    app.router.add_get("/v1/realtime", emulator.connect_websocket)
    app.router.add_post("/v1/realtime/client_secrets", emulator.create_client_secret)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", emulator.hangup)
    app.router.add_get("/v1/_emulator/calls", emulator.list_calls)
    app.router.add_get("/v1/_emulator/calls/{call_id}", emulator.get_call)
    app.router.add_post("/v1/_emulator/calls/{call_id}/{fault:expire|drop}", emulator.fault)
    app.router.add_get("/v1/_emulator/options", emulator.get_options)
    app.router.add_patch("/v1/_emulator/options", emulator.patch_options)

    async def on_shutdown(app: web.Application) -> None:
        await emulator.aclose()

    app.on_shutdown.append(on_shutdown)
    return app


class EmulatorServer:
    """The emulator on ``host:port`` (port 0 picks a free one). ``async with`` it, or
    ``start()`` / ``aclose()``. ``base_url`` is what OPENAI_BASE_URL should be."""

    def __init__(
        self,
        settings: Settings,
        options: EmulatorOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.app = create_app(settings, options or EmulatorOptions())
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def emulator(self) -> Emulator:
        return self.app[EMULATOR_KEY]

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}/v1"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        if self._port == 0:
            self._port = int(self._runner.addresses[0][1])
        logger.info("emulator listening on %s", self.base_url)

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
