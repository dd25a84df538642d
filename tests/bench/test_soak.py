"""Soak: a room with two humans talking for a while. On demand only: ``pytest -m slow``
(``SOAK_SECONDS`` sets the length, default 60)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from bridge.room.worker import RoomWorker
from tests.support.env import BridgeSettings
from tests.support.room_harness import Human, humans

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_SECONDS + 120)]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _talk(person: Human, freq: float, until: float) -> int:
    turns = 0
    while time.monotonic() < until:
        await person.say(1.2, freq=freq, pause=3.0)
        turns += 1
    return turns


async def test_two_humans_talk_for_a_while(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    # Warm up: the LiveKit SDK starts its runtime (threads, sockets) on first use, for good.
    async with humans(livekit_server, "soak-warmup", "warmup"):
        pass
    await asyncio.sleep(0.5)
    fds_before = _open_fds()
    tasks_before = len(asyncio.all_tasks())
    known = set(emulator.emulator.calls)
    room = "soak"
    bridge = RoomWorker(bridge_settings(), room)
    await bridge.start()
    try:
        async with humans(livekit_server, room, "alice", "bob") as (alice, bob):
            await alice.wait_until(lambda: len(alice.agent_tracks()) == 2, timeout=20)
            until = time.monotonic() + SOAK_SECONDS
            turns = await asyncio.gather(_talk(alice, 440, until), _talk(bob, 880, until))
            await asyncio.sleep(4.0)  # the last answers finish
            answers = len(alice.final_transcripts(bridge.identity))
            sessions = list(bridge.sessions.values())
    finally:
        await bridge.aclose()
    # Both humans spoke at once at times: some answers were interrupted, none went missing.
    assert answers >= sum(turns) * 0.8, (answers, turns)
    assert all(s.media.dropped_frames() == 0 for s in sessions)
    assert all(not s.stats.failures for s in sessions)
    ours = [c for c in emulator.emulator.calls.values() if c.id not in known]
    assert len(ours) == 2
    assert all(not c.snapshot()["errors"] for c in ours)
    await asyncio.sleep(1.0)
    assert len(asyncio.all_tasks()) <= tasks_before + 2
    assert _open_fds() <= fds_before + 4
