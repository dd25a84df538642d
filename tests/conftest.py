from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.livekit_server import LiveKitServer, LiveKitServerConfig
from tests.env import EMULATOR_KEY, test_settings


@pytest_asyncio.fixture(scope="session")
async def livekit_server() -> AsyncIterator[LiveKitServer]:
    """One real livekit-server for the whole run, on free loopback ports."""
    async with LiveKitServer(LiveKitServerConfig()) as server:
        yield server


@pytest_asyncio.fixture(scope="session")
async def emulator_server() -> AsyncIterator[EmulatorServer]:
    """One in-process Realtime API emulator for the whole run."""
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
    async with EmulatorServer(test_settings(), options) as server:
        yield server


@pytest_asyncio.fixture
async def emulator(emulator_server: EmulatorServer) -> AsyncIterator[EmulatorServer]:
    """The shared emulator with default options restored around each test."""
    defaults = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
    emulator = emulator_server.emulator
    emulator.options = defaults
    yield emulator_server
    emulator.options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
