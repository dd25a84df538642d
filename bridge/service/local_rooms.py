"""The rooms one process serves: starts a RoomWorker per room, watches it, reports how it ended.

Used by each worker process of ``serve`` (bridge/service/workers.py) and directly by tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.aio import TaskSet
from bridge.room.capacity import SessionBudget
from bridge.room.worker import RoomWorker
from bridge.settings.config import SessionOverrides, Settings

logger = logging.getLogger(__name__)

# (room, reason, duplicate identity?)
EndedCallback = Callable[[str, str, bool], None]


@dataclass(frozen=True)
class RoomInfo:
    sessions: int
    humans: int
    # State, duration, tokens, cost and budget (RoomWorker.status), for GET /rooms.
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {"sessions": self.sessions, "humans": self.humans}

    def report(self) -> dict[str, Any]:
        return {**self.details, **self.as_dict()}


class LocalRooms:
    def __init__(
        self, settings: Settings, budget: SessionBudget, on_ended: EndedCallback | None = None
    ) -> None:
        self.settings = settings
        self.budget = budget
        self._on_ended = on_ended
        self._workers: dict[str, RoomWorker] = {}
        self._tasks = TaskSet("local-rooms")

    @property
    def sessions(self) -> int:
        return sum(len(w.sessions) for w in self._workers.values())

    def status(self) -> dict[str, RoomInfo]:
        return {
            name: RoomInfo(sessions=len(w.sessions), humans=w.demand(), details=w.status())
            for name, w in self._workers.items()
        }

    async def join(self, room: str, overrides: SessionOverrides | None = None) -> None:
        """Join ``room`` (no-op if already there). Raises when the room cannot be joined."""
        if room in self._workers:
            return
        worker = RoomWorker(self.settings, room, overrides=overrides, budget=self.budget)
        self._workers[room] = worker
        try:
            await worker.start()
        except BaseException:
            self._workers.pop(room, None)
            await worker.aclose("join failed")
            raise
        self._tasks.create_task(self._watch(room, worker), name=f"watch-{room}")

    async def _watch(self, room: str, worker: RoomWorker) -> None:
        try:
            reason = await worker.wait()
        finally:
            await worker.aclose()
            if self._workers.get(room) is worker:
                del self._workers[room]
        if self._on_ended is not None:
            self._on_ended(room, reason, worker.duplicate)

    def leave(self, room: str, reason: str = "asked to leave") -> bool:
        worker = self._workers.get(room)
        if worker is None:
            return False
        worker.stop(reason)
        return True

    async def aclose(self, reason: str = "shutting down") -> None:
        for worker in list(self._workers.values()):
            worker.stop(reason)
        await self._tasks.aclose()
        for worker in list(self._workers.values()):
            await worker.aclose(reason)
        self._workers.clear()
