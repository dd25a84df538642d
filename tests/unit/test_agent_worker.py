"""The agent worker's answers to LiveKit's messages, without a network: what goes out for each
frame that comes in (the same frames arrive over the socket in tests/integration)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from livekit.protocol import agent as lkagent
from prometheus_client import REGISTRY
from pydantic import SecretStr

from bridge.service import agent_socket
from bridge.service.agent_worker import AgentWorker, agent_socket_url, job_outcome
from bridge.service.dispatch import Dispatcher
from bridge.service.local_rooms import RoomInfo
from bridge.settings.config import SessionOverrides, Settings
from tests.support.fakes import FakeRooms


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
    while not worker.socket._outbox.empty():
        out.append(worker.socket._outbox.get_nowait())
    return out


def handle(worker: AgentWorker, frame: bytes) -> lkagent.AvailabilityResponse | None:
    answer = worker.jobs.handle_frame(frame)
    return answer.availability if answer is not None else None


async def connected(settings: Settings, rooms: FakeRooms) -> AgentWorker:
    dispatcher = Dispatcher(settings, rooms)
    worker = AgentWorker(settings, dispatcher, dispatcher.lkapi)
    worker.socket.connected = True  # as after registration; nothing is actually sent
    return worker


async def test_an_offer_is_answered_with_the_deterministic_identity(settings: Settings) -> None:
    worker = await connected(settings, FakeRooms())
    answer = handle(worker, offer("AJ_1", "support-1", metadata='{"voice": "coral"}'))
    assert answer is not None and answer.available and answer.job_id == "AJ_1"
    assert answer.participant_identity == "room-bridge-support-1"
    assert answer.participant_attributes["lk.agent.name"] == "helper"
    assert worker.jobs._offers["AJ_1"].overrides is not None
    assert worker.jobs._offers["AJ_1"].overrides.voice == "coral"
    # The accepted offer holds a session: one more fills the instance (WS_FULL, load 1).
    assert handle(worker, offer("AJ_2", "support-2")) is not None
    updates = [m.update_worker for m in sent(worker) if m.HasField("update_worker")]
    assert updates[-1].status == lkagent.WS_FULL and updates[-1].load == 1.0
    before = sample("bridge_agent_offers_refused_total", reason="at_capacity")
    refused = handle(worker, offer("AJ_3", "support-3"))
    assert refused is not None and not refused.available
    assert sample("bridge_agent_offers_refused_total", reason="at_capacity") == before + 1
    await worker.aclose()


async def test_a_room_we_serve_is_acknowledged_not_joined_twice(settings: Settings) -> None:
    worker = await connected(settings, FakeRooms({"r": RoomInfo(sessions=1, humans=1)}))
    answer = handle(worker, offer("AJ_1", "r"))
    assert answer is not None and answer.available and not worker.jobs._offers["AJ_1"].join
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
    assert worker.jobs._offers["AJ_big"].overrides is None
    assert worker.jobs._offers["AJ_bad"].overrides is None
    await worker.aclose()


async def test_draining_refuses_and_reports_full(settings: Settings) -> None:
    rooms = FakeRooms()
    dispatcher = Dispatcher(settings, rooms)
    worker = AgentWorker(settings, dispatcher, dispatcher.lkapi)
    worker.socket.connected = True
    dispatcher.draining = True
    (update,) = [m.update_worker for m in sent(worker)]
    assert update.status == lkagent.WS_FULL and update.load == 0.0
    before = sample("bridge_agent_offers_refused_total", reason="draining")
    answer = handle(worker, offer("AJ_1", "r"))
    assert answer is not None and not answer.available
    assert sample("bridge_agent_offers_refused_total", reason="draining") == before + 1
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
    worker = AgentWorker(settings, dispatcher, dispatcher.lkapi)
    worker.socket.connected = True

    # The join fails: the job failed, with the join's error.
    await assigned(worker, dispatcher, "AJ_broken", "broken")
    (update,) = job_updates(worker)
    assert (update.job_id, update.status) == ("AJ_broken", lkagent.JS_FAILED)
    assert update.error == "could not connect to LiveKit: boom"
    assert worker.jobs._jobs == {}

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
    assert worker.jobs._jobs == {}
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


# ---- against a fake LiveKit /agent WebSocket (aiohttp on loopback) -------------------------------

Step = Callable[[web.WebSocketResponse], Awaitable[None]]


class FakeAgentServer:
    """LiveKit's /agent endpoint played from a script: connection n (from 0) reads the register
    request and runs ``steps[n]``, which answers it (or not) and serves until it returns; the
    handler then closes the socket."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.registers: list[lkagent.RegisterWorkerRequest] = []
        self.received: asyncio.Queue[lkagent.WorkerMessage] = asyncio.Queue()
        self.connected = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeAgentServer:
        app = web.Application()
        app.router.add_get("/agent", self._agent)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _agent(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = await ws.receive()
        message = lkagent.WorkerMessage.FromString(first.data)
        assert message.WhichOneof("message") == "register"
        step = self.steps[len(self.registers)]
        self.registers.append(message.register)
        await step(ws)
        await ws.close()
        return ws

    async def next_message(self, ws: web.WebSocketResponse, kind: str) -> lkagent.WorkerMessage:
        """The worker's next message of ``kind`` on ``ws`` (others are kept in ``received``)."""
        async with asyncio.timeout(10):
            while True:
                frame = await ws.receive()
                assert frame.type == WSMsgType.BINARY, frame
                message = lkagent.WorkerMessage.FromString(frame.data)
                if message.WhichOneof("message") == kind:
                    return message
                self.received.put_nowait(message)


def register_answer(worker_id: str) -> bytes:
    answer = lkagent.RegisterWorkerResponse(worker_id=worker_id)
    return lkagent.ServerMessage(register=answer).SerializeToString()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class RecordingRandom:
    """The jitter's random source: real (seeded) draws, with the bounds asked for."""

    def __init__(self) -> None:
        self._random = random.Random(16)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.bounds.append((low, high))
        return self._random.uniform(low, high)


class ReconnectScript:
    """What the fake LiveKit does on each of five connections."""

    def __init__(self) -> None:
        self.server: FakeAgentServer | None = None
        self.first_served = asyncio.Event()
        self.again = asyncio.Event()
        self.drop = asyncio.Event()

    @property
    def steps(self) -> list[Step]:
        return [
            self.serve_then_drop,
            self.not_a_server_message,
            self.hang_up,
            self.a_termination,
            self.serve_again,
        ]

    async def next_message(self, ws: web.WebSocketResponse, kind: str) -> lkagent.WorkerMessage:
        assert self.server is not None
        return await self.server.next_message(ws, kind)

    async def serve_then_drop(self, ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(register_answer("W1"))
        await self.next_message(ws, "update_worker")
        # A room we serve is offered and assigned: the job runs.
        await ws.send_bytes(offer("AJ_kept", "kept"))
        assert (await self.next_message(ws, "availability")).availability.available
        await ws.send_bytes(assignment("AJ_kept", "kept"))
        update = (await self.next_message(ws, "update_job")).update_job
        assert (update.job_id, update.status) == ("AJ_kept", lkagent.JS_RUNNING)
        await ws.send_bytes(b"\xff\x00 not a protobuf")
        await ws.send_str("a text frame")
        # Still serving: the next offer is answered on this same socket.
        await ws.send_bytes(offer("AJ_next", "next"))
        assert (await self.next_message(ws, "availability")).availability.available
        self.first_served.set()
        await self.drop.wait()

    async def not_a_server_message(self, ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(b"\xff\xff\xff")

    async def hang_up(self, ws: web.WebSocketResponse) -> None:
        return

    async def a_termination(self, ws: web.WebSocketResponse) -> None:
        # A WorkerMessage (a ping) where the answer should be: it parses as a termination.
        ping = lkagent.WorkerMessage(ping=lkagent.WorkerPing(timestamp=1))
        await ws.send_bytes(ping.SerializeToString())

    async def serve_again(self, ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(register_answer("W2"))
        await self.next_message(ws, "update_worker")
        self.again.set()
        async for _ in ws:  # held until the worker closes it (a drop here would be a 5th)
            pass


async def test_reconnects_with_growing_jittered_backoff_and_survives_bad_frames(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Registered; garbage and a text frame are logged and survived; the socket drops (rooms
    kept); a bad register answer, a server that hangs up instead of answering, and a
    termination instead of an answer each count as a failed registration and back off longer;
    then registered again."""
    script = ReconnectScript()
    rooms = FakeRooms({"kept": RoomInfo(sessions=1, humans=1)})
    jitter = RecordingRandom()
    monkeypatch.setattr(agent_socket, "random", jitter)
    failed_before = sample("bridge_agent_registrations_total", result="failed")
    ok_before = sample("bridge_agent_registrations_total", result="ok")
    async with FakeAgentServer(script.steps) as server:
        script.server = server
        settings = settings.model_copy(
            update={"livekit_url": server.url, "agent_reconnect_max": 2.0}
        )
        dispatcher = Dispatcher(settings, rooms)
        worker = AgentWorker(settings, dispatcher, dispatcher.lkapi)
        pauses: list[float] = []
        registered_while_paused: list[float] = []

        async def pause(seconds: float) -> None:
            pauses.append(seconds)
            registered_while_paused.append(sample("bridge_agent_registered"))
            await asyncio.sleep(0)

        monkeypatch.setattr(worker.socket, "_pause", pause)
        assert sample("bridge_agent_registered") == 0.0
        worker.start()
        try:
            await asyncio.wait_for(script.first_served.wait(), 10)
            assert worker.socket.state == "registered" and worker.socket.worker_id == "W1"
            assert sample("bridge_agent_registered") == 1.0
            assert len(server.registers) == 1  # the bad frames did not make it register again
            malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
            assert len(malformed) == 1, malformed
            assert "ignoring a text frame" in caplog.text

            script.drop.set()
            await asyncio.wait_for(script.again.wait(), 10)
            assert sample("bridge_agent_registered") == 1.0
            assert registered_while_paused == [0.0] * 4
        finally:
            await worker.aclose()
            await dispatcher.aclose()
    assert [r.agent_name for r in server.registers] == ["helper"] * 5
    assert worker.socket.registrations == 2 and worker.socket.worker_id == "W2"
    # The served room was not left when the socket dropped; its job is still ours.
    assert rooms.left == [] and rooms.has_room("kept")
    assert [j.room for j in worker.jobs._jobs.values()] == ["kept"]
    assert sample("bridge_agent_registrations_total", result="failed") - failed_before == 3
    assert sample("bridge_agent_registrations_total", result="ok") - ok_before == 2
    assert "registration answer is not a ServerMessage" in caplog.text
    assert "registration answered with a CLOSE frame" in caplog.text
    assert "registration answered with a termination message" in caplog.text
    # Backoff: the ceiling doubles from 0.5 s up to agent_reconnect_max, each delay drawn
    # between half the ceiling and the ceiling.
    assert jitter.bounds == [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (1.0, 2.0)]
    assert len(pauses) == 4
    for delay, (low, high) in zip(pauses, jitter.bounds, strict=True):
        assert low <= delay <= high
    assert pauses[0] <= pauses[1] <= pauses[2]


async def test_a_refused_key_is_one_clear_line_per_spaced_out_attempt(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """LiveKit answering /agent with 401 (wrong key or secret): each attempt is one warning that
    names the URL and the settings to check, at least REFUSED_RETRY apart; a closed port says so."""

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=401, text="invalid token")

    app = web.Application()
    app.router.add_get("/agent", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = settings.model_copy(update={"livekit_url": f"ws://127.0.0.1:{port}"})
    dispatcher = Dispatcher(settings, FakeRooms())
    worker = AgentWorker(settings, dispatcher, dispatcher.lkapi)
    pauses: list[float] = []
    enough = asyncio.Event()

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            enough.set()
        await asyncio.sleep(0)

    monkeypatch.setattr(worker.socket, "_pause", pause)
    worker.start()
    try:
        await asyncio.wait_for(enough.wait(), 10)
    finally:
        await worker.aclose()
        await dispatcher.aclose()
        await runner.cleanup()
    assert all(p >= agent_socket.REFUSED_RETRY for p in pauses), pauses
    lines = [r.getMessage() for r in caplog.records if "not registered" in r.getMessage()]
    assert len(lines) >= 3 and all(
        r.levelname == "WARNING" for r in caplog.records if "not registered" in r.getMessage()
    )
    assert lines[0].startswith(
        f"agent dispatch: not registered: LiveKit at ws://127.0.0.1:{port}/agent refused the API "
        "key 'k' or its secret (HTTP 401): check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
    )
    assert "Traceback" not in caplog.text
    closed = settings.model_copy(update={"livekit_url": f"ws://127.0.0.1:{port}"})
    line, refusal = agent_socket.failure(closed, ConnectionRefusedError(111, "Connection refused"))
    assert (line, refusal) == (
        f"LiveKit at ws://127.0.0.1:{port}/agent unreachable: connection refused (LIVEKIT_URL)",
        False,
    )
