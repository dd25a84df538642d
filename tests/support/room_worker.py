"""A room worker in a test: start one for a room, find a human's call, wait until it is up."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bridge.emulator.app import EmulatorServer
from bridge.emulator.session import EmulatedSession
from bridge.room.worker import RoomWorker


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def worker(settings: Any, room: str) -> AsyncIterator[RoomWorker]:
    bridge = RoomWorker(settings, room)
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.aclose()


def call_of(emulator: EmulatorServer, bridge: RoomWorker, identity: str) -> EmulatedSession:
    """The emulated call behind ``identity``'s current session."""
    session = bridge.sessions[identity]
    assert session.call_id is not None
    return emulator.emulator.calls[session.call_id]


async def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def call_ready(bridge: RoomWorker, identity: str, timeout: float = 15.0) -> None:
    """Until ``identity`` has a session with a live model call."""

    def ready() -> bool:
        session = bridge.sessions.get(identity)
        return session is not None and session.call_id is not None

    await wait_for(ready, timeout)
