"""Agent state (``lk.agent.state``) per session and for the room, published as attributes.

Each session has its own state; the room-level value is the most active one, so a front end's
``useVoiceAssistant`` shows "speaking" while any human is being answered. Updates are coalesced
by one writer task so attribute changes never race or pile up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from enum import Enum

from livekit import rtc

from bridge.aio import TaskSet
from bridge.room.identity import (
    HUMAN_STATE_ATTRIBUTE,
    HUMAN_TRACK_ATTRIBUTE,
    NOTICE_ATTRIBUTE,
    STATE_ATTRIBUTE,
    TOOL_ATTRIBUTE,
)
from bridge.room.sdk import LiveKitError, sdk_call

logger = logging.getLogger(__name__)

SET_TIMEOUT = 10.0  # seconds for LiveKit to confirm an attribute update


class AgentState(Enum):
    INITIALIZING = "initializing"
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


# Most active first.
_ACTIVITY = [
    AgentState.SPEAKING,
    AgentState.THINKING,
    AgentState.LISTENING,
    AgentState.INITIALIZING,
    AgentState.IDLE,
]


def room_state(states: list[AgentState]) -> AgentState:
    if not states:
        return AgentState.IDLE
    return min(states, key=_ACTIVITY.index)


class AttributeWriter:
    """Keeps the agent participant's attributes in step with the sessions' states."""

    def __init__(self, participant: rtc.LocalParticipant, tasks: TaskSet) -> None:
        self._participant = participant
        self._tasks = tasks
        self._states: dict[str, AgentState] = {}
        self._tracks: dict[str, str] = {}
        self._notice = ""
        self._running: dict[str, list[str]] = {}  # identity -> names of the tools running
        self._published: dict[str, str] = {}
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Room-level states as published, most recent last (for tests and logs).
        self.history: deque[str] = deque(maxlen=100)

    def start(self) -> None:
        self._task = self._tasks.create_task(self._run(), name="attributes")
        self._dirty.set()

    def set_state(self, identity: str, state: AgentState) -> None:
        self._states[identity] = state
        self._dirty.set()

    def set_track(self, identity: str, track_sid: str | None) -> None:
        if track_sid is None:
            self._tracks.pop(identity, None)
        else:
            self._tracks[identity] = track_sid
        self._dirty.set()

    def set_notice(self, text: str) -> None:
        self._notice = text
        self._dirty.set()

    def set_tools(self, identity: str, names: list[str]) -> None:
        """The tools running for ``identity`` now (empty: none)."""
        if names:
            self._running[identity] = names
        else:
            self._running.pop(identity, None)
        self._dirty.set()

    def remove(self, identity: str) -> None:
        self._states.pop(identity, None)
        self._tracks.pop(identity, None)
        self._running.pop(identity, None)
        self._dirty.set()

    @property
    def room_state(self) -> AgentState:
        return room_state(list(self._states.values()))

    def _desired(self) -> dict[str, str]:
        wanted = {STATE_ATTRIBUTE: self.room_state.value}
        for identity, state in self._states.items():
            wanted[HUMAN_STATE_ATTRIBUTE + identity] = state.value
        for identity, sid in self._tracks.items():
            wanted[HUMAN_TRACK_ATTRIBUTE + identity] = sid
        if self._notice:
            wanted[NOTICE_ATTRIBUTE] = self._notice
        running = sorted({name for names in self._running.values() for name in names})
        if running:
            wanted[TOOL_ATTRIBUTE] = ", ".join(running)
        # LiveKit deletes an attribute that is set to the empty string.
        for key in self._published:
            wanted.setdefault(key, "")
        return wanted

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            wanted = self._desired()
            changed = {k: v for k, v in wanted.items() if self._published.get(k) != v}
            if not changed:
                continue
            try:
                await sdk_call(
                    self._participant.set_attributes(changed), SET_TIMEOUT, "set attributes"
                )
            except LiveKitError as exc:
                logger.warning("could not update agent attributes (%s); retrying", exc)
                await asyncio.sleep(0.5)
                self._dirty.set()
                continue
            if STATE_ATTRIBUTE in changed:
                self.history.append(changed[STATE_ATTRIBUTE])
            for key, value in changed.items():
                if value:
                    self._published[key] = value
                else:
                    self._published.pop(key, None)
