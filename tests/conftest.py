from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from bridge.livekit_server import LiveKitServer, LiveKitServerConfig


@pytest_asyncio.fixture(scope="session")
async def livekit_server() -> AsyncIterator[LiveKitServer]:
    """One real livekit-server for the whole run, on free loopback ports."""
    async with LiveKitServer(LiveKitServerConfig()) as server:
        yield server
