"""When is a conversation quiet enough to switch calls? (rollover.QuietWatch)"""

from __future__ import annotations

import time
from typing import Any

from bridge.realtime.events import parse_server_event
from bridge.room.rollover import QUIET_GAP_S, RESPONSE_WAIT_S, QuietWatch


def event(kind: str, **fields: Any) -> Any:
    return parse_server_event({"type": kind, "event_id": "ev", **fields})


def response(kind: str, rid: str) -> Any:
    return event(kind, response={"id": rid, "object": "realtime.response", "status": "x"})


def settled(watch: QuietWatch, seconds: float = QUIET_GAP_S + 0.1) -> QuietWatch:
    """Pretend the last event happened ``seconds`` ago."""
    watch.last_change -= seconds
    return watch


def quiet(watch: QuietWatch, queued: float = 0.0) -> bool:
    return watch.quiet(since=0.0, audio_queued=queued)


def test_quiet_only_between_turns() -> None:
    watch = QuietWatch(expect_responses=True, expect_transcripts=True)
    assert quiet(settled(watch))
    watch.observe(event("input_audio_buffer.speech_started", item_id="u1"))
    assert not quiet(settled(watch))  # the human is speaking
    watch.observe(event("input_audio_buffer.speech_stopped", item_id="u1"))
    watch.observe(event("input_audio_buffer.committed", item_id="u1"))
    assert not quiet(settled(watch))  # an answer is due, the transcript is pending
    watch.observe(response("response.created", "r1"))
    watch.observe(
        event(
            "conversation.item.input_audio_transcription.completed",
            item_id="u1",
            content_index=0,
            transcript="hi",
        )
    )
    assert not quiet(settled(watch))  # the response is open
    watch.observe(event("output_audio_buffer.started", response_id="r1"))
    watch.observe(response("response.done", "r1"))
    assert not quiet(settled(watch))  # its audio still plays
    watch.observe(event("output_audio_buffer.stopped", response_id="r1"))
    assert not quiet(watch)  # just now: wait for the gap
    assert not quiet(settled(watch), queued=0.2)  # still queued toward the room
    assert quiet(settled(watch))


def test_recent_chat_counts_as_activity() -> None:
    watch = settled(QuietWatch(expect_responses=True, expect_transcripts=True))
    assert not watch.quiet(since=watch.last_change + QUIET_GAP_S, audio_queued=0.0)


def test_a_response_that_never_comes_does_not_hold_the_switch_forever() -> None:
    watch = QuietWatch(expect_responses=True, expect_transcripts=False)
    watch.observe(event("input_audio_buffer.committed", item_id="u1"))
    assert not quiet(settled(watch))
    later = time.monotonic() + RESPONSE_WAIT_S + 0.1
    assert watch.quiet(since=0.0, audio_queued=0.0, now=later)


def test_without_auto_responses_or_transcription_a_commit_is_just_a_turn() -> None:
    watch = QuietWatch(expect_responses=False, expect_transcripts=False)
    watch.observe(event("input_audio_buffer.committed", item_id="u1"))
    assert quiet(settled(watch))
