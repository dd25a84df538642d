"""ConversationState and Meeting without a network: placement by speech time, the bound, the
record a new call starts with, labels and who receives what."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.realtime import events as ev
from bridge.room.conversation import ConversationState, Line
from bridge.room.meeting import Meeting
from bridge.settings.config import ConfigError, SessionOverrides, apply_overrides, load_settings
from tests.support.env import test_settings


class Call:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, event: ev.ClientEvent) -> None:
        self.sent.append(event.model_dump(exclude_none=True))


def test_lines_are_placed_by_speech_time_and_trimmed_oldest_first() -> None:
    state = ConversationState(max_chars=30)
    call = Call()
    state.start_call(call)
    state.speech_started("item_own", at=10.0)
    state.item_added("item_own", None)  # the human's own turn, spoken at t=10
    state.add(Line(12.0, "user", "[Alice] later"))  # 13 chars: after it (appended)
    state.add(Line(9.0, "user", "[Bob] earlier"))  # 13 chars: before it
    first, second = call.sent
    assert "previous_item_id" not in first
    assert second["previous_item_id"] == "root"
    assert state.item_ids()[1] == "item_own"
    state.add(Line(13.0, "assistant", "[answering Alice] ok"))  # 20 chars: over 30
    deleted = [e["item_id"] for e in call.sent if e["type"] == "conversation.item.delete"]
    assert deleted == [second["item"]["id"], first["item"]["id"]]  # oldest first
    assert state.trimmed == 2 and state.trimmed_chars == 26
    assert state.added_chars() == 20


def test_a_new_call_starts_with_the_record() -> None:
    state = ConversationState(max_chars=100)
    state.seed([Line(2.0, "user", "[Bob] second"), Line(1.0, "user", "[Alice] first")])
    state.own("assistant", "my answer", 3.0)
    state.add(Line(4.0, "user", "[Carol] no call yet"))  # recorded only
    call = Call()
    state.start_call(call)
    texts = [e["item"]["content"][0]["text"] for e in call.sent]
    assert texts == ["[Alice] first", "[Bob] second", "my answer", "[Carol] no call yet"]
    assert call.sent[2]["item"]["role"] == "assistant"
    assert call.sent[2]["item"]["content"][0]["type"] == "output_text"


class Listener:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.presence = 0

    def meeting_line(self, line: Line) -> None:
        self.lines.append(line.text)

    def presence_changed(self) -> None:
        self.presence += 1


def test_meeting_labels_and_fans_out_to_the_others() -> None:
    meeting = Meeting(test_settings())
    alice, bob = Listener(), Listener()
    meeting.joined("alice", "Alice", announce=False)
    meeting.listen("alice", alice)
    meeting.listen("bob", bob)
    meeting.joined("bob", "Bob")
    meeting.said("alice", "Alice", "ship Friday", 1.0)
    meeting.answered("alice", "Alice", "Friday works", 2.0)
    meeting.said("bob", "Bob", "agreed", 3.0, chat=True)
    assert alice.lines == ["[meeting] Bob joined", "[Bob, in chat] agreed"]
    assert bob.lines == ["[Alice] ship Friday", "[answering Alice] Friday works"]
    assert alice.presence == bob.presence == 1
    text = meeting.instructions("Base.", "Bob")
    assert "People present: Alice, Bob." in text and "channel is with Bob" in text


def test_private_audience_or_setting_off_shares_nothing() -> None:
    for settings in (test_settings(audience="private"), test_settings(meeting_context=False)):
        meeting = Meeting(settings)
        bob = Listener()
        meeting.listen("bob", bob)
        meeting.said("alice", "Alice", "secret", 1.0)
        assert bob.lines == [] and meeting.recent() == []
        assert meeting.instructions("Base.", "Bob") == "Base."


def test_shared_mode_refuses_a_private_audience() -> None:
    with pytest.raises(ConfigError, match="mode 'shared' needs audience 'room'"):
        load_settings(overrides={"mode": "shared", "audience": "private"})
    overrides = SessionOverrides.model_validate({"mode": "shared", "meeting_context": False})
    settings = apply_overrides(test_settings(), overrides)
    assert settings.mode == "shared" and not settings.meeting_enabled
    with pytest.raises(ValueError, match="needs audience 'room'"):
        apply_overrides(test_settings(audience="private"), SessionOverrides(mode="shared"))
