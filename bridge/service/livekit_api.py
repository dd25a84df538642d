"""LiveKit's server API (Twirp over HTTP), as the service side uses it: one owner of the client.

    lk = LiveKitServerAPI(settings)
    rooms = await lk.list_rooms()                  # every call has a timeout
    people = await lk.list_participants("r")       # a room that is gone: []
    dispatches = await lk.list_dispatch("r")
    await lk.aclose()

Every failure is one ``LiveKitAPIError`` whose message is a short line naming the server (its
URL; never the secret) and what went wrong, and whose ``retryable`` says whether trying again
later may help: LiveKit unreachable, slow or failing inside (yes), LiveKit refusing our key or
secret, or the request (no: someone has to change something). Callers catch only this type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from livekit import api
from livekit.protocol import agent_dispatch, models

from bridge.logs import network_reason, one_line
from bridge.metrics import LIVEKIT_API_CALLS
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)

API_TIMEOUT = 10.0
T = TypeVar("T")

# Twirp error codes that mean LiveKit refused who we are.
_REFUSED = frozenset({"unauthenticated", "permission_denied"})
# Twirp error codes that may pass by themselves.
_TRANSIENT = frozenset(
    {"unavailable", "internal", "deadline_exceeded", "resource_exhausted", "aborted", "unknown"}
)


class LiveKitAPIError(Exception):
    """A LiveKit server-API call failed. ``retryable``: trying again later may help."""

    def __init__(self, message: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


def describe_connection_error(exc: BaseException) -> str:
    """A short reason for a failed connection ("connection refused", "name not resolved")."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not resolved"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    return network_reason(exc) or one_line(str(exc) or type(exc).__name__, 120)


def refused(where: str, key: str, status: int | str) -> str:
    """The line for LiveKit refusing our credentials."""
    return (
        f"LiveKit at {where} refused the API key {key!r} or its secret ({status}): check "
        "LIVEKIT_API_KEY and LIVEKIT_API_SECRET against the server's keys"
    )


class LiveKitServerAPI:
    """The server-API client of one ``serve`` process, made on first use."""

    def __init__(self, settings: Settings, *, timeout: float = API_TIMEOUT) -> None:
        assert settings.livekit_api_key and settings.livekit_api_secret
        self.settings = settings
        self.url = settings.livekit_http_url
        self.timeout = timeout
        self._client: api.LiveKitAPI | None = None
        # When a call last got an answer (readiness), and the last failure (status, logs).
        self.last_ok: float | None = None
        self.last_error: str | None = None
        # The last call was refused for who we are (key or secret): no retry cures that.
        self.refused = False

    @property
    def _api(self) -> api.LiveKitAPI:
        if self._client is None:
            secret = self.settings.livekit_api_secret
            assert secret is not None
            self._client = api.LiveKitAPI(
                self.url,
                self.settings.livekit_api_key,
                secret.get_secret_value(),
                # Per request; our own timeout below bounds the whole call.
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._client

    async def list_rooms(self, names: list[str] | None = None) -> list[models.Room]:
        request = api.ListRoomsRequest(names=names or [])
        listed = await self._call("ListRooms", lambda: self._api.room.list_rooms(request))
        return list(listed.rooms)

    async def list_participants(
        self, room: str, timeout: float | None = None
    ) -> list[models.ParticipantInfo]:
        """The room's participants; ``[]`` when LiveKit has no such room (any more)."""
        request = api.ListParticipantsRequest(room=room)
        try:
            listed = await self._call(
                "ListParticipants", lambda: self._api.room.list_participants(request), timeout
            )
        except LiveKitAPIError as exc:
            if exc.code == "not_found":
                return []
            raise
        return list(listed.participants)

    async def list_dispatch(
        self, room: str, timeout: float | None = None
    ) -> list[agent_dispatch.AgentDispatch]:
        return await self._call(
            "ListDispatch", lambda: self._api.agent_dispatch.list_dispatch(room), timeout
        )

    async def _call(
        self, what: str, make: Callable[[], Awaitable[T]], timeout: float | None = None
    ) -> T:
        seconds = timeout if timeout is not None else self.timeout
        try:
            async with asyncio.timeout(seconds):
                result = await make()
        except api.TwirpError as exc:
            error = self._twirp_error(what, exc)
        except TimeoutError:
            error = LiveKitAPIError(
                f"LiveKit server API at {self.url}: no answer to {what} in {seconds:g} s",
                retryable=True,
                code="timeout",
            )
        except (aiohttp.ClientError, OSError) as exc:
            error = LiveKitAPIError(
                f"LiveKit server API at {self.url} unreachable: "
                f"{describe_connection_error(exc)} (LIVEKIT_URL)",
                retryable=True,
                code="unreachable",
            )
        else:
            LIVEKIT_API_CALLS.labels(what, "ok").inc()
            self.last_ok = time.monotonic()
            self.last_error = None
            self.refused = False
            return result
        LIVEKIT_API_CALLS.labels(what, error.code or "error").inc()
        if error.code != "not_found":
            self.last_error = str(error)
            self.refused = error.code == "refused"
        raise error

    def _twirp_error(self, what: str, exc: api.TwirpError) -> LiveKitAPIError:
        code = exc.code or "unknown"
        if exc.status in (401, 403) or code in _REFUSED:
            key = self.settings.livekit_api_key or ""
            return LiveKitAPIError(
                refused(self.url, key, f"HTTP {exc.status}"), retryable=False, code="refused"
            )
        detail = one_line(exc.message, 160) if exc.message else f"HTTP {exc.status}"
        retryable = exc.status >= 500 or code in _TRANSIENT
        return LiveKitAPIError(
            f"LiveKit server API at {self.url}: {what} failed: {code}: {detail}",
            retryable=retryable,
            code=code,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


__all__ = [
    "API_TIMEOUT",
    "LiveKitAPIError",
    "LiveKitServerAPI",
    "describe_connection_error",
    "refused",
]
