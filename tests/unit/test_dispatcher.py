"""Dispatcher decisions that need no network: repeats, stale events, capacity, draining."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent
from pydantic import SecretStr

from bridge.service.dispatch import Dispatcher
from bridge.service.local_rooms import RoomInfo
from bridge.settings.config import Settings
from tests.support.fakes import FakeRooms


def event(
    kind: str, room: str, *, sid: str = "", event_id: str = "", identity: str = ""
) -> WebhookEvent:
    ev = WebhookEvent(event=kind, id=event_id)
    ev.room.name = room
    ev.room.sid = sid
    if identity:
        ev.participant.identity = identity
        ev.participant.kind = models.ParticipantInfo.Kind.STANDARD
    return ev


@pytest_asyncio.fixture
async def settings() -> AsyncIterator[Settings]:
    yield Settings(livekit_api_key="k", livekit_api_secret=SecretStr("s" * 32), max_sessions=2)


@pytest.mark.parametrize(
    ("kind", "identity", "outcome"),
    [
        ("track_published", "alice", "ignored"),
        ("participant_left", "alice", "ignored"),
        ("participant_joined", "room-bridge-r", "ignored"),
        ("egress_started", "", "ignored"),
    ],
)
async def test_events_that_need_nothing(
    settings: Settings, kind: str, identity: str, outcome: str
) -> None:
    dispatcher = Dispatcher(settings, FakeRooms())
    assert dispatcher.on_webhook(event(kind, "r", identity=identity)).outcome == outcome


async def test_repeats_and_rooms_we_are_in(settings: Settings) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)
    first = dispatcher.on_webhook(event("participant_joined", "r", event_id="E1", identity="a"))
    again = dispatcher.on_webhook(event("participant_joined", "r", event_id="E1", identity="a"))
    assert (first.outcome, again.outcome) == ("already", "duplicate")


async def test_capacity_and_draining_ask_for_another_replica(settings: Settings) -> None:
    full = FakeRooms({"a": RoomInfo(sessions=1, humans=1), "b": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, full)
    outcome = dispatcher.on_webhook(event("room_started", "c", event_id="E2"))
    assert outcome.outcome == "unavailable" and outcome.retry_elsewhere
    assert "at capacity (2/2 sessions)" in outcome.detail
    dispatcher = Dispatcher(settings, FakeRooms())
    dispatcher.draining = True
    assert dispatcher.on_webhook(event("room_started", "c", event_id="E3")).detail == "draining"
    assert dispatcher.dispatch("c", None).retry_elsewhere


async def test_room_finished_only_ends_the_instance_it_names(settings: Settings) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)
    dispatcher._sids["r"] = "RM_new"
    stale = dispatcher.on_webhook(event("room_finished", "r", sid="RM_old", event_id="E4"))
    assert stale.outcome == "stale" and rooms.left == []
    # A late room_started of that finished instance is ignored as well.
    late = dispatcher.on_webhook(event("room_started", "r2", sid="RM_old", event_id="E5"))
    assert late.outcome == "stale"
    done = dispatcher.on_webhook(event("room_finished", "r", sid="RM_new", event_id="E6"))
    assert done.outcome == "left" and rooms.left == ["r"]


async def test_a_503_redelivery_is_not_a_duplicate(settings: Settings) -> None:
    rooms = FakeRooms({"a": RoomInfo(sessions=1, humans=1), "b": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)
    first = dispatcher.on_webhook(event("participant_joined", "c", event_id="E7", identity="x"))
    assert first.retry_elsewhere
    rooms.leave("a")  # capacity frees before LiveKit delivers it again
    rooms.leave("b")
    again = dispatcher.on_webhook(event("participant_joined", "c", event_id="E7", identity="x"))
    assert again.outcome != "duplicate"
    await dispatcher.aclose()


async def test_room_finished_of_an_instance_we_cannot_tell_is_not_ours(settings: Settings) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)  # joined without learning the sid (e.g. /dispatch)
    outcome = dispatcher.on_webhook(event("room_finished", "r", sid="RM_old", event_id="E8"))
    assert outcome.outcome == "stale" and rooms.left == []


@pytest.mark.parametrize("reason", ["budget exceeded", "the model called leave_room"])
async def test_a_room_left_on_purpose_is_not_joined_again(settings: Settings, reason: str) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)
    dispatcher._sids["r"] = "RM_1"
    rooms.leave("r")
    dispatcher.on_room_ended("r", reason, duplicate=False)
    again = dispatcher.on_webhook(
        event("participant_joined", "r", sid="RM_1", event_id="E9", identity="a")
    )
    assert again.outcome == "stale"
    # A new instance of the room starts afresh.
    fresh = dispatcher.on_webhook(
        event("participant_joined", "r", sid="RM_2", event_id="E10", identity="a")
    )
    assert fresh.outcome == "accepted"
    await dispatcher.aclose()


async def test_a_room_that_ended_otherwise_can_be_joined_again(settings: Settings) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)
    dispatcher._sids["r"] = "RM_1"
    rooms.leave("r")
    dispatcher.on_room_ended("r", "room empty", duplicate=False)
    again = dispatcher.on_webhook(
        event("participant_joined", "r", sid="RM_1", event_id="E11", identity="a")
    )
    assert again.outcome == "accepted"
    await dispatcher.aclose()
