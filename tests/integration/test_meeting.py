"""Meeting context in per-participant mode: a real livekit-server, the emulator and three named
SDK humans. What each call knew is read from the emulator (``GET /v1/_emulator/calls/{id}``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from bridge.room.shared import SHARED, SharedSession
from bridge.room.worker import RoomWorker
from tests.support.env import BridgeSettings
from tests.support.room_harness import Human
from tests.support.room_worker import call_of, call_ready, room_name, wait_for, worker

pytestmark = pytest.mark.timeout(150)

Items = list[dict[str, Any]]


@contextlib.asynccontextmanager
async def people(
    server: LiveKitServer, room: str, *names: str, publish_mic: bool = True
) -> AsyncIterator[list[Human]]:
    """Humans joined with display names; identity = the name in lower case."""
    joined = [Human(server, room, name.lower(), name=name) for name in names]
    try:
        for person in joined:
            await person.join(publish_mic=publish_mic)
        yield joined
    finally:
        for person in joined:
            await person.leave()


async def snapshot(emulator: EmulatorServer, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{emulator.base_url}/_emulator/calls/{call_id}", timeout=5)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def items_of(emulator: EmulatorServer, bridge: RoomWorker, identity: str) -> Items:
    call_id = bridge.sessions[identity].call_id
    assert call_id is not None
    items: Items = (await snapshot(emulator, call_id))["items"]
    return items


async def until_items(
    emulator: EmulatorServer,
    bridge: RoomWorker,
    identity: str,
    predicate: Callable[[Items], bool],
    timeout: float = 30.0,
) -> Items:
    """The emulator's items of ``identity``'s call once ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        items = await items_of(emulator, bridge, identity)
        if predicate(items):
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"{identity}'s call never matched; it holds {items}")
        await asyncio.sleep(0.1)


def texts(items: Items) -> list[str]:
    return [item["text"] for item in items]


def has(text: str) -> Callable[[Items], bool]:
    return lambda items: text in texts(items)


async def answer_of(person: Human, bridge: RoomWorker, n: int = 1) -> tuple[str, str]:
    """(what the person said, the agent's answer) for their ``n``-th turn, as published."""
    track = bridge.sessions[person.identity].track_sid

    def answers() -> list[str]:
        return [
            t.text
            for t in person.final_transcripts(bridge.identity)
            if t.attributes["lk.transcribed_track_id"] == track
        ]

    def said() -> list[str]:
        return [t.text for t in person.final_transcripts(person.identity)]

    await person.wait_until(lambda: len(answers()) >= n and len(said()) >= n, timeout=30)
    return said()[n - 1], answers()[n - 1]


async def test_every_call_knows_the_meeting(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    async with (
        people(livekit_server, room, "Alice", "Bob") as (alice, bob),
        worker(bridge_settings(), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await call_ready(bridge, "bob")
        await alice.say(1.0, pause=0.7)
        alice_said, alice_answer = await answer_of(alice, bridge)

        # Before Bob says anything his call holds Alice's words and the answer she got, labelled.
        bob_items = await until_items(
            emulator, bridge, "bob", has(f"[answering Alice] {alice_answer}")
        )
        assert [(i["role"], i["text"]) for i in bob_items] == [
            ("user", f"[Alice] {alice_said}"),
            ("assistant", f"[answering Alice] {alice_answer}"),
        ]
        assert bridge.sessions["bob"].usage.responses == 0  # context only: no response there
        alice_track = bridge.sessions["alice"].track_sid
        answers = bob.final_transcripts(bridge.identity)  # the room sees Alice's answer only
        assert [t.attributes["lk.transcribed_track_id"] for t in answers] == [alice_track]

        await bob.say(1.0, pause=0.7)
        bob_said, bob_answer = await answer_of(bob, bridge)
        bob_items = await items_of(emulator, bridge, "bob")
        # Bob's own turn and answer come after the meeting lines (spoken later).
        assert texts(bob_items)[:4] == [
            f"[Alice] {alice_said}",
            f"[answering Alice] {alice_answer}",
            bob_said,
            bob_answer,
        ]
        await until_items(emulator, bridge, "alice", has(f"[answering Bob] {bob_answer}"))

        # Bob's call drops: the call that replaces it holds his own turn and the meeting.
        dropped = call_of(emulator, bridge, "bob")
        await dropped.end("dropped")
        await wait_for(lambda: bridge.sessions["bob"].call_id not in (None, dropped.id))
        bob_items = await until_items(
            emulator, bridge, "bob", lambda items: bob_answer in texts(items)
        )
        assert [(i["role"], i["text"]) for i in bob_items] == [
            ("user", f"[Alice] {alice_said}"),
            ("assistant", f"[answering Alice] {alice_answer}"),
            ("user", bob_said),
            ("assistant", bob_answer),
        ]

        # Carol arrives late: her first call starts with the recent meeting, in spoken order.
        async with people(livekit_server, room, "Carol") as (carol,):
            await call_ready(bridge, "carol")
            carol_items = await items_of(emulator, bridge, "carol")
            meeting = [t for t in texts(carol_items) if not t.startswith("[meeting]")]
            assert meeting == [
                f"[Alice] {alice_said}",
                f"[answering Alice] {alice_answer}",
                f"[Bob] {bob_said}",
                f"[answering Bob] {bob_answer}",
            ]
            assert bridge.sessions["carol"].usage.responses == 0
            # The others were told, and their instructions say who is present now.
            await until_items(emulator, bridge, "alice", has("[meeting] Carol joined"))
            alice_call = bridge.sessions["alice"].call_id
            assert alice_call is not None
            instructions = (await snapshot(emulator, alice_call))["session"]["instructions"]
            (present,) = [x for x in instructions.splitlines() if x.startswith("People present")]
            assert sorted(present.removesuffix(".").split(": ")[1].split(", ")) == [
                "Alice",
                "Bob",
                "Carol",
            ]
            assert "audio channel is with Alice" in instructions
            # Carol's words reach the two others.
            await carol.say(1.0, pause=0.7)
            carol_said, carol_answer = await answer_of(carol, bridge)
            for identity in ("alice", "bob"):
                await until_items(emulator, bridge, identity, has(f"[Carol] {carol_said}"))
                await until_items(
                    emulator, bridge, identity, has(f"[answering Carol] {carol_answer}")
                )
        await until_items(emulator, bridge, "bob", has("[meeting] Carol left"))
        assert bridge.sessions["bob"].usage.responses == 1  # only Bob's own question


async def test_addressed_line_answered_once_on_the_speakers_call(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    emulator.emulator.options.transcripts = ["Assistant, what do you think of the plan?"]
    room = room_name()
    settings = bridge_settings(response_policy="addressed")
    async with (
        people(livekit_server, room, "Alice", "Bob", "Carol") as (alice, _bob, _carol),
        worker(settings, room) as bridge,
    ):
        for identity in ("alice", "bob", "carol"):
            await call_ready(bridge, identity)
        await alice.say(1.0, pause=0.7)
        said, answer = await answer_of(alice, bridge)
        assert said == "Assistant, what do you think of the plan?"
        for identity in ("bob", "carol"):
            items = await until_items(
                emulator, bridge, identity, has(f"[answering Alice] {answer}")
            )
            assert [(i["role"], i["text"]) for i in items] == [
                ("user", f"[Alice] {said}"),
                ("assistant", f"[answering Alice] {answer}"),
            ]
            assert bridge.sessions[identity].usage.responses == 0
        alice_items = await items_of(emulator, bridge, "alice")
        assert [i["role"] for i in alice_items] == ["user", "assistant"]
        assert bridge.sessions["alice"].usage.responses == 1


async def test_bound_deletes_the_oldest_items(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    settings = bridge_settings(response_policy="listen", meeting_context_max_chars=100)
    async with (
        people(livekit_server, room, "Alice", "Bob") as (alice, _bob),
        worker(settings, room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await call_ready(bridge, "bob")
        lines = [f"[Alice, in chat] point {n}: {'x' * 14}" for n in range(1, 6)]
        assert all(len(line) == 40 for line in lines)
        for n, line in enumerate(lines, start=1):
            await alice.chat(line.removeprefix("[Alice, in chat] "))
            await until_items(emulator, bridge, "bob", has(line))
            if n == 3:
                # 120 characters added: the oldest went, as the emulator's items show.
                items = await until_items(
                    emulator, bridge, "bob", lambda items: lines[0] not in texts(items)
                )
                assert texts(items) == lines[1:3]
        items = await until_items(emulator, bridge, "bob", lambda items: texts(items) == lines[-2:])
        state = bridge.sessions["bob"].conversation
        assert state.trimmed == 3 and state.trimmed_chars == 120
        assert state.added_chars() == 80


async def test_private_audience_shares_nothing(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    async with (
        people(livekit_server, room, "Alice", "Bob") as (alice, _bob),
        worker(bridge_settings(audience="private"), room) as bridge,
    ):
        await call_ready(bridge, "alice")
        await call_ready(bridge, "bob")
        await alice.say(1.0, pause=0.7)
        await answer_of(alice, bridge)
        await alice.chat("a private note")
        await until_items(emulator, bridge, "alice", has("a private note"))
        assert await items_of(emulator, bridge, "bob") == []
        bob_call = bridge.sessions["bob"].call_id
        assert bob_call is not None
        instructions = (await snapshot(emulator, bob_call))["session"]["instructions"]
        assert "meeting" not in instructions
        assert bridge.sessions["bob"].conversation.record() == []


# ---- shared mode: one call for the room ------------------------------------------------------


async def shared_ready(bridge: RoomWorker, microphones: int) -> SharedSession:
    def ready() -> bool:
        shared = bridge.shared
        return (
            shared is not None
            and shared.call_id is not None
            and len(shared.microphones) == microphones
        )

    await wait_for(ready)
    assert bridge.shared is not None
    return bridge.shared


@contextlib.asynccontextmanager
async def camera(person: Human, width: int, height: int) -> AsyncIterator[None]:
    """``person`` publishes a small camera (5 frames/s) until the block ends."""
    task = asyncio.create_task(person.publish_camera(width, height, fps=5, seconds=120))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_shared_call_attributes_turns_and_answers_once(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    """One call for the room; turns published on behalf of their speakers; the room-wide
    ``addressed`` policy; the call sees the active speaker's camera."""
    emulator.emulator.options.transcripts = [
        "Assistant, what do you think of the plan?",
        "I think Friday works.",  # not addressed: no answer
    ]
    room = room_name()
    settings = bridge_settings(mode="shared", response_policy="addressed", video_fps=2.0)
    async with (
        people(livekit_server, room, "Alice", "Bob") as (alice, bob),
        worker(settings, room) as bridge,
    ):
        shared = await shared_ready(bridge, 2)
        assert list(bridge.sessions) == [SHARED]  # one session in every count
        assert bridge.demand() == 1
        await alice.wait_until(lambda: len(alice.agent_tracks()) == 1)
        (track,) = alice.agent_tracks()
        assert track.name == "room"
        assert alice.mic is not None and bob.mic is not None
        call_id = shared.call_id
        assert call_id is not None
        call = emulator.emulator.calls[call_id]

        def finals(sender: str) -> list[str]:
            return [t.attributes["lk.transcribed_track_id"] for t in bob.final_transcripts(sender)]

        def answers() -> list[str]:
            return [t.text for t in alice.final_transcripts(bridge.identity)]

        def seen() -> tuple[int, int]:
            return call.video.width, call.video.height

        async with camera(alice, 320, 240):
            # The first camera is shown until someone speaks.
            await wait_for(lambda: seen() == (320, 240))
            async with camera(bob, 320, 180):
                await wait_for(lambda: "bob" in bridge.admission.cameras)
                await alice.say(1.0, pause=0.7)
                await bob.wait_until(lambda: len(finals("alice")) == 1 and len(answers()) == 1)
                heard = len(track.loud)
                assert heard > 20  # the answer played in the room, on the one track
                assert seen() == (320, 240)  # Alice spoke: her camera still
                await bob.say(1.0, freq=300, pause=0.7)
                await bob.wait_until(lambda: len(finals("bob")) == 1)
                # Bob is the active speaker: the call now sees his camera.
                await wait_for(lambda: seen() == (320, 180))

        # Each turn was published on behalf of whoever spoke it, on their microphone.
        assert finals("alice") == [alice.mic.sid]
        assert finals("bob") == [bob.mic.sid]
        assert not bob.final_transcripts("*")

        # Chat from anyone is a labelled turn in the same call, answered when addressed.
        await bob.chat("assistant, what about Friday?")
        await alice.wait_until(lambda: len(answers()) == 2)
        # Exactly one model call heard everything; only the addressed turns got a response.
        assert shared.stats.calls == 1 and shared.call_id == call_id
        items = (await snapshot(emulator, call_id))["items"]
        assert [i["role"] for i in items] == ["user", "assistant", "user", "user", "assistant"]
        assert items[2]["text"] == "I think Friday works."
        assert items[3]["text"] == "[Bob] assistant, what about Friday?"
        assert shared.usage.responses == 2
        record = [line.text for line in shared.conversation.record()]
        assert record[0] == "[Alice] Assistant, what do you think of the plan?"
        assert record[2] == "[Bob] I think Friday works."
        instructions = (await snapshot(emulator, call_id))["session"]["instructions"]
        assert "one audio channel" in instructions
        # Both humans got the same single answer track.
        assert [t.name for t in bob.agent_tracks()] == ["room"]


async def test_shared_call_barge_in_by_anyone(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    emulator.emulator.options.answers = ["This answer is long on purpose. " * 3]  # ~6.4 s
    room = room_name()
    async with (
        people(livekit_server, room, "Alice", "Bob") as (alice, bob),
        worker(bridge_settings(mode="shared"), room) as bridge,
    ):
        shared = await shared_ready(bridge, 2)
        await bob.wait_until(lambda: len(bob.agent_tracks()) == 1)
        (track,) = bob.agent_tracks()
        await alice.say(0.6, pause=0.7)
        await bob.wait_until(lambda: len(track.loud) > 50)  # a second of the answer played
        emulator.emulator.options.answer_delay_ms = 5000  # Bob's turn is not answered soon
        barge_in = await bob.say(0.5, freq=300, pause=0.6)
        await bob.wait_until(lambda: shared.stats.barge_ins >= 1)
        interrupted = time.monotonic()
        await asyncio.sleep(2.0)
        last_loud = max(t for t in track.loud if t < interrupted + 2.0)
        print(f"shared barge-in: last answer frame {(last_loud - barge_in) * 1000:.0f} ms after")
        # Without the flush the answer would play ~5 more seconds.
        assert last_loud - interrupted < 0.5
        await wait_for(lambda: shared.speaker_of_last() == "bob")
