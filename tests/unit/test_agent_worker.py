"""The agent worker's answers to LiveKit's messages, without a network: what goes out for each
frame that comes in (the same frames arrive over the socket in tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from livekit.protocol import agent as lkagent
from pydantic import SecretStr

from bridge.config import SessionOverrides, Settings
from bridge.service.agent_worker import AgentWorker, agent_socket_url, job_outcome
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


def assignment(job_id: str, room: str) -> bytes:
    job = lkagent.Job(id=job_id, type=lkagent.JT_ROOM, agent_name="helper", dispatch_id="AD_1")
    job.room.name = room
    message = lkagent.ServerMessage(assignment=lkagent.JobAssignment(job=job, token="t"))
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


class JoiningRooms(FakeRooms):
    """Joins succeed (the room is then ours) unless ``failing`` names the room's error."""

    def __init__(self, failing: dict[str, str] | None = None) -> None:
        super().__init__()
        self.failing = failing or {}

    async def join(self, room: str, overrides: SessionOverrides | None) -> str | None:
        if room in self.failing:
            return self.failing[room]
        self._rooms[room] = RoomInfo(sessions=1, humans=1)
        return None

    def end(self, room: str) -> None:
        del self._rooms[room]


def job_updates(worker: AgentWorker) -> list[lkagent.UpdateJobStatus]:
    return [m.update_job for m in sent(worker) if m.HasField("update_job")]


async def assigned(worker: AgentWorker, dispatcher: Dispatcher, job_id: str, room: str) -> None:
    """Offer, accept and assign ``room``, and let the join run."""
    answer = handle(worker, offer(job_id, room))
    assert answer is not None and answer.available
    assert handle(worker, assignment(job_id, room)) is None
    await asyncio.gather(*dispatcher._tasks)


async def test_job_status_follows_the_room_failed_with_the_error_or_success(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rooms = JoiningRooms(failing={"broken": "could not connect to LiveKit: boom"})
    dispatcher = Dispatcher(settings, rooms)

    async def look(room: str) -> tuple[int, bool]:
        return 1, False  # a human there, no agent of ours yet

    async def room_sid(room: str) -> str:
        return f"RM_{room}"

    monkeypatch.setattr(dispatcher, "_look", look)
    monkeypatch.setattr(dispatcher, "_room_sid", room_sid)
    worker = AgentWorker(settings, dispatcher)
    worker._connected = True

    # The join fails: the job failed, with the join's error.
    await assigned(worker, dispatcher, "AJ_broken", "broken")
    (update,) = job_updates(worker)
    assert (update.job_id, update.status) == ("AJ_broken", lkagent.JS_FAILED)
    assert update.error == "could not connect to LiveKit: boom"
    assert worker._jobs == {}

    # Joined (running), then the agent is disconnected by an error: failed, with the reason.
    await assigned(worker, dispatcher, "AJ_dropped", "dropped")
    (update,) = job_updates(worker)
    assert (update.job_id, update.status) == ("AJ_dropped", lkagent.JS_RUNNING)
    rooms.end("dropped")
    dispatcher.on_room_ended("dropped", "disconnected: SIGNAL_CLOSE", duplicate=False)
    (update,) = job_updates(worker)
    assert (update.job_id, update.status) == ("AJ_dropped", lkagent.JS_FAILED)
    assert update.error == "disconnected: SIGNAL_CLOSE"

    # Joined, then the humans leave: a normal end is a success, with no error.
    await assigned(worker, dispatcher, "AJ_done", "done")
    assert [u.status for u in job_updates(worker)] == [lkagent.JS_RUNNING]
    rooms.end("done")
    dispatcher.on_room_ended("done", "no humans left", duplicate=False)
    (update,) = job_updates(worker)
    assert (update.job_id, update.status, update.error) == ("AJ_done", lkagent.JS_SUCCESS, "")
    assert worker._jobs == {}
    await worker.aclose()
    await dispatcher.aclose()


@pytest.mark.parametrize(
    ("reason", "duplicate", "status", "error"),
    [
        ("no humans left", False, lkagent.JS_SUCCESS, ""),
        ("budget exceeded", False, lkagent.JS_SUCCESS, ""),
        ("asked to leave", False, lkagent.JS_SUCCESS, ""),
        ("shutting down", False, lkagent.JS_SUCCESS, ""),
        ("disconnected: ROOM_DELETED", False, lkagent.JS_SUCCESS, ""),
        ("disconnected: PARTICIPANT_REMOVED", False, lkagent.JS_SUCCESS, ""),
        (
            "disconnected: CONNECTION_TIMEOUT",
            False,
            lkagent.JS_FAILED,
            "disconnected: CONNECTION_TIMEOUT",
        ),
        ("duplicate identity", True, lkagent.JS_FAILED, "another agent took the room"),
    ],
)
def test_job_outcome(reason: str, duplicate: bool, status: int, error: str) -> None:
    assert job_outcome(reason, duplicate) == (status, error)
