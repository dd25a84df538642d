from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import settings
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from bridge.settings.config import Settings
from tests.support import processes
from tests.support.env import EMULATOR_KEY, BridgeSettings, test_settings

# How long the end of the session waits for what its tests started to finish exiting (a killed
# serve's workers close within 6 s) before naming it as left behind.
LEFTOVER_GRACE = 10.0


def pytest_configure(config: pytest.Config) -> None:
    # Each pytest process (each xdist worker) marks what it starts with a mark of its own.
    processes.mark_session()


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Iterator[None]:
    """The session fails if a process it started (livekit-server, emulator, serve and its
    workers, dev, browsers, ...) is still alive once every test and fixture has ended. First in,
    so last out: after the session's servers are stopped."""
    mark = os.environ[processes.SESSION_MARK]
    yield
    left = processes.wait_gone(processes.leftovers(mark), LEFTOVER_GRACE)
    if left:
        processes.kill(left)
        pytest.fail(
            "processes this test session started are still alive (now killed):\n"
            + "\n".join(f"  {p}" for p in left),
            pytrace=False,
        )


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


@pytest_asyncio.fixture
async def bridge_settings(
    livekit_server: LiveKitServer, emulator: EmulatorServer
) -> AsyncIterator[BridgeSettings]:
    """Settings factory pointing the bridge at the test livekit-server and emulator."""

    def make(**overrides: Any) -> Settings:
        return test_settings(
            livekit_url=livekit_server.url,
            livekit_api_key=livekit_server.api_key,
            livekit_api_secret=SecretStr(livekit_server.api_secret),
            openai_base_url=emulator.base_url,
            **{"empty_room_grace": 1.0, "retry_backoff_initial": 0.2, **overrides},
        )

    yield make


# Property-based tests (tests/fuzz/): a short run in `make test`, a long one on demand with
# HYPOTHESIS_PROFILE=long. No deadline: a loaded shared machine makes single examples slow.
settings.register_profile("short", max_examples=200, deadline=None)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "short"))


# A test that stops making progress is cancelled from inside its own event loop, so its `finally`
# blocks run (humans leave, workers close) and it fails instead of hanging the
# suite. pytest-timeout's 120 s stays the last resort: its signal lands in whatever task runs at
# that moment, which need not be the test's.
ASYNC_TEST_TIMEOUT = 100.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "obj", None)
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(function):
            # A test marked with a longer pytest-timeout gets that, less a margin for cleanup.
            marker = item.get_closest_marker("timeout")
            longer = float(marker.args[0]) - 20 if marker is not None and marker.args else 0.0
            item.obj = _bounded(function, max(ASYNC_TEST_TIMEOUT, longer))


def _bounded(test: Callable[..., Coroutine[Any, Any, None]], seconds: float) -> Callable[..., Any]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        limit = asyncio.timeout(seconds)
        try:
            async with limit:
                await test(*args, **kwargs)
        except TimeoutError as exc:
            if limit.expired():
                raise AssertionError(f"no result in {seconds:g} s") from exc
            raise

    return run
