"""Stand-ins behind the dispatcher's seam (its rooms), for unit tests."""

from __future__ import annotations

from bridge.service.local_rooms import RoomInfo
from bridge.settings.config import SessionOverrides


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
