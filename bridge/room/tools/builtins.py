"""Built-in tools: ``end_call`` (hang up the human whose model asked, once its goodbye has
played) and ``leave_room`` (the agent leaves). The runner decides *when*; ``RoomActions`` does it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from livekit import api

from bridge.aio import TaskSet
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)

REMOVE_TIMEOUT = 10.0

# What the model is told when it calls a built-in: it then says goodbye, and we act after that.
OUTPUTS = {
    "end_call": "The call will end as soon as you have said goodbye. Say a short goodbye now.",
    "leave_room": "You will leave the room as soon as you have said goodbye. Say a short "
    "goodbye now.",
}


class RoomActions(Protocol):
    """What the room worker does for built-in tools. Both return at once; the work runs in
    tasks the worker owns (a session must not own the task that ends it)."""

    def end_call(self, identity: str) -> None: ...

    def leave_room(self) -> None: ...


# The reason a room worker ends with after ``leave_room``: the service stays out of that room.
LEFT_BY_MODEL = "the model called leave_room"


class WorkerActions:
    """``end_call`` removes the human from the room with LiveKit's server API (a phone caller is
    hung up; an app sees ``PARTICIPANT_REMOVED``), which ends their session; ``leave_room`` stops
    the worker."""

    def __init__(
        self, settings: Settings, room: str, tasks: TaskSet, stop: Callable[[str], None]
    ) -> None:
        self._settings = settings
        self._room = room
        self._tasks = tasks
        self._stop = stop

    def end_call(self, identity: str) -> None:
        self._tasks.create_task(self._remove(identity), name=f"end-call-{identity}")

    def leave_room(self) -> None:
        logger.info("leaving the room: the model called leave_room", extra={"room": self._room})
        self._stop(LEFT_BY_MODEL)

    async def _remove(self, identity: str) -> None:
        settings = self._settings
        assert settings.livekit_api_key and settings.livekit_api_secret
        extra = {"room": self._room, "participant": identity}
        client = api.LiveKitAPI(
            settings.livekit_http_url,
            settings.livekit_api_key,
            settings.livekit_api_secret.get_secret_value(),
        )
        try:
            await asyncio.wait_for(
                client.room.remove_participant(
                    api.RoomParticipantIdentity(room=self._room, identity=identity)
                ),
                REMOVE_TIMEOUT,
            )
            logger.info("call ended by the model (end_call)", extra=extra)
        except Exception as exc:  # timeouts, Twirp and aiohttp errors alike
            logger.warning("end_call could not remove the participant: %s", exc, extra=extra)
        finally:
            await client.aclose()
