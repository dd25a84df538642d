"""The HTTP process's view of its workers: load accounting never under-counts."""

from __future__ import annotations

import json

from bridge.service.local_rooms import RoomInfo
from bridge.service.workers import WorkerPool, _Worker, split_budget
from bridge.settings.config import Settings


def test_budget_split() -> None:
    assert split_budget(16, 2) == [8, 8]
    assert split_budget(5, 2) == [3, 2]
    assert split_budget(1, 3) == [1, 0, 0]


def test_load_counts_rooms_being_joined_and_waiting_humans() -> None:
    worker = _Worker(index=0, budget=4)
    worker.joining = {"r1"}
    assert worker.load == 1
    # The child lists the room (not yet connected) before it answers "joined".
    worker.rooms = {"r1": RoomInfo(sessions=0, humans=0)}
    assert worker.load == 1
    # Three humans, two sessions (one waits for a slot): three are committed.
    worker.rooms = {"r1": RoomInfo(sessions=2, humans=3)}
    worker.joining = set()
    assert worker.load == 3


def test_status_lines_keep_the_join_reservation() -> None:
    pool = WorkerPool(
        Settings(max_sessions=2),
        1,
        config_path=None,
        on_ended=lambda *_: None,
        on_lost=lambda *_: None,
    )
    worker = pool._workers[0]
    worker.joining = {"a", "b"}
    worker.assigned = {"a": None, "b": None}
    status = {"ev": "status", "rooms": {"a": {"sessions": 0, "humans": 0}}}
    pool._on_line(worker, json.dumps(status).encode())
    assert worker.load == 2  # "b" still reserved even though the status omits it
    pool._on_line(worker, json.dumps({"ev": "join_failed", "room": "b", "error": "x"}).encode())
    assert worker.load == 1 and "b" not in worker.assigned
