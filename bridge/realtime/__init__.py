"""The model side: a client of the OpenAI Realtime API over WebRTC. Knows nothing about LiveKit.

May import: ``bridge.settings``, ``bridge.billing`` and the shared plumbing at ``bridge``'s top
level; never another side of the package, never ``livekit``.

async with RealtimeCall(settings, session=build_session(settings), audio=track) as call:
    async for event in call.events():
        ...
"""

from bridge.realtime.call import RealtimeCall
from bridge.realtime.client_secrets import ClientSecret, mint_client_secret
from bridge.realtime.errors import (
    RealtimeAPIError,
    RealtimeClosedError,
    RealtimeConnectionError,
    RealtimeError,
    RealtimeProtocolError,
    RealtimeTimeoutError,
)
from bridge.realtime.session_config import build_session

__all__ = [
    "ClientSecret",
    "RealtimeAPIError",
    "RealtimeCall",
    "RealtimeClosedError",
    "RealtimeConnectionError",
    "RealtimeError",
    "RealtimeProtocolError",
    "RealtimeTimeoutError",
    "build_session",
    "mint_client_secret",
]
