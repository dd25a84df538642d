"""The room worker with a real livekit-server, the emulator and humans joined with the SDK."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import pytest
from livekit import rtc
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from bridge.room import worker as worker_module
from bridge.room.capacity import SessionBudget
from bridge.room.worker import RoomWorker
from tests.support.env import EMULATOR_KEY, LOOPBACK_ENV, BridgeSettings
from tests.support.livekit import joined
from tests.support.room_harness import Human, humans
from tests.support.room_worker import call_of, call_ready, room_name, wait_for, worker

pytestmark = pytest.mark.timeout(90)


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    it = iter(seen)
    return all(state in it for state in wanted)


async def test_one_human_conversation(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(), room) as bridge,
    ):
        await wait_for(lambda: "alice" in bridge.sessions and bridge.sessions["alice"].stats.calls)
        await alice.wait_until(lambda: bool(alice.agent_tracks()))
        (track,) = alice.agent_tracks()
        assert track.name == "answer-1"
        assert alice.answer_track() is track  # bridge.track.alice names it
        for answers in (1, 2):
            loud_before = len(track.loud)
            await alice.say(1.0, pause=0.7)

            def answered(n: int = answers) -> bool:
                return len(alice.final_transcripts(bridge.identity)) >= n

            def heard(n: int = loud_before) -> bool:
                return len(track.loud) - n > 40

            await alice.wait_until(answered)
            await alice.wait_until(heard)
        await wait_for(lambda: alice.states[-1:] == ["listening"])

        assert alice.mic is not None
        human_finals = alice.final_transcripts("alice")
        agent_finals = alice.final_transcripts(bridge.identity)
        assert human_finals[0].text.startswith("utterance 1, ")
        assert set(human_finals[0].attributes) == {
            "lk.segment_id",
            "lk.transcribed_track_id",
            "lk.transcription_final",
        }
        assert human_finals[0].attributes["lk.transcribed_track_id"] == alice.mic.sid
        assert human_finals[0].attributes["lk.segment_id"].startswith("SG_")
        assert agent_finals[0].text == f"Answer 1. I heard: {human_finals[0].text}."
        assert agent_finals[0].attributes["lk.transcribed_track_id"] == track.sid
        assert agent_finals[0].attributes["lk.transcription_final"] == "true"
        assert (
            agent_finals[0].attributes["lk.segment_id"]
            != human_finals[0].attributes["lk.segment_id"]
        )
        # Interim user transcripts came first, final last, for the same segment.
        same = [
            t
            for t in alice.transcripts
            if t.attributes["lk.segment_id"] == human_finals[0].attributes["lk.segment_id"]
        ]
        # Interim transcripts (growing text) and exactly one final, with the whole text.
        assert [t.text for t in same if t.final] == [human_finals[0].text]
        interim = [t.text for t in same if not t.final]
        assert interim and all(human_finals[0].text.startswith(t.strip()) for t in interim)
        # The older transcription API carries both sides too.
        assert any(who == "alice" and final for who, _, final in alice.legacy)
        assert any(who == bridge.identity and final for who, _, final in alice.legacy)
        # lk.agent.state walks through a turn, twice.
        one_turn = ["listening", "thinking", "speaking", "listening"]
        assert is_subsequence(one_turn + one_turn[1:], alice.states), alice.states
        agent = next(
            p for p in alice.room.remote_participants.values() if p.identity == bridge.identity
        )
        assert agent.attributes["lk.agent.name"] == "assistant"
        assert agent.attributes["bridge.state.alice"] == "listening"
        assert agent.attributes["bridge.track.alice"] == track.sid
        usage = bridge.sessions["alice"].usage
        # Each turn the model heard answered once, at least the two spoken (a stall of this busy
        # test process can put a pause into an utterance, which the model then hears as two).
        assert usage.responses == usage.transcriptions >= 2, usage
        assert usage.tokens["audio_out"] > 0  # the price kinds
        assert bridge.usage.tokens == usage.tokens


async def test_two_humans_private_answers(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    emulator.emulator.options.voice_mode = "echo"  # each answer replays its own human's voice
    room = room_name()
    settings = bridge_settings(audience="private")
    async with (
        humans(livekit_server, room, "alice", "bob") as (alice, bob),
        worker(settings, room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await call_ready(bridge, "bob")
        assert call_of(emulator, bridge, "alice") is not call_of(emulator, bridge, "bob")
        await alice.wait_until(lambda: bool(alice.agent_tracks()))
        await bob.wait_until(lambda: bool(bob.agent_tracks()))
        await asyncio.gather(alice.say(0.8, freq=440, pause=0.7), bob.say(0.8, freq=880, pause=0.7))
        await alice.wait_until(lambda: sum(len(t.loud) for t in alice.agent_tracks()) > 25)
        await bob.wait_until(lambda: sum(len(t.loud) for t in bob.agent_tracks()) > 25)
        await asyncio.sleep(0.5)
        # Private: each human can subscribe only to the track that answers them.
        (for_alice,) = alice.agent_tracks()
        (for_bob,) = bob.agent_tracks()
        assert alice.answer_track() is for_alice and bob.answer_track() is for_bob
        assert abs(for_alice.frequency() - 440) < 15
        assert abs(for_bob.frequency() - 880) < 15
        # Each answer's transcript reaches only its own human, tagged with their answer track.
        await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= 1)
        await bob.wait_until(lambda: len(bob.final_transcripts(bridge.identity)) >= 1)
        for person, answer in ((alice, for_alice), (bob, for_bob)):
            tracks = {
                t.attributes["lk.transcribed_track_id"]
                for t in person.final_transcripts(bridge.identity)
            }
            assert tracks == {answer.sid}
        # And each human's own words (transcribed) reach only them, not the other human.
        await alice.wait_until(lambda: len(alice.final_transcripts("alice")) >= 1)
        await bob.wait_until(lambda: len(bob.final_transcripts("bob")) >= 1)
        await asyncio.sleep(0.5)
        assert not [t for t in alice.transcripts if t.sender == "bob"]
        assert not [t for t in bob.transcripts if t.sender == "alice"]
        assert not [entry for entry in alice.legacy + bob.legacy if entry[0] in ("alice", "bob")]
        # Alice leaves: her answer track is parked (muted, still published, nobody may have it),
        # and Carol, joining next, gets that same track: answer tracks are reused, never
        # unpublished, so the SDK's per-track native encoder is not leaked per session.
        await alice.leave()
        await wait_for(lambda: "alice" not in bridge.sessions)
        async with humans(livekit_server, room, "carol") as (carol,):
            await call_ready(bridge, "carol")
            await carol.wait_until(lambda: carol.answer_track() is not None)
            for_carol = carol.answer_track()
            assert for_carol is not None and for_carol.sid == for_alice.sid
            assert bridge.answer_tracks.published == 2
            assert [t.sid for t in carol.agent_tracks()] == [for_alice.sid]  # still private
            await carol.say(0.8, freq=660, pause=0.7)
            await carol.wait_until(lambda: len(for_carol.loud) > 25)
            assert abs(for_carol.frequency() - 660) < 15
            assert [t.sid for t in bob.agent_tracks()] == [for_bob.sid]


async def test_barge_in_flushes_room_audio(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    emulator.emulator.options.answers = ["This answer is long on purpose. " * 3]  # ~6.4 s
    room = room_name()
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await alice.wait_until(lambda: bool(alice.agent_tracks()))
        (track,) = alice.agent_tracks()
        await alice.say(0.6, pause=0.7)
        await alice.wait_until(lambda: len(track.loud) > 50)  # a second of the answer played
        # The barge-in is a turn too; hold its answer back so it cannot be mistaken for the first.
        emulator.emulator.options.answer_delay_ms = 5000
        barge_in = await alice.say(0.5, freq=300, pause=0.6)
        await asyncio.sleep(1.5)
        last_loud_before_next = max(t for t in track.loud if t < barge_in + 2.5)
        flush_s = last_loud_before_next - barge_in
        print(f"barge-in: last model frame {flush_s * 1000:.0f} ms after speech start")
        # Without the flush the answer would play ~5 more seconds.
        assert flush_s < 1.5
        assert bridge.sessions["alice"].stats.barge_ins >= 1
        # The interrupted answer's segment ends with only what was said.
        await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= 1)
        said = alice.final_transcripts(bridge.identity)[0].text
        assert 0 < len(said) < len(emulator.emulator.options.answers[0].strip())


async def test_video_is_sampled_before_the_encoder(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    settings = bridge_settings(video_fps=1.0, video_max_width=640, video_max_height=640)
    async with humans(livekit_server, room, "alice") as (alice,), worker(settings, room) as bridge:
        await call_ready(bridge, "alice")
        await alice.publish_camera(1280, 720, fps=30, seconds=5.0)
        call = call_of(emulator, bridge, "alice")
        await wait_for(lambda: call.video.frames >= 3)
        video = call.snapshot()["video"]
    assert video["fps"] <= 1.2, video
    assert (video["width"], video["height"]) == (640, 360)


async def test_leaving_ends_exactly_their_call(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    async with (
        humans(livekit_server, room, "alice"),
        worker(bridge_settings(), room) as bridge,
    ):
        bob = Human(livekit_server, room, "bob")
        await bob.join()
        await call_ready(bridge, "alice")
        await call_ready(bridge, "bob")
        alice_call, bob_call = call_of(emulator, bridge, "alice"), call_of(emulator, bridge, "bob")
        await bob.leave()
        await wait_for(lambda: bob_call.state == "ended")
        assert bob_call.ended_reason == "hangup"
        assert alice_call.state == "active"
        assert "bob" not in bridge.sessions

        bob = Human(livekit_server, room, "bob")
        await bob.join()
        await wait_for(
            lambda: (
                bridge.sessions.get("bob") is not None
                and bridge.sessions["bob"].call_id is not None
            )
        )
        assert call_of(emulator, bridge, "bob") is not bob_call
        # Unpublishing the microphone ends the session as well.
        current = call_of(emulator, bridge, "bob")
        await bob.unpublish_mic()
        await wait_for(lambda: current.state == "ended")
        await bob.leave()
        assert alice_call.state == "active"


async def test_mute_keeps_the_call_and_idle_ends_it(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(idle_timeout=2.0), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        first = call_of(emulator, bridge, "alice")
        assert alice.mic is not None
        alice.mic.track.mute()  # type: ignore[union-attr]
        await asyncio.sleep(0.8)
        assert first.state == "active"
        alice.mic.track.unmute()  # type: ignore[union-attr]
        # No speech for idle_timeout: the call ends, the state goes idle.
        await wait_for(lambda: first.state == "ended", timeout=10)
        await alice.wait_until(lambda: alice.states[-1:] == ["idle"])
        # Speaking again brings a new call.
        await alice.say(0.6, pause=0.5)
        await wait_for(lambda: bridge.sessions["alice"].call_id is not None)
        assert call_of(emulator, bridge, "alice") is not first


async def test_listen_policy_publishes_no_audio(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(response_policy="listen"), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await alice.say(0.8, pause=0.7)
        await alice.wait_until(lambda: len(alice.final_transcripts("alice")) >= 1)
        await asyncio.sleep(1.0)
        agent = bridge.room.local_participant
        assert not agent.track_publications
        assert alice.final_transcripts(bridge.identity) == []
        assert bridge.sessions["alice"].usage.responses == 0


async def test_addressed_policy_answers_only_when_addressed(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    emulator.emulator.options.transcripts = [
        "let us look at the numbers",
        "Assistant, what do you think?",
    ]
    room = room_name()
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(response_policy="addressed"), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await alice.say(0.7, pause=0.7)
        await alice.wait_until(lambda: len(alice.final_transcripts("alice")) >= 1)
        await asyncio.sleep(1.2)
        assert alice.final_transcripts(bridge.identity) == []
        await alice.say(0.7, pause=0.7)
        await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= 1)
        assert "Assistant, what do you think?" in alice.final_transcripts(bridge.identity)[0].text


async def test_chat_is_a_text_turn(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await alice.chat("what is on the agenda")
        await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= 1)
        assert "what is on the agenda" in alice.final_transcripts(bridge.identity)[0].text


async def test_a_join_that_times_out_is_finished_and_left(
    bridge_settings: BridgeSettings,
    livekit_server: LiveKitServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """start() gives up on a slow connect, but the SDK's connect is never cancelled (cancelled
    after the server accepted it, the SDK's native side SIGTERMs the process 15 s later); aclose()
    lets it finish and leaves the room, so no agent stays behind in it."""
    monkeypatch.setattr(worker_module, "JOIN_TIMEOUT", 0.001)
    room = room_name()
    async with humans(livekit_server, room, "alice") as (alice,):
        bridge = RoomWorker(bridge_settings(), room)
        with pytest.raises(TimeoutError):
            await bridge.start()
        connecting = bridge._connecting
        assert connecting is not None and not connecting.done()  # still running in the SDK
        await bridge.aclose("join failed")
        assert connecting.done() and connecting.exception() is None  # it did join, then left
        assert not bridge.room.isconnected()
        await alice.wait_until(lambda: bridge.identity not in alice.room.remote_participants)


async def test_refused_call_recovers_and_401_ends_the_session(
    bridge_settings: BridgeSettings,
    livekit_server: LiveKitServer,
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.emulator.options.fail_calls_status = 429
    emulator.emulator.options.fail_calls_count = 1
    room = room_name()
    async with (
        humans(livekit_server, room, "alice"),
        worker(bridge_settings(), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        assert bridge.sessions["alice"].stats.failures["http_429"] == 1

    caplog.set_level(logging.INFO)
    room = room_name()
    wrong = bridge_settings(openai_api_key=SecretStr("sk-wrong-000000000000"))
    async with humans(livekit_server, room, "alice"), worker(wrong, room) as bridge:
        await wait_for(lambda: "alice" in bridge.sessions and bridge.sessions["alice"].ended_reason)
        session = bridge.sessions["alice"]
        assert session.stats.failures == {"http_401": 1}
        assert bridge.end_reason is None  # the room goes on
    lines = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and "not retryable" in r.getMessage()
    ]
    assert len(lines) == 1
    assert "sk-wrong" not in caplog.text


async def test_duplicate_identity_leaves_and_stays_out(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    async with (
        joined(livekit_server, room, "alice"),
        worker(bridge_settings(), room) as first,
        worker(bridge_settings(), room) as second,
    ):
        reason = await asyncio.wait_for(first.wait(), 10)
        assert reason == "duplicate identity" and first.duplicate
        assert second.end_reason is None


async def test_phone_callers_are_humans_other_agents_are_not(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    async with (
        humans(livekit_server, room, "caller", kind="sip") as (caller,),
        humans(livekit_server, room, "other-agent", kind="agent"),
        worker(bridge_settings(), room) as bridge,
    ):
        await wait_for(lambda: "caller" in bridge.sessions)
        await asyncio.sleep(0.5)
        assert set(bridge.sessions) == {"caller"}
        assert caller.mic is not None
        # The agent joins auto-subscribed; what it does not bridge is dropped, whether it was
        # in the room before the agent (it came with the join) or is published after.
        async with humans(livekit_server, room, "late-agent", kind="agent"):
            await wait_for(lambda: "late-agent" in bridge.room.remote_participants)
            await asyncio.sleep(1.0)
            kept = {
                (p.identity, publication.source): publication.subscribed
                for p in bridge.room.remote_participants.values()
                for publication in p.track_publications.values()
            }
        assert kept == {
            ("caller", rtc.TrackSource.SOURCE_MICROPHONE): True,
            ("other-agent", rtc.TrackSource.SOURCE_MICROPHONE): False,
            ("late-agent", rtc.TrackSource.SOURCE_MICROPHONE): False,
        }


async def test_join_command_runs_until_the_room_is_empty(
    livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    env = {
        **os.environ,
        **LOOPBACK_ENV,
        "LIVEKIT_URL": livekit_server.url,
        "LIVEKIT_API_KEY": livekit_server.api_key,
        "LIVEKIT_API_SECRET": livekit_server.api_secret,
        "OPENAI_API_KEY": EMULATOR_KEY,
        "OPENAI_BASE_URL": emulator.base_url,
        "BRIDGE_EMPTY_ROOM_GRACE": "1",
    }
    async with humans(livekit_server, room, "alice") as (alice,):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "join",
            "--room",
            room,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            await alice.say(0.6, pause=0.7)
            await alice.wait_until(lambda: len(alice.final_transcripts()) >= 2)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()
    assert "no humans left" in stderr.decode()
    assert EMULATOR_KEY not in stderr.decode()


async def test_session_limit_and_dropped_calls_reconnect_with_history(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await alice.say(0.7, pause=0.7)
        await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= 1)
        session = bridge.sessions["alice"]
        first = call_of(emulator, bridge, "alice")
        # The service ends the session at its 60-minute limit: a new call starts at once...
        await first.expire()
        await wait_for(lambda: session.call_id not in (None, first.id), timeout=15)
        second = call_of(emulator, bridge, "alice")
        # ...and the conversation so far comes along as text items (user turn + answer).
        await wait_for(lambda: second.events_in.get("conversation.item.create", 0) >= 2)
        assert session.stats.failures == {}
        # A dropped connection is a failure: retried with backoff, then a new call.
        await second.end("dropped")
        await wait_for(lambda: session.call_id not in (None, second.id), timeout=15)
        assert session.stats.failures == {"RealtimeError": 1}
        # The conversation goes on in the new call.
        await alice.say(0.7, pause=0.7)
        await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= 2)


async def test_speech_while_no_call_is_up_reaches_the_next_call(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    """A call drops and its replacement takes a while (refused twice: backoff); the human speaks
    once meanwhile and is answered by the new call without saying it again."""
    room = room_name()
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(retry_backoff_initial=0.5), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        session = bridge.sessions["alice"]
        first = call_of(emulator, bridge, "alice")
        emulator.emulator.options.fail_calls_status = 503
        emulator.emulator.options.fail_calls_count = 2
        await first.end("dropped")
        await wait_for(lambda: session.call_id is None)
        await alice.say(0.7, pause=0.3)
        # Spoken while no call was up (the refusals' backoff is 1 s, then 2 s).
        assert session.call_id is None
        await wait_for(lambda: session.call_id is not None, timeout=20)
        second = call_of(emulator, bridge, "alice")
        await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= 1)
        assert second.events_out["input_audio_buffer.speech_started"] == 1
        assert session.stats.failures == {"RealtimeError": 1, "http_503": 2}


async def test_listening_while_the_first_call_connects_and_what_is_said_then_is_answered(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    """The session says listening once the microphone is captured, before its first call is up
    (the service answers slowly here); what the human says at once is held and answered by that
    call. A later call (here after a drop and a refusal) is initializing until it is up."""
    emulator.emulator.options.calls_delay_ms = 2500
    room = room_name()
    try:
        async with (
            humans(livekit_server, room, "alice") as (alice,),
            worker(bridge_settings(), room) as bridge,
        ):
            await alice.wait_until(lambda: alice.states[-1:] == ["listening"])
            session = bridge.sessions["alice"]
            assert session.call_id is None and session.stats.calls == 0
            await alice.say(0.7, pause=0.3)
            assert session.call_id is None  # all of it said before the call was up
            await alice.wait_until(lambda: len(alice.final_transcripts(bridge.identity)) >= 1)
            first = call_of(emulator, bridge, "alice")
            assert first.events_out["input_audio_buffer.speech_started"] == 1
            emulator.emulator.options.calls_delay_ms = 0
            emulator.emulator.options.fail_calls_status = 503
            emulator.emulator.options.fail_calls_count = 1
            seen = len(alice.states)
            await first.end("dropped")
            await wait_for(lambda: session.stats.calls == 2, timeout=20)
            assert "initializing" in alice.states[seen:]
    finally:
        emulator.emulator.options.calls_delay_ms = 0


async def test_an_answer_cut_by_a_drop_goes_to_the_next_call_as_far_as_it_was_heard(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    emulator.emulator.options.chars_per_second = 10.0  # a 4 s answer...
    emulator.emulator.options.generation_speed = 1.0  # ...whose transcript ends with its audio
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(bridge_settings(), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        session = bridge.sessions["alice"]
        first = call_of(emulator, bridge, "alice")
        await alice.say(0.7, pause=0.3)
        (track,) = alice.agent_tracks()
        # 1 s of it heard (10 ms frames). Its first word comes 0.5 s into the answer (8 words
        # in 4 s): dropping earlier would cut it before any word was said, and rightly carry
        # nothing over.
        await alice.wait_until(lambda: len(track.loud) >= 100, timeout=20)
        await first.end("dropped")
        await wait_for(lambda: session.call_id not in (None, first.id), timeout=15)
        second = call_of(emulator, bridge, "alice")
        await wait_for(lambda: second.events_in.get("conversation.item.create", 0) >= 2)
        answers = [i["text"] for i in second.snapshot()["items"] if i["role"] == "assistant"]
        # The words heard before the drop (whole words), not the answer the model had in mind
        # ("Answer 1. I heard: utterance 1, 0.70 s.").
        assert len(answers) == 1 and answers[0], answers
        assert "Answer 1. I heard: utterance".startswith(answers[0]), answers


async def test_closing_while_humans_leave_still_hangs_up_every_call(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    """Sessions being ended (humans leaving) while the worker closes: the worker's shutdown
    cancels those stop tasks, yet every call must still be hung up and nothing left running."""
    room = room_name()
    tasks_before = set(asyncio.all_tasks())
    bridge = RoomWorker(bridge_settings(), room)
    await bridge.start()
    try:
        async with humans(livekit_server, room, "alice", "bob") as (alice, bob):
            await call_ready(bridge, "alice")
            await call_ready(bridge, "bob")
            calls = [call_of(emulator, bridge, "alice"), call_of(emulator, bridge, "bob")]
            # Leave mid-answer, so ending each session has transcripts and audio to settle.
            await asyncio.gather(alice.say(0.8, pause=0.7), bob.say(0.8, freq=880, pause=0.7))
            await alice.wait_until(lambda: any(len(t.loud) > 10 for t in alice.agent_tracks()))
    finally:
        await bridge.aclose()  # right as the humans' departures start ending their sessions
    assert [(c.state, c.ended_reason) for c in calls] == [("ended", "hangup")] * 2
    await asyncio.sleep(0.5)
    leftover = {t for t in asyncio.all_tasks() - tasks_before if t is not asyncio.current_task()}
    assert not leftover, [t.get_coro() for t in leftover]


async def test_a_full_budget_makes_humans_wait_and_never_overcommits(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    budget = SessionBudget(1)
    bridge = RoomWorker(bridge_settings(), room, budget=budget)
    await bridge.start()
    try:
        async with humans(livekit_server, room, "alice"):
            await call_ready(bridge, "alice")
            # Bob waits for a slot, then leaves while still waiting.
            bob = Human(livekit_server, room, "bob")
            await bob.join()
            await asyncio.sleep(1.0)
            assert set(bridge.sessions) == {"alice"} and budget.used == 1
            carol = Human(livekit_server, room, "carol")
            await carol.join()
            await asyncio.sleep(0.5)
            await bob.leave()
            await asyncio.sleep(0.5)
        # Alice left: her slot goes to Carol, who is still waiting; never to Bob, who left.
        await call_ready(bridge, "carol")
        assert set(bridge.sessions) == {"carol"} and budget.used == 1
        await carol.leave()
    finally:
        await bridge.aclose()
    assert budget.used == 0


async def test_a_session_that_gives_up_frees_its_slot(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    budget = SessionBudget(1)
    wrong = bridge_settings(openai_api_key=SecretStr("sk-wrong-000000000000"))
    bridge = RoomWorker(wrong, room, budget=budget)
    await bridge.start()
    try:
        async with humans(livekit_server, room, "alice"):
            await wait_for(
                lambda: "alice" in bridge.sessions and bridge.sessions["alice"].ended_reason
            )
            assert budget.used == 0  # the failed session holds no capacity
    finally:
        await bridge.aclose()
