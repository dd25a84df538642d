"""The HTTP half of a call: POST the offer, hang up. httpx errors become RealtimeErrors here."""

from __future__ import annotations

import functools
import json
import logging
import math
import ssl
from dataclasses import dataclass
from typing import Any

import anyio.lowlevel
import httpx
from aiortc import RTCCertificate
from pydantic import SecretStr

from bridge.realtime.errors import (
    RealtimeAPIError,
    RealtimeConnectionError,
    RealtimeProtocolError,
    RealtimeTimeoutError,
    redact,
)
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)


def api_key(settings: Settings, override: SecretStr | None = None) -> SecretStr:
    key = override or settings.openai_api_key
    if key is None or not key.get_secret_value():
        raise RealtimeAPIError(401, "no API key configured (OPENAI_API_KEY)", code="missing_key")
    return key


def auth_headers(settings: Settings, key: SecretStr) -> dict[str, str]:
    value = key.get_secret_value()
    scheme = settings.auth_scheme.strip()
    return {settings.auth_header: f"{scheme} {value}" if scheme else value}


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process. Building it (loading the CA bundle) costs 10-50 ms of CPU,
    several hundred on a busy machine: measured as the largest single step of a call's setup
    when every call built its own client from scratch."""
    return httpx.create_ssl_context()


async def prewarm() -> None:
    """Do the per-process setup work of a call now, before any human is waiting for one: the
    TLS context, and the modules httpx, anyio and aiortc's DTLS import on first use (~300 ms
    of the first call's setup on this machine, measured with cProfile)."""
    httpx.AsyncHTTPTransport(verify=_tls())  # imports httpcore
    await anyio.lowlevel.checkpoint()  # loads anyio's asyncio backend (httpcore's, per request)
    RTCCertificate.generateCertificate()  # imports the key and X.509 backends DTLS uses


def make_client(settings: Settings) -> httpx.AsyncClient:
    timeout = httpx.Timeout(settings.connect_timeout)
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=_tls())


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date; our backoff applies
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def error_from_response(response: httpx.Response, key: SecretStr | None) -> RealtimeAPIError:
    """An OpenAI-shaped error body (``{"error": {...}}``) or anything else, as RealtimeAPIError."""
    secret = key.get_secret_value() if key else None
    code = error_type = None
    message = ""
    try:
        body: Any = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            code = error.get("code") if isinstance(error.get("code"), str) else None
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    if not message:
        message = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        message = message or response.reason_phrase or "no message"
    return RealtimeAPIError(
        response.status_code,
        redact(message, secret),
        code=code,
        error_type=error_type,
        retry_after=_retry_after(response),
    )


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    key: SecretStr,
    what: str,
    timeout: float,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request; any failure is raised as a RealtimeError naming ``what``."""
    try:
        response = await client.request(method, url, timeout=timeout, **kwargs)
    except httpx.TimeoutException:
        raise RealtimeTimeoutError(f"{what}: no answer in {timeout:g} s") from None
    except httpx.HTTPError as exc:
        detail = redact(str(exc), key.get_secret_value()) or type(exc).__name__
        raise RealtimeConnectionError(f"{what}: {detail}") from None
    if not response.is_success:
        raise error_from_response(response, key)
    return response


@dataclass(frozen=True)
class Answer:
    sdp: str
    call_id: str
    location: str


async def post_offer(
    client: httpx.AsyncClient,
    settings: Settings,
    *,
    key: SecretStr,
    offer_sdp: str,
    session: dict[str, Any] | None,
) -> Answer:
    """POST /realtime/calls. Multipart (``sdp`` + ``session``) with an API key; the raw SDP as
    ``application/sdp`` with an ephemeral ``ek_`` key, whose session was fixed when minted."""
    headers = auth_headers(settings, key)
    body: dict[str, Any]
    if key.get_secret_value().startswith("ek_"):
        headers["Content-Type"] = "application/sdp"
        body = {"content": offer_sdp.encode()}
    else:
        body = {
            "files": {
                "sdp": (None, offer_sdp.encode(), "application/sdp"),
                "session": (None, json.dumps(session or {}).encode(), "application/json"),
            }
        }
    response = await request(
        client,
        "POST",
        f"{settings.openai_base_url}/realtime/calls",
        key=key,
        what="POST /realtime/calls",
        timeout=settings.connect_timeout,
        headers=headers,
        **body,
    )
    location = response.headers.get("location", "")
    call_id = location.rstrip("/").rsplit("/", 1)[-1] if location else ""
    if not call_id:
        raise RealtimeProtocolError("answer has no Location header with the call id")
    return Answer(sdp=response.text, call_id=call_id, location=location)


async def hangup(
    client: httpx.AsyncClient, settings: Settings, *, key: SecretStr, call_id: str
) -> None:
    url = f"{settings.openai_base_url}/realtime/calls/{call_id}/hangup"
    await request(
        client,
        "POST",
        url,
        key=key,
        what="POST /realtime/calls/{id}/hangup",
        timeout=settings.connect_timeout,
        headers=auth_headers(settings, key),
    )
