"""Make-before-break at the session limit, in a real room: the emulator's ``max_session_s`` and
a short ``session_rollover_s`` make an hour happen in seconds."""

from __future__ import annotations

import pytest

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from tests.support.env import BridgeSettings
from tests.support.room_harness import Transcript, humans
from tests.support.room_worker import call_of, call_ready, room_name, wait_for, worker

pytestmark = pytest.mark.timeout(90)

CPS = 15.0  # the emulator's speaking rate (chars per second of answer audio)


async def test_rollover_waits_for_a_quiet_moment_and_nothing_is_cut(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    # The service would end each call after 30 s; the bridge rolls over after 2 s of call age,
    # which falls in the middle of the first answer: the switch must wait until it has played.
    emulator.emulator.options.max_session_s = 30.0
    emulator.emulator.options.chars_per_second = CPS
    room = room_name()
    settings = bridge_settings(session_rollover_s=2.0, video_enabled=False)
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(settings, room) as bridge,
    ):
        await call_ready(bridge, "alice")
        session = bridge.sessions["alice"]
        calls = [call_of(emulator, bridge, "alice")]
        for turn in range(1, 4):
            await alice.say(0.6, pause=0.2)
            # The rollover age passes while the answer plays; the next call waits for quiet.
            await wait_for(lambda: session.call_id not in (None, calls[-1].id), timeout=30)
            calls.append(call_of(emulator, bridge, "alice"))
            # Planned, not expired: we hung the old call up, after the answer had played.
            await wait_for(lambda: calls[-2].state == "ended")
            assert calls[-2].ended_reason == "hangup"
            answers = alice.final_transcripts(bridge.identity)
            assert len(answers) == turn

            # The conversation came along: the new call holds every turn so far.
            def carried(turn: int = turn, answers: list[Transcript] = answers) -> bool:
                texts = [item["text"] for item in calls[-1].snapshot()["items"]]
                users = sum(text.startswith("utterance") for text in texts)
                return users == turn and all(a.text in texts for a in answers)

            await wait_for(carried, timeout=5)
        assert session.stats.failures == {}
        assert session.rollover.rollovers >= 3
        # Every answer was played to its end by the call that made it, before the switch.
        spoken = [len(a.text) / CPS for a in alice.final_transcripts(bridge.identity)]
        played = [call.snapshot()["audio_out_s"] for call in calls[:3]]
        assert all(abs(p - s) <= 0.1 for p, s in zip(played, spoken, strict=True)), (played, spoken)
        # ...and heard in the room, none of it after the last switch (what the human's decoder
        # makes of it under load is not asserted: it conceals and stretches).
        track = alice.agent_tracks()[0]
        assert track.loud
        assert not [t for t in track.loud if t > session.rollover.switched_at[-1]]
        for call in calls[:-1]:
            assert call.events_out.get("input_audio_buffer.speech_started", 0) <= 1
        # The room saw no restart: one answer track, and never back to initializing.
        states = list(alice.states)
        assert "initializing" not in states[states.index("listening") :], states
        assert [a.sid for a in alice.agent_tracks()] == [track.sid]
