"""Dispatcher decisions, with LiveKit's server API behind its seam: repeats, stale events,
capacity, draining, and that checking a room for humans holds no session slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent
from pydantic import SecretStr

from bridge.service.dispatch import Dispatcher
from bridge.service.livekit_api import LiveKitAPIError
from bridge.service.local_rooms import RoomInfo
from bridge.settings.config import SessionOverrides, Settings
from tests.support.fakes import FakeLiveKitAPI, FakeRooms


def event(
    kind: str,
    room: str,
    *,
    sid: str = "",
    event_id: str = "",
    identity: str = "",
    participants: int = 0,
) -> WebhookEvent:
    ev = WebhookEvent(event=kind, id=event_id)
    ev.room.name = room
    ev.room.sid = sid
    ev.room.num_participants = participants
    if identity:
        ev.participant.identity = identity
        ev.participant.kind = models.ParticipantInfo.Kind.STANDARD
    return ev


@pytest_asyncio.fixture
async def settings() -> AsyncIterator[Settings]:
    yield Settings(livekit_api_key="k", livekit_api_secret=SecretStr("s" * 32), max_sessions=2)


@pytest_asyncio.fixture
async def lk(settings: Settings) -> AsyncIterator[FakeLiveKitAPI]:
    yield FakeLiveKitAPI(settings)


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
    dispatcher = Dispatcher(settings, FakeRooms(), FakeLiveKitAPI(settings))
    assert (await dispatcher.on_webhook(event(kind, "r", identity=identity))).outcome == outcome


async def test_repeats_and_rooms_we_are_in(settings: Settings) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)
    first = await dispatcher.on_webhook(
        event("participant_joined", "r", event_id="E1", identity="a")
    )
    again = await dispatcher.on_webhook(
        event("participant_joined", "r", event_id="E1", identity="a")
    )
    assert (first.outcome, again.outcome) == ("already", "duplicate")


async def test_capacity_and_draining_ask_for_another_replica(
    settings: Settings, lk: FakeLiveKitAPI
) -> None:
    full = FakeRooms({"a": RoomInfo(sessions=1, humans=1), "b": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, full, lk)
    joined = event("participant_joined", "c", event_id="E2", identity="carol")
    outcome = await dispatcher.on_webhook(joined)
    assert outcome.outcome == "unavailable" and outcome.retry_elsewhere
    assert "at capacity (2/2 sessions)" in outcome.detail
    assert lk.calls == []  # full: the room is not even looked at
    dispatcher = Dispatcher(settings, FakeRooms(), lk)
    dispatcher.draining = True
    joined = event("participant_joined", "c", event_id="E3", identity="carol")
    assert (await dispatcher.on_webhook(joined)).detail == "draining"
    assert dispatcher.dispatch("c", None).retry_elsewhere


async def test_room_finished_only_ends_the_instance_it_names(settings: Settings) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)
    dispatcher._sids["r"] = "RM_new"
    stale = await dispatcher.on_webhook(event("room_finished", "r", sid="RM_old", event_id="E4"))
    assert stale.outcome == "stale" and rooms.left == []
    # A late room_started of that finished instance is ignored as well.
    late = await dispatcher.on_webhook(event("room_started", "r2", sid="RM_old", event_id="E5"))
    assert late.outcome == "stale"
    done = await dispatcher.on_webhook(event("room_finished", "r", sid="RM_new", event_id="E6"))
    assert done.outcome == "left" and rooms.left == ["r"]


async def test_a_503_redelivery_is_not_a_duplicate(settings: Settings, lk: FakeLiveKitAPI) -> None:
    rooms = FakeRooms({"a": RoomInfo(sessions=1, humans=1), "b": RoomInfo(sessions=1, humans=1)})
    lk.humans["c"] = ["x"]
    dispatcher = Dispatcher(settings, rooms, lk)
    first = await dispatcher.on_webhook(
        event("participant_joined", "c", event_id="E7", identity="x")
    )
    assert first.retry_elsewhere
    rooms.leave("a")  # capacity frees before LiveKit delivers it again
    rooms.leave("b")
    again = await dispatcher.on_webhook(
        event("participant_joined", "c", event_id="E7", identity="x")
    )
    assert again.outcome == "accepted"
    await dispatcher.aclose()


async def test_room_finished_of_an_instance_we_cannot_tell_is_not_ours(settings: Settings) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    dispatcher = Dispatcher(settings, rooms)  # joined without learning the sid (e.g. /dispatch)
    outcome = await dispatcher.on_webhook(event("room_finished", "r", sid="RM_old", event_id="E8"))
    assert outcome.outcome == "stale" and rooms.left == []


@pytest.mark.parametrize("reason", ["budget exceeded", "the model called leave_room"])
async def test_a_room_left_on_purpose_is_not_joined_again(
    settings: Settings, lk: FakeLiveKitAPI, reason: str
) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    lk.humans["r"] = ["a"]
    dispatcher = Dispatcher(settings, rooms, lk)
    dispatcher._sids["r"] = "RM_1"
    rooms.leave("r")
    dispatcher.on_room_ended("r", reason, duplicate=False)
    again = await dispatcher.on_webhook(
        event("participant_joined", "r", sid="RM_1", event_id="E9", identity="a")
    )
    assert again.outcome == "stale"
    # A new instance of the room starts afresh.
    fresh = await dispatcher.on_webhook(
        event("participant_joined", "r", sid="RM_2", event_id="E10", identity="a")
    )
    assert fresh.outcome == "accepted"
    await dispatcher.aclose()


async def test_a_room_that_ended_otherwise_can_be_joined_again(
    settings: Settings, lk: FakeLiveKitAPI
) -> None:
    rooms = FakeRooms({"r": RoomInfo(sessions=1, humans=1)})
    lk.humans["r"] = ["a"]
    dispatcher = Dispatcher(settings, rooms, lk)
    dispatcher._sids["r"] = "RM_1"
    rooms.leave("r")
    dispatcher.on_room_ended("r", "room empty", duplicate=False)
    again = await dispatcher.on_webhook(
        event("participant_joined", "r", sid="RM_1", event_id="E11", identity="a")
    )
    assert again.outcome == "accepted"
    await dispatcher.aclose()


async def test_room_started_for_an_empty_room_is_answered_from_the_event(
    settings: Settings, lk: FakeLiveKitAPI
) -> None:
    dispatcher = Dispatcher(settings, FakeRooms(), lk)
    outcomes = await asyncio.gather(
        *(
            dispatcher.on_webhook(event("room_started", f"empty-{i}", event_id=f"S{i}"))
            for i in range(50)
        )
    )
    assert {(o.outcome, o.detail) for o in outcomes} == {("ignored", "no participants yet")}
    assert lk.calls == [] and dispatcher.sessions == 0
    await dispatcher.aclose()


async def test_checking_a_room_holds_no_slot(settings: Settings, lk: FakeLiveKitAPI) -> None:
    """While 20 rooms are being checked (their listing held back), the pod stays idle: a real
    human's room is still taken, and the checks of rooms without humans end in 200s."""
    dispatcher = Dispatcher(settings, FakeRooms(), lk)
    lk.gate = asyncio.Event()
    lk.humans.update({f"bots-{i}": [] for i in range(20)})
    lk.agents.update({f"bots-{i}": ["egress"] for i in range(20)})
    checks = [
        asyncio.ensure_future(
            dispatcher.on_webhook(
                event("room_started", f"bots-{i}", event_id=f"B{i}", participants=1)
            )
        )
        for i in range(20)
    ]
    await asyncio.sleep(0.01)
    assert len(lk.calls) == 20
    assert dispatcher.sessions == 0 and dispatcher.takes_rooms() == (True, "")
    lk.gate.set()
    outcomes = await asyncio.gather(*checks)
    assert {(o.outcome, o.detail) for o in outcomes} == {("ignored", "no humans in the room")}
    lk.humans["real"] = ["alice"]
    real = await dispatcher.on_webhook(
        event("participant_joined", "real", event_id="R", identity="alice")
    )
    assert (real.outcome, real.detail) == ("accepted", "1 humans in the room")
    assert dispatcher.sessions == 1  # the real room holds its slot until joined
    await dispatcher.aclose()


async def test_a_failed_check_asks_for_another_delivery(
    settings: Settings, lk: FakeLiveKitAPI
) -> None:
    dispatcher = Dispatcher(settings, FakeRooms(), lk)
    lk.fail = LiveKitAPIError("LiveKit server API at http://x unreachable", retryable=True)
    joined = event("participant_joined", "r", event_id="F1", identity="alice")
    outcome = await dispatcher.on_webhook(joined)
    assert outcome.outcome == "unchecked" and outcome.retry_elsewhere
    assert "unreachable" in outcome.detail and dispatcher.sessions == 0
    await dispatcher.aclose()


async def test_reconcile_looks_only_at_rooms_with_participants(
    settings: Settings, lk: FakeLiveKitAPI
) -> None:
    dispatcher = Dispatcher(settings, FakeRooms(), lk)
    lk.humans.update({f"empty-{i}": [] for i in range(30)})
    lk.humans["busy"] = ["alice"]
    assert await dispatcher.reconciler.once() == 1
    await asyncio.sleep(0.05)
    assert lk.calls[0] == ("ListRooms", "")
    assert ("ListParticipants", "busy") in lk.calls
    assert not any(room.startswith("empty") for _, room in lk.calls)
    await dispatcher.aclose()


async def test_no_room_is_taken_while_the_model_service_refuses_us(
    settings: Settings, lk: FakeLiveKitAPI
) -> None:
    dispatcher = Dispatcher(settings, FakeRooms(), lk)
    refusal: list[str] = ["the model service at http://x/v1 refused the key in OPENAI_API_KEY"]
    dispatcher.blocker = lambda: refusal[0] if refusal else None
    lk.humans["r"] = ["alice"]
    joined = event("participant_joined", "r", event_id="M1", identity="alice")
    outcome = await dispatcher.on_webhook(joined)
    assert outcome.retry_elsewhere and outcome.detail.startswith("cannot serve rooms: the model")
    assert lk.calls == [] and dispatcher.offer("r").outcome == "unavailable"
    refusal.clear()  # the key works again
    again = await dispatcher.on_webhook(joined)
    assert again.outcome == "accepted"
    await dispatcher.aclose()


async def test_a_join_error_quoting_a_token_is_reported_without_it(
    settings: Settings, lk: FakeLiveKitAPI, caplog: pytest.LogCaptureFixture
) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

    class Refused(FakeRooms):
        async def join(self, room: str, overrides: SessionOverrides | None) -> str | None:
            return f"engine: signal failure: 401 Unauthorized - invalid token: {token}, error: x"

    errors: list[str | None] = []

    class Listener:
        def joined(self, room: str, error: str | None) -> None:
            errors.append(error)

        def ended(self, room: str, reason: str, duplicate: bool) -> None: ...

        def changed(self) -> None: ...

    dispatcher = Dispatcher(settings, Refused(), lk)
    dispatcher.listeners.append(Listener())
    dispatcher.dispatch("r", None)
    await asyncio.sleep(0.05)
    assert errors == ["engine: signal failure: 401 Unauthorized - invalid token: <token>, error: x"]
    assert token not in caplog.text
    await dispatcher.aclose()
