"""Shared mode: one model call for the whole room (``mode = shared``).

A SharedSession is a ParticipantSession whose uplink is every human's microphone mixed
(bridge/room/mixer.py) and whose one answer track, named ``room``, is heard by everyone. What
differs from a one-to-one session:

* each committed user turn is attributed to whoever spoke most in its span, and its transcript is
  published on that human's behalf (sender = them, track = their microphone);
* the conversation record (carried over to a replaced call) labels each turn with its speaker;
* chat from anyone is a labelled text turn (``[Alice] ...``), under the room's response policy;
* the instructions say who is present (kept current) and that the channel is the whole room;
* video is the active speaker's camera (the room worker picks it);
* tools act for whoever took the turn the model answered (an RPC goes to their app, an HTTP tool
  is told their identity), and ``end_call`` is not offered: hanging up would remove a person from
  the meeting (``leave_room`` still is);
* it takes one slot of the session budget, however many humans it serves.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import TypeVar

from livekit import rtc

from bridge.realtime import RealtimeClosedError
from bridge.realtime import events as ev
from bridge.room.budget import SessionCost
from bridge.room.meeting import label
from bridge.room.mixer import MixedMicrophones
from bridge.room.session import ParticipantSession, RoomContext
from bridge.room.tools.builtins import RoomActions
from bridge.room.tools.http import Caller
from bridge.settings.config import SessionOverrides, Settings, apply_overrides

# Key of the shared session among a worker's sessions and in the agent's attributes.
SHARED = "*"
TRACK_NAME = "room"
TURNS_KEPT = 64
V = TypeVar("V")


class SharedSession(ParticipantSession):
    answer_name = TRACK_NAME

    def __init__(
        self,
        *,
        room: RoomContext,
        settings: Settings,
        cost: SessionCost,
        tool_actions: RoomActions | None = None,
    ) -> None:
        self.mics = MixedMicrophones(settings)
        super().__init__(
            room=room,
            settings=without_end_call(settings),
            identity=SHARED,
            name="everyone",
            mic=self.mics,
            mic_sid="",
            cost=cost,
            tool_actions=tool_actions,
        )
        self._names: dict[str, str] = {}  # identity -> name
        self._mic_sids: dict[str, str] = {}  # identity -> microphone track sid
        self._spans: OrderedDict[str, tuple[int, int | None]] = OrderedDict()
        self._speakers: OrderedDict[str, str] = OrderedDict()  # item id -> identity
        self._last_speaker: str | None = None
        self._turn_by: str | None = None  # who took the latest turn, spoken or chatted

    # ---- microphones -------------------------------------------------------------------------

    def add_microphone(self, identity: str, name: str, track: rtc.Track, mic_sid: str) -> None:
        self._names[identity] = name
        self._mic_sids[identity] = mic_sid
        self.mics.add(identity, track)

    async def remove_microphone(self, identity: str) -> None:
        await self.mics.remove(identity)
        self._mic_sids.pop(identity, None)

    @property
    def microphones(self) -> list[str]:
        return self.mics.identities()

    async def _close(self) -> None:
        await super()._close()
        await self.mics.aclose()

    # ---- who spoke -----------------------------------------------------------------------------

    def observe(self, event: ev.ServerEvent) -> None:
        if isinstance(event, ev.SpeechStarted):
            self._keep(self._spans, event.item_id, (event.audio_start_ms, None))
        elif isinstance(event, ev.SpeechStopped):
            start, _ = self._spans.get(event.item_id, (event.audio_end_ms, None))
            self._keep(self._spans, event.item_id, (start, event.audio_end_ms))
            self._attribute(event.item_id)

    def _attribute(self, item_id: str) -> str | None:
        who = self._speakers.get(item_id)
        if who is not None:
            return who
        span = self._spans.get(item_id)
        if span is not None:
            who = self.mics.speaker(*span)
        else:  # a turn without VAD events (committed by us): the last ten seconds
            now = time.monotonic()
            who = self.mics.loudest(now - 10.0, now)
        who = who or self._last_speaker
        if who is not None:
            self._keep(self._speakers, item_id, who)
            self._last_speaker = who
            self._turn_by = who
        return who

    def speaker(self, item_id: str) -> tuple[str, str] | None:
        who = self._attribute(item_id)
        if who is None:
            return None
        return who, self._mic_sids.get(who, "")

    def speaker_of(self, item_id: str) -> str | None:
        """The identity a turn was attributed to (for tests and logs)."""
        return self._speakers.get(item_id)

    def speaker_of_last(self) -> str | None:
        """Who spoke the latest attributed turn."""
        return next(reversed(self._speakers.values()), None)

    @staticmethod
    def _keep(table: OrderedDict[str, V], key: str, value: V) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > TURNS_KEPT:
            table.popitem(last=False)

    # ---- conversation ----------------------------------------------------------------------------

    def user_said(self, item_id: str, transcript: str) -> None:
        who = self._attribute(item_id)
        name = self._names.get(who, who) if who is not None else "someone"
        text = label(name, transcript)
        self.conversation.own("user", text, self.conversation.spoken_at(item_id))

    def answered(self, transcript: str) -> None:
        self.conversation.own("assistant", transcript, self.turns.answer_started)

    def chat(self, identity: str, name: str, text: str) -> None:
        """Chat from anyone: a labelled text turn, under the room's response policy."""
        self._names.setdefault(identity, name)
        self._turn_by = identity
        self.send_text(label(name, text))

    def _tool_caller(self) -> Caller | None:
        """The person whose turn the model answered with a tool call: the latest turn's."""
        who = self._turn_by
        return Caller(who, self._names.get(who, who)) if who is not None else None

    def _instructions(self) -> str:
        return self._meeting.instructions(self.settings.instructions, None)

    def presence_changed(self) -> None:
        call = self.call
        if call is None:
            return
        with contextlib.suppress(RealtimeClosedError):  # the next call gets them at set-up
            call.update_session(instructions=self._instructions())


def without_end_call(settings: Settings) -> Settings:
    """The settings of a shared call: ``end_call`` is not offered (it would remove a person from
    the meeting; ``leave_room`` is how the agent goes)."""
    kept = [tool.name for tool in settings.tools if tool.builtin != "end_call"]
    if len(kept) == len(settings.tools):
        return settings
    return apply_overrides(settings, SessionOverrides(tools=kept))
