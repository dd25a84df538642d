"""The agent worker's answers to LiveKit's messages, without a network: what goes out for each
frame that comes in (the same frames arrive over the socket in tests/integration)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from livekit.protocol import agent as lkagent
from pydantic import SecretStr

from bridge.config import Settings
from bridge.service.agent_worker import AgentWorker, agent_socket_url
from bridge.service.dispatch import Dispatcher
from bridge.service.local_rooms import RoomInfo
from tests.unit.test_dispatcher import FakeRooms


@pytest_asyncio.fixture
async def settings() -> AsyncIterator[Settings]:
    yield Settings(
        livekit_api_key="k",
        livekit_api_secret=SecretStr("s" * 32),
        max_sessions=2,
        agent_name="helper",
    )


def offer(job_id: str, room: str, *, agent: str = "helper", metadata: str = "") -> bytes:
    job = lkagent.Job(id=job_id, type=lkagent.JT_ROOM, agent_name=agent, metadata=metadata)
    job.room.name = room
    message = lkagent.ServerMessage(availability=lkagent.AvailabilityRequest(job=job))
    return message.SerializeToString()


def sent(worker: AgentWorker) -> list[lkagent.WorkerMessage]:
    out = []
    while not worker._outbox.empty():
        out.append(worker._outbox.get_nowait())
    return out


def handle(worker: AgentWorker, frame: bytes) -> lkagent.AvailabilityResponse | None:
    answer = worker.handle_frame(frame)
    return answer.availability if answer is not None else None


async def connected(settings: Settings, rooms: FakeRooms) -> AgentWorker:
    worker = AgentWorker(settings, Dispatcher(settings, rooms))
    worker._connected = True  # as after registration; nothing is actually sent
    return worker


async def test_an_offer_is_answered_with_the_deterministic_identity(settings: Settings) -> None:
    worker = await connected(settings, FakeRooms())
    answer = handle(worker, offer("AJ_1", "support-1", metadata='{"voice": "coral"}'))
    assert answer is not None and answer.available and answer.job_id == "AJ_1"
    assert answer.participant_identity == "room-bridge-support-1"
    assert answer.participant_attributes["lk.agent.name"] == "helper"
    assert worker._offers["AJ_1"].overrides is not None
    assert worker._offers["AJ_1"].overrides.voice == "coral"
    # The accepted offer holds a session: one more fills the instance (WS_FULL, load 1).
    assert handle(worker, offer("AJ_2", "support-2")) is not None
    updates = [m.update_worker for m in sent(worker) if m.HasField("update_worker")]
    assert updates[-1].status == lkagent.WS_FULL and updates[-1].load == 1.0
    refused = handle(worker, offer("AJ_3", "support-3"))
    assert refused is not None and not refused.available
    await worker.aclose()


async def test_a_room_we_serve_is_acknowledged_not_joined_twice(settings: Settings) -> None:
    worker = await connected(settings, FakeRooms({"r": RoomInfo(sessions=1, humans=1)}))
    answer = handle(worker, offer("AJ_1", "r"))
    assert answer is not None and answer.available and not worker._offers["AJ_1"].join
    await worker.aclose()


async def test_bad_frames_and_bad_offers_are_logged_and_survived(settings: Settings) -> None:
    worker = await connected(settings, FakeRooms())
    assert handle(worker, b"\xff\x00not a protobuf") is None
    assert handle(worker, b"") is None  # an empty message: no kind
    out = [
        handle(worker, offer("AJ_x", "r", agent="somebody-else")),
        handle(worker, offer("", "r")),
        handle(worker, offer("AJ_big", "r2", metadata="[" * 10_000)),
        handle(worker, offer("AJ_bad", "r3", metadata='{"openai_base_url": "http://x"}')),
    ]
    assert [a is not None and a.available for a in out] == [False, False, True, True]
    assert worker._offers["AJ_big"].overrides is None
    assert worker._offers["AJ_bad"].overrides is None
    await worker.aclose()


async def test_draining_refuses_and_reports_full(settings: Settings) -> None:
    rooms = FakeRooms()
    dispatcher = Dispatcher(settings, rooms)
    worker = AgentWorker(settings, dispatcher)
    worker._connected = True
    dispatcher.draining = True
    (update,) = [m.update_worker for m in sent(worker)]
    assert update.status == lkagent.WS_FULL and update.load == 0.0
    answer = handle(worker, offer("AJ_1", "r"))
    assert answer is not None and not answer.available
    await worker.aclose()


def test_socket_url(settings: Settings) -> None:
    assert agent_socket_url(settings) == "ws://127.0.0.1:7880/agent"
    https = settings.model_copy(update={"livekit_url": "https://lk.example.com"})
    assert agent_socket_url(https) == "wss://lk.example.com/agent"
