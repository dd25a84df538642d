"""A burst of signed ``room_started`` events for rooms nobody is in: an idle pod answers each at
once and correctly (200, ignored), holds no session slot for them, joins none of them, and still
takes a real human's room just after."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from livekit import api

from bridge.emulator.app import EmulatorServer
from tests.support.dispatch_harness import (
    agents_in,
    listeners,
    livekit_with_webhooks,
    room_started,
    serve,
    signed_webhook,
)
from tests.support.room_harness import humans
from tests.support.waits import metric

pytestmark = pytest.mark.timeout(120)
BURST = 50


async def test_fifty_room_started_for_empty_rooms_take_no_capacity(
    emulator: EmulatorServer,
) -> None:
    tag = uuid.uuid4().hex[:6]
    empty = [f"empty-{tag}-{i}" for i in range(BURST)]
    async with (
        listeners() as (listener,),
        livekit_with_webhooks(listener) as server,
        serve(
            server, emulator, listener=listener, reconcile_interval="600", max_sessions="8"
        ) as bridge,
    ):
        async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
            for room in empty:
                await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=60))
        # Half say the room has someone in it (so they are looked at, and found without
        # humans); half say nobody (answered from the event alone), as LiveKit sends them.
        deliveries = [
            signed_webhook(server, room_started(room, participants=i % 2, event_id=f"EV_{tag}_{i}"))
            for i, room in enumerate(empty)
        ]
        async with httpx.AsyncClient(timeout=10) as client:
            responses = await asyncio.gather(
                *(
                    client.post(bridge.url + "/webhook", content=body, headers=headers)
                    for body, headers in deliveries
                )
            )
        answers = {(r.status_code, r.json()["outcome"], r.json()["detail"]) for r in responses}
        assert answers == {
            (200, "ignored", "no participants yet"),
            (200, "ignored", "no humans in the room"),
        }
        status = await bridge.status()
        assert status["sessions"] == 0
        assert (await bridge.get("/readyz")).status_code == 200
        calls = metric(
            (await bridge.get("/metrics")).text,
            "bridge_livekit_api_calls_total",
            method="ListParticipants",
        )
        assert calls == BURST // 2  # one look per room said to have someone; none for the rest

        # A real human right after, in another room: LiveKit's own webhooks bring the agent.
        real = f"real-{tag}"
        async with humans(server, real, "alice") as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            assert await agents_in(server, real) == [f"room-bridge-{real}"]
        for room in empty:
            assert await agents_in(server, room) == []
