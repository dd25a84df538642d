"""The turn tracker (bridge/room/turns.py) without LiveKit or the emulator: the agent state, when
an answer is cut, when the conversation is quiet enough to switch calls, and the transitions a
listener (tracing) sees."""

from __future__ import annotations

import pytest

from bridge.room.agent_state import AgentState
from bridge.room.turns import (
    QUIET_GAP_S,
    RESPONSE_WAIT_S,
    TRANSCRIPT_WAIT_S,
    Answering,
    ResponseOutcome,
    TurnEvent,
    TurnTracker,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tools:
    busy = False


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[TurnEvent, float, str]] = []
        self.outcomes: list[ResponseOutcome | None] = []

    def turn_event(
        self, event: TurnEvent, at: float, detail: str, outcome: ResponseOutcome | None = None
    ) -> None:
        self.events.append((event, at, detail))
        if event is TurnEvent.RESPONSE_DONE:
            self.outcomes.append(outcome)

    def kinds(self) -> list[TurnEvent]:
        return [e for e, _, _ in self.events]


def tracker(
    *, responses: bool = True, transcripts: bool = True
) -> tuple[TurnTracker, Clock, list[AgentState]]:
    clock = Clock()
    states: list[AgentState] = []
    turns = TurnTracker(
        on_state=states.append,
        answering=Answering("auto" if responses else "addressed", transcripts),
        clock=clock,
    )
    turns.call_up()
    return turns, clock, states


def settled(turns: TurnTracker, clock: Clock, seconds: float = QUIET_GAP_S + 0.1) -> TurnTracker:
    """Let ``seconds`` pass since the last transition."""
    clock.now += seconds
    return turns


def quiet(turns: TurnTracker, queued: float = 0.0) -> bool:
    return turns.quiet(since=0.0, audio_queued=queued)


# ---- quiet moments (what the rollover waits for; was rollover.QuietWatch) ---------------------


def test_quiet_only_between_turns() -> None:
    turns, clock, _ = tracker()
    assert quiet(settled(turns, clock))
    turns.speech_started("u1")
    assert not quiet(settled(turns, clock))  # the human is speaking
    turns.speech_stopped()
    turns.committed("u1")
    assert not quiet(settled(turns, clock))  # an answer is due, the transcript is pending
    turns.response_created("r1")
    turns.transcript_done("u1")
    assert not quiet(settled(turns, clock))  # the response is open
    turns.audio_started()
    turns.response_done("r1")
    assert not quiet(settled(turns, clock))  # its audio still plays
    turns.audio_stopped()
    assert not quiet(turns)  # just now: wait for the gap
    assert not quiet(settled(turns, clock), queued=0.2)  # still queued toward the room
    assert quiet(turns)


def test_recent_activity_and_sound_count() -> None:
    turns, clock, _ = tracker()
    settled(turns, clock)
    turns.chatted()  # a chat is activity
    assert not quiet(turns)
    assert quiet(settled(turns, clock))
    # Sound heard (the agent's, or the human's level while watched) counts as well.
    assert not turns.quiet(since=clock.now - QUIET_GAP_S / 2, audio_queued=0.0)


def test_a_response_that_never_comes_does_not_hold_the_switch_forever() -> None:
    turns, clock, _ = tracker(transcripts=False)
    turns.committed("u1")
    assert not quiet(settled(turns, clock))
    clock.now += RESPONSE_WAIT_S
    assert quiet(turns)


def test_a_transcript_that_never_comes_does_not_hold_the_switch_forever() -> None:
    turns, clock, _ = tracker(responses=False)
    turns.committed("u1")
    assert not quiet(settled(turns, clock))
    clock.now += TRANSCRIPT_WAIT_S
    assert quiet(turns)


def test_without_auto_responses_or_transcription_a_commit_is_just_a_turn() -> None:
    turns, clock, _ = tracker(responses=False, transcripts=False)
    turns.committed("u1")
    assert quiet(settled(turns, clock))


def test_tools_at_work_are_not_quiet() -> None:
    turns, clock, _ = tracker()
    tools = Tools()
    turns.tools = tools
    tools.busy = True
    assert not quiet(settled(turns, clock))
    tools.busy = False
    assert quiet(turns)


# ---- the agent state and barge-in --------------------------------------------------------------


def test_a_spoken_turn_and_its_answer_move_the_agent_state() -> None:
    turns, _, states = tracker()
    assert states == [AgentState.LISTENING]
    assert turns.speech_started("u1") is False  # nothing to cut
    turns.speech_stopped()
    turns.response_created("r1")
    turns.audio_started()
    turns.response_done("r1")  # the audio still plays: still speaking
    assert turns.state is AgentState.SPEAKING and turns.responding
    turns.audio_stopped()
    assert states == [
        AgentState.LISTENING,
        AgentState.LISTENING,
        AgentState.THINKING,
        AgentState.THINKING,
        AgentState.SPEAKING,
        AgentState.LISTENING,
    ]
    assert not turns.responding


def test_speech_over_an_answer_is_a_barge_in() -> None:
    turns, _, _ = tracker()
    turns.response_created("r1")
    turns.audio_started()
    assert turns.speech_started("u2") is True  # cut: the session drops what was queued
    assert not turns.audio_playing and turns.state is AgentState.LISTENING
    turns.audio_cleared()
    turns.response_done("r1")
    assert not turns.responding
    # A response created but not yet speaking is cut too.
    turns.response_created("r2")
    assert turns.speech_started("u3") is True


def test_while_tools_run_the_agent_is_thinking_between_answers() -> None:
    turns, _, states = tracker()
    tools = Tools()
    turns.tools = tools
    turns.response_created("r1")
    tools.busy = True  # the response asked for tools; the runner started them
    turns.thinking()
    turns.response_done("r1")
    assert states[-1:] == [AgentState.THINKING]
    tools.busy = False
    turns.response_created("r2")
    turns.audio_started()
    turns.response_done("r2")
    turns.audio_stopped()
    assert states[-1:] == [AgentState.LISTENING]


def test_without_auto_responses_speech_ending_is_not_thinking() -> None:
    turns, _, states = tracker(responses=False)
    turns.speech_started("u1")
    turns.speech_stopped()
    assert states[-1:] == [AgentState.LISTENING]
    turns.answer_requested()  # addressed: we ask for the answer
    assert states[-1:] == [AgentState.THINKING]


def test_stop_answering_listens_and_expects_no_answer() -> None:
    turns, clock, states = tracker()
    turns.response_created("r1")
    turns.stop_answering(transcribe=False, call_up=True)
    assert states[-1:] == [AgentState.LISTENING]
    assert turns.answering == Answering("listen", transcribes=False)
    turns.response_done("r1")  # the one cancelled
    turns.speech_started("u1")
    turns.speech_stopped()
    turns.committed("u1")
    assert states[-1:] == [AgentState.LISTENING]
    assert quiet(settled(turns, clock))  # nothing due: no answer, no transcript
    turns.connecting()
    turns.stop_answering(transcribe=False, call_up=False)  # no call: the state stays
    assert states[-1:] == [AgentState.INITIALIZING]


def test_a_new_call_starts_clean() -> None:
    turns, clock, states = tracker()
    turns.response_created("r1")
    turns.audio_started()
    turns.connecting()
    assert states[-1:] == [AgentState.INITIALIZING]
    turns.call_up()
    assert not turns.responding and turns.response_id is None
    assert quiet(settled(turns, clock))
    turns.idle()
    assert states[-1:] == [AgentState.IDLE]


# ---- what a listener (tracing) sees --------------------------------------------------------------


def test_listeners_see_each_transition_with_its_time() -> None:
    turns, clock, _ = tracker()
    seen = Recorder()
    turns.listeners.append(seen)
    turns.speech_started("u1")
    clock.now += 1.0
    turns.speech_stopped()
    turns.response_created("r1")
    turns.audio_started()
    clock.now += 0.3
    turns.answer_audio(clock.now)
    turns.answer_audio(clock.now + 0.02)  # only the first frame of an answer counts
    turns.response_done("r1")
    turns.audio_stopped()
    turns.response_created("r2")
    turns.audio_started()
    turns.speech_started("u2")  # over the answer
    assert seen.kinds() == [
        TurnEvent.SPEECH_STARTED,
        TurnEvent.SPEECH_STOPPED,
        TurnEvent.RESPONSE_CREATED,
        TurnEvent.FIRST_AUDIO,
        TurnEvent.RESPONSE_DONE,
        TurnEvent.ANSWER_ENDED,
        TurnEvent.RESPONSE_CREATED,
        TurnEvent.BARGE_IN,
        TurnEvent.SPEECH_STARTED,
    ]
    assert seen.events[0] == (TurnEvent.SPEECH_STARTED, 1000.0, "u1")
    assert seen.events[3] == (TurnEvent.FIRST_AUDIO, 1001.3, "")
    assert seen.events[2][2] == "r1"


def test_listeners_get_the_rooms_times_pauses_content_and_how_a_response_ended() -> None:
    """Speech as the room heard it, the answer's audio pausing and resuming in the room (the
    pump tells each stretch), what was said and typed, and a response's outcome."""
    turns, clock, _ = tracker()
    seen = Recorder()
    turns.listeners.append(seen)
    turns.speech_started("u1", heard=999.7)
    clock.now += 1.0
    turns.speech_stopped(heard=1000.8)
    turns.transcript_done("u1", "order 42")
    turns.response_created("r1")
    turns.answer_audio(1001.2)
    turns.answer_quiet(1001.9)  # a pause
    turns.answer_quiet(1002.0)  # no sound since: nothing to tell
    turns.answer_audio(1002.4)
    turns.answer_quiet(1003.0)
    outcome = ResponseOutcome(status="completed", cost_usd=0.01, tool_calls=1)
    turns.response_done("r1", outcome)
    turns.transcript_done("u2")  # failed: no text
    turns.chatted("hello")
    assert seen.events == [
        (TurnEvent.SPEECH_STARTED, 999.7, "u1"),
        (TurnEvent.SPEECH_STOPPED, 1000.8, ""),
        (TurnEvent.TRANSCRIPT, 1001.0, "order 42"),
        (TurnEvent.RESPONSE_CREATED, 1001.0, "r1"),
        (TurnEvent.FIRST_AUDIO, 1001.2, ""),
        (TurnEvent.AUDIO_PAUSED, 1001.9, ""),
        (TurnEvent.AUDIO_RESUMED, 1002.4, ""),
        (TurnEvent.AUDIO_PAUSED, 1003.0, ""),
        (TurnEvent.RESPONSE_DONE, 1001.0, "r1"),
        (TurnEvent.TEXT, 1001.0, "hello"),
    ]
    assert seen.outcomes == [outcome]


def test_a_cut_answer_resumes_nothing_the_next_answer_starts_afresh() -> None:
    turns, clock, _ = tracker()
    seen = Recorder()
    turns.listeners.append(seen)
    turns.response_created("r1")
    turns.audio_started()
    turns.answer_audio(clock.now)
    assert turns.speech_started("u1")  # cut: its audio dropped
    turns.answer_quiet(clock.now)  # the pump's silence after the flush
    turns.response_created("r2")
    turns.answer_audio(clock.now + 1)
    assert [k for k in seen.kinds() if k.name.startswith(("FIRST", "AUDIO"))] == [
        TurnEvent.FIRST_AUDIO,
        TurnEvent.FIRST_AUDIO,
    ]


class Broken:
    def turn_event(
        self, event: TurnEvent, at: float, detail: str, outcome: ResponseOutcome | None = None
    ) -> None:
        raise RuntimeError("exporter gone")


def test_a_failing_listener_costs_neither_the_state_nor_the_other_listeners(
    caplog: pytest.LogCaptureFixture,
) -> None:
    turns, _, states = tracker()
    recorder = Recorder()
    turns.listeners += [Broken(), recorder]
    turns.speech_started("item_1")
    turns.speech_stopped()
    assert states[-2:] == [AgentState.LISTENING, AgentState.THINKING]
    assert recorder.kinds() == [TurnEvent.SPEECH_STARTED, TurnEvent.SPEECH_STOPPED]
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all("Broken failed on" in line and "exporter gone" in line for line in lines)
