"""The page ``room-bridge dev`` serves on loopback: talk to the AI from a browser.

``GET /`` is the page (``bridge/local/page/``, package data: HTML, CSS and the livekit-client
bundle built from ``bridge/local/page_src/``); ``POST /token`` with ``{"name": ...}`` answers
what the page needs to join the dev room: the LiveKit URL, a short-lived token for a fresh
identity, and which model answers (the emulator or the real API). Requests whose ``Host`` is not
this loopback address are refused, so another web site cannot reach the token endpoint through
DNS rebinding."""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from bridge.local.tokens import participant_token

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_NAME = 40
MAX_BODY = 4096
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
_FILES = ("index.html", "page.css", "page.js")


@dataclass(frozen=True)
class Room:
    """What the page is told about the room it joins."""

    livekit_url: str
    api_key: str
    api_secret: str
    name: str
    agent_identity: str
    model: str  # "emulator" | "openai"
    model_label: str
    audience: str
    agent_timeout_s: float = 20.0
    # The page's tokens ask for this agent by name (LiveKit agent dispatch).
    agent_name: str = ""


class NameError_(ValueError):
    pass


def clean_name(raw: Any) -> str:
    """The display name a visitor typed, or a one-line reason it is refused."""
    if not isinstance(raw, str):
        raise NameError_("name must be a string")
    name = " ".join(raw.split())
    if not name:
        raise NameError_("type a name first")
    if len(name) > MAX_NAME:
        raise NameError_(f"a name has at most {MAX_NAME} characters")
    if not name.isprintable():
        raise NameError_("a name has printable characters only")
    return name


def identity_for(name: str) -> str:
    """A fresh identity per join, so two tabs with one name are two people."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "guest"
    return f"{slug}-{secrets.token_hex(3)}"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class PageServer:
    """An aiohttp site on 127.0.0.1 serving the page and its token endpoint."""

    def __init__(self, room: Room, port: int = 0) -> None:
        self._room = room
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._check_host], client_max_size=MAX_BODY)
        app.router.add_get("/", self._index)
        for name in _FILES[1:]:
            app.router.add_get(f"/{name}", self._static)
        app.router.add_post("/token", self._token)
        return app

    @web.middleware
    async def _check_host(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.host not in {f"{HOST}:{self.port}", f"localhost:{self.port}"}:
            return _error(421, "this page answers on 127.0.0.1 only")
        response: web.StreamResponse = await handler(request)
        return response

    async def _index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        return self._file(request.path.lstrip("/"))

    def _file(self, name: str) -> web.Response:
        body = resources.files("bridge.local").joinpath("page", name).read_bytes()
        suffix = name[name.rfind(".") :]
        return web.Response(
            body=body,
            content_type=_TYPES[suffix],
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _error(415, 'send JSON: {"name": ...}')
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise NameError_('send a JSON object: {"name": ...}')
            name = clean_name(body.get("name"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the request body is not JSON")
        except NameError_ as exc:
            return _error(400, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "request too large")
        room = self._room
        identity = identity_for(name)
        token = participant_token(
            room.api_key,
            room.api_secret,
            room=room.name,
            identity=identity,
            name=name,
            agent=room.agent_name,
        )
        logger.info("page: %s joins room %s as %s", name, room.name, identity)
        return web.json_response(
            {
                "url": room.livekit_url,
                "token": token,
                "room": room.name,
                "identity": identity,
                "name": name,
                "agent_identity": room.agent_identity,
                "model": room.model,
                "model_label": room.model_label,
                "audience": room.audience,
                "agent_timeout_s": room.agent_timeout_s,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, HOST, self._port).start()
        except OSError as exc:
            if self._port == 0:
                await self.aclose()
                raise OSError(f"cannot serve the page on {HOST}: {exc.strerror}") from None
            # The usual port is taken (another dev stack?): any free one will do.
            logger.warning("port %d is taken (%s); the page uses a free port", self._port, exc)
            await web.TCPSite(runner, HOST, 0).start()
        self.port = runner.addresses[0][1]

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> PageServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
