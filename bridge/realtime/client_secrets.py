"""Ephemeral keys: ``POST /realtime/client_secrets`` mints an ``ek_`` key bound to a session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bridge.realtime.errors import RealtimeProtocolError
from bridge.realtime.http import api_key, auth_headers, make_client, request
from bridge.settings.config import Settings


@dataclass(frozen=True)
class ClientSecret:
    value: SecretStr
    expires_at: int
    session: dict[str, Any]


async def mint_client_secret(
    settings: Settings, session: dict[str, Any], *, ttl_seconds: int = 600
) -> ClientSecret:
    """Mint an ephemeral key for ``session`` valid ``ttl_seconds`` (10..7200)."""
    if not 10 <= ttl_seconds <= 7200:
        raise ValueError("ttl_seconds must be between 10 and 7200")
    key = api_key(settings)
    body = {
        "expires_after": {"anchor": "created_at", "seconds": ttl_seconds},
        "session": session,
    }
    async with make_client(settings) as client:
        response = await request(
            client,
            "POST",
            f"{settings.openai_base_url}/realtime/client_secrets",
            key=key,
            what="POST /realtime/client_secrets",
            timeout=settings.connect_timeout,
            headers=auth_headers(settings, key),
            json=body,
        )
    try:
        data = response.json()
        return ClientSecret(
            value=SecretStr(str(data["value"])),
            expires_at=int(data["expires_at"]),
            session=dict(data.get("session") or {}),
        )
    except (ValueError, KeyError, TypeError):
        raise RealtimeProtocolError("client_secrets answer is not {value, expires_at}") from None
