"""Test helpers for a real livekit-server and humans joined with the livekit Python SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from livekit import api, rtc

from bridge.local.livekit_server import LiveKitServer


def human_token(
    server: LiveKitServer,
    room: str,
    identity: str,
    name: str | None = None,
    kind: str = "standard",
    *,
    room_config: api.RoomConfiguration | None = None,
) -> str:
    """``room_config`` asks for agents by name (``RoomConfiguration.agents``) when this join
    creates the room."""
    grants = api.VideoGrants(
        room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    token = (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_kind(kind)  # type: ignore[arg-type]
        .with_grants(grants)
    )
    if room_config is not None:
        token = token.with_room_config(room_config)
    return token.to_jwt()


def room_options(auto_subscribe: bool = True) -> rtc.RoomOptions:
    # No explicit ICE servers: the SDK then uses what the server hands out, which the test server
    # sets to an unused loopback STUN port (see bridge.local.livekit_server).
    return rtc.RoomOptions(auto_subscribe=auto_subscribe, connect_timeout=10.0)


@asynccontextmanager
async def joined(
    server: LiveKitServer, room: str, identity: str, *, auto_subscribe: bool = True
) -> AsyncIterator[rtc.Room]:
    """A human participant connected to ``room``; disconnected on exit."""
    lk_room = rtc.Room()
    await asyncio.wait_for(
        lk_room.connect(
            server.url, human_token(server, room, identity), room_options(auto_subscribe)
        ),
        15.0,
    )
    try:
        yield lk_room
    finally:
        await asyncio.wait_for(lk_room.disconnect(), 10.0)
