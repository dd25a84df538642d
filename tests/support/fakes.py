"""Stand-ins behind the dispatcher's seams (its rooms, LiveKit's server API), for unit tests."""

from __future__ import annotations

import asyncio
import time

from livekit.protocol import agent_dispatch, models

from bridge.service.livekit_api import LiveKitAPIError, LiveKitServerAPI
from bridge.service.local_rooms import RoomInfo
from bridge.settings.config import SessionOverrides, Settings


class FakeRooms:
    def __init__(self, rooms: dict[str, RoomInfo] | None = None) -> None:
        self._rooms = rooms or {}
        self.left: list[str] = []

    @property
    def sessions(self) -> int:
        return sum(i.sessions for i in self._rooms.values())

    def rooms(self) -> dict[str, RoomInfo]:
        return dict(self._rooms)

    def has_room(self, room: str) -> bool:
        return room in self._rooms

    async def join(self, room: str, overrides: SessionOverrides | None) -> str | None:
        return "not in unit tests"

    def leave(self, room: str) -> bool:
        self.left.append(room)
        return self._rooms.pop(room, None) is not None


class FakeLiveKitAPI(LiveKitServerAPI):
    """LiveKit's server API as the dispatcher sees it: rooms with participants, no network.

    ``humans[room]`` human identities in a room (absent: LiveKit has no such room); ``gate``, when
    set, holds every participant listing until it is set; ``fail`` makes every call fail."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.humans: dict[str, list[str]] = {}
        self.agents: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.fail: LiveKitAPIError | None = None

    async def _answer(self, method: str, room: str) -> None:
        self.calls.append((method, room))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.last_ok = time.monotonic()

    async def list_rooms(self, names: list[str] | None = None) -> list[models.Room]:
        await self._answer("ListRooms", ",".join(names or []))
        return [
            models.Room(name=name, sid=f"RM_{name}", num_participants=len(people))
            for name, people in self.humans.items()
            if not names or name in names
        ]

    async def list_participants(
        self, room: str, timeout: float | None = None
    ) -> list[models.ParticipantInfo]:
        await self._answer("ListParticipants", room)
        people = [
            models.ParticipantInfo(identity=i, kind=models.ParticipantInfo.Kind.STANDARD)
            for i in self.humans.get(room, [])
        ]
        agents = [
            models.ParticipantInfo(identity=i, kind=models.ParticipantInfo.Kind.AGENT)
            for i in self.agents.get(room, [])
        ]
        return people + agents

    async def list_dispatch(
        self, room: str, timeout: float | None = None
    ) -> list[agent_dispatch.AgentDispatch]:
        await self._answer("ListDispatch", room)
        return []
