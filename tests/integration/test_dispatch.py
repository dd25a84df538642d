"""``serve`` with a real livekit-server whose webhooks point at it, the emulator, and humans."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from livekit import api

from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from tests.support.dispatch_harness import (
    ServeProcess,
    agents_in,
    listeners,
    livekit_with_webhooks,
    participant_joined,
    serve,
    sign,
    signed_webhook,
)
from tests.support.room_harness import Human, humans
from tests.support.waits import eventually, metric

pytestmark = pytest.mark.timeout(120)


def room_name(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def post(serve_: ServeProcess, path: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(serve_.url + path, **kwargs)  # type: ignore[arg-type]


async def test_webhook_brings_the_agent_only_to_eligible_rooms(
    emulator: EmulatorServer,
) -> None:
    async with (
        listeners() as (listener,),
        livekit_with_webhooks(listener) as server,
        serve(
            server, emulator, listener=listener, rooms="pattern", room_patterns="support-*"
        ) as bridge,
    ):
        eligible, other = room_name("support"), room_name("chat")
        async with humans(server, eligible, "alice") as (alice,), humans(server, other, "bob"):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            assert await agents_in(server, eligible) == [f"room-bridge-{eligible}"]
            await asyncio.sleep(2.0)
            assert await agents_in(server, other) == []
        log = bridge.output()
    assert "webhook participant_joined: ineligible (room name matches no room_patterns)" in log


async def _reconciled_once(bridge: ServeProcess) -> bool:
    text = (await bridge.get("/metrics")).text
    return metric(text, "bridge_reconcile_runs_total") >= 1


async def test_bad_webhooks_are_rejected_and_join_nothing(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    # This server sends no webhooks: every delivery here is crafted by the test.
    async with serve(livekit_server, emulator, reconcile_interval="600") as bridge:
        await eventually(lambda: _reconciled_once(bridge))
        room = room_name()
        async with humans(livekit_server, room, "alice"):
            event = participant_joined(room, "alice", event_id="EV_bad")
            body, headers = signed_webhook(livekit_server, event)
            forged_body, forged = signed_webhook(livekit_server, event, secret="not-the-secret" * 3)
            cases = {
                "forged": (forged_body, forged),
                "altered": (body.replace(b"alice", b"mallory"), headers),
                "unsigned": (body, {"Content-Type": "application/webhook+json"}),
                "oversized": (b"{" + b" " * 70_000 + b"}", headers),
                "wrong type": (body, {**headers, "Content-Type": "text/plain"}),
            }
            statuses = {}
            for name, (payload, hdrs) in cases.items():
                response = await post(bridge, "/webhook", content=payload, headers=hdrs)
                statuses[name] = response.status_code
            junk = b'{"event": 12}'
            statuses["not an event"] = (
                await post(
                    bridge,
                    "/webhook",
                    content=junk,
                    headers={**headers, "Authorization": sign(livekit_server, junk)},
                )
            ).status_code
            await asyncio.sleep(2.0)
            assert await agents_in(livekit_server, room) == []
            assert (await bridge.get("/healthz")).status_code == 200
    assert statuses == {
        "forged": 401,
        "altered": 401,
        "unsigned": 401,
        "oversized": 413,
        "wrong type": 400,
        "not an event": 400,
    }
    assert "500" not in str(statuses.values())


async def test_repeated_webhook_gives_one_agent(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    async with serve(livekit_server, emulator, reconcile_interval="600") as bridge:
        await eventually(lambda: _reconciled_once(bridge))
        room = room_name()
        async with humans(livekit_server, room, "alice"):
            body, headers = signed_webhook(livekit_server, participant_joined(room, "alice"))
            responses = await asyncio.gather(
                *(post(bridge, "/webhook", content=body, headers=headers) for _ in range(5))
            )
            outcomes = sorted(r.json()["outcome"] for r in responses)
            assert outcomes == ["accepted"] + ["duplicate"] * 4
            await eventually(lambda: _has_agent(livekit_server, room))
            await asyncio.sleep(1.0)
            assert await agents_in(livekit_server, room) == [f"room-bridge-{room}"]


async def _has_agent(server: LiveKitServer, room: str) -> bool:
    return bool(await agents_in(server, room))


async def test_two_serve_processes_give_one_agent_per_room(emulator: EmulatorServer) -> None:
    async with (
        listeners(2) as (listener_a, listener_b),
        livekit_with_webhooks(listener_a, listener_b) as server,
        serve(server, emulator, listener=listener_a, reconcile_interval="2") as first,
        serve(server, emulator, listener=listener_b, reconcile_interval="2") as second,
    ):
        rooms = [room_name() for _ in range(3)]
        people = [Human(server, room, f"human-{i}") for i, room in enumerate(rooms)]
        try:
            for person in people:
                await person.join()
            for room in rooms:
                await eventually(functools.partial(_has_agent, server, room))
            await asyncio.sleep(5.0)  # webhooks to both, reconcile on both: still one each
            for room in rooms:
                assert await agents_in(server, room) == [f"room-bridge-{room}"]
            # Each room served by one process: /status says so once a process that lost a
            # join race (LiveKit replaced its agent) has closed that room, which may take a moment.
            served: list[set[str]] = []

            async def one_each() -> bool:
                served[:] = [set((await s.status())["rooms"]) for s in (first, second)]
                return served[0] | served[1] == set(rooms) and not served[0] & served[1]

            try:
                await eventually(one_each, timeout=15)
            except TimeoutError:
                raise AssertionError(f"rooms served: {served}") from None
        finally:
            for person in people:
                await person.leave()


async def test_reconcile_joins_a_room_whose_webhook_never_came(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    async with serve(livekit_server, emulator, reconcile_interval="1"):
        room = room_name()
        async with humans(livekit_server, room, "alice") as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)


async def test_at_capacity_readyz_fails_and_rooms_are_left_alone(emulator: EmulatorServer) -> None:
    async with (
        listeners() as (listener,),
        livekit_with_webhooks(listener) as server,
        serve(
            server, emulator, listener=listener, max_sessions="1", reconcile_interval="1"
        ) as bridge,
    ):
        assert (await bridge.get("/readyz")).status_code == 200
        first, second = room_name(), room_name()
        async with humans(server, first, "alice") as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            await eventually(lambda: _ready_is(bridge, 503))
            reasons = (await bridge.get("/readyz")).json()["reasons"]
            assert any("at capacity" in r for r in reasons)
            async with humans(server, second, "bob"):
                await asyncio.sleep(3.0)
                assert await agents_in(server, second) == []
            # Capacity frees when the first room ends; the second would now be joined again.
        await eventually(lambda: _ready_is(bridge, 200))
        assert "unavailable (at capacity" in bridge.output()


async def _ready_is(bridge: ServeProcess, status: int) -> bool:
    return (await bridge.get("/readyz")).status_code == status


async def test_sigterm_drains_a_live_session_and_exits_zero(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    room = room_name()
    known = set(emulator.emulator.calls)
    async with (
        serve(livekit_server, emulator, reconcile_interval="1", drain_timeout="3") as bridge,
        humans(livekit_server, room, "alice") as (alice,),
    ):
        await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)

        async def call_up() -> bool:
            return bool(set(emulator.emulator.calls) - known)

        await eventually(call_up)
        call_ids = list(set(emulator.emulator.calls) - known)
        bridge.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: _ready_is(bridge, 503), timeout=5)
        reasons = (await bridge.get("/readyz")).json()["reasons"]
        assert reasons == ["draining"]
        # The live session goes on while draining...
        await alice.say(0.6, pause=0.7)
        await alice.wait_until(lambda: len(alice.final_transcripts()) >= 2)
        # ...until drain_timeout, then it is ended cleanly and the process exits 0.
        code = await asyncio.wait_for(bridge.proc.wait(), 20)
    assert code == 0, bridge.output()
    ended = [emulator.emulator.calls[c] for c in call_ids if c in emulator.emulator.calls]
    assert ended and all(c.state == "ended" and c.ended_reason == "hangup" for c in ended)
    assert "draining: 1 rooms" in bridge.output()


async def test_metrics_parse_and_follow_sessions(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    async with serve(livekit_server, emulator, reconcile_interval="1") as bridge:
        before = (await bridge.get("/metrics")).text
        assert metric(before, "bridge_sessions_active") == 0
        room = room_name()
        async with humans(livekit_server, room, "alice") as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            await eventually(lambda: _metric_is(bridge, "bridge_sessions_active", 1), timeout=10)
            during = (await bridge.get("/metrics")).text
            assert metric(during, "bridge_sessions_started_total") >= 1
            assert metric(during, "bridge_calls_started_total") >= 1  # its new name
            assert metric(during, "bridge_rooms_active") == 1
            assert metric(during, "bridge_call_setup_seconds_count") >= 1
        await eventually(lambda: _metric_is(bridge, "bridge_sessions_active", 0), timeout=15)
        # The agent stays empty_room_grace (1 s here) after the last human, then leaves.
        await eventually(lambda: _metric_is(bridge, "bridge_rooms_active", 0), timeout=15)


async def _metric_is(bridge: ServeProcess, name: str, value: float) -> bool:
    return metric((await bridge.get("/metrics")).text, name) == value


async def test_a_killed_worker_is_replaced_and_its_room_rejoined(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    async with serve(livekit_server, emulator, reconcile_interval="2") as bridge:
        room = room_name()
        async with humans(livekit_server, room, "alice") as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            (worker,) = (await bridge.status())["workers"]
            await eventually(lambda: _room_on_worker(bridge, room))
            calls_before = len(emulator.emulator.calls)
            os.kill(worker["pid"], signal.SIGKILL)

            async def replaced() -> bool:
                (now,) = (await bridge.status())["workers"]
                return bool(now["alive"] and now["pid"] != worker["pid"] and room in now["rooms"])

            await eventually(replaced, timeout=30)
            # A new agent (new process) is in the room with a new model call.
            await eventually(lambda: _calls_grew(emulator, calls_before), timeout=20)
            assert await agents_in(livekit_server, room) == [f"room-bridge-{room}"]
            # Now the parent dies (SIGKILL: no drain, no goodbye). Its worker sees its control
            # pipe close, ends its room cleanly (the agent leaves) and exits: no orphan keeps
            # serving rooms that nobody supervises or counts.
            (child,) = (await bridge.status())["workers"]
            bridge.proc.send_signal(signal.SIGKILL)
            await bridge.proc.wait()

            async def orphan_gone() -> bool:
                return not _alive(child["pid"]) and not await agents_in(livekit_server, room)

            await eventually(orphan_gone, timeout=20)
        assert "exited with -9; 1 rooms re-homed; restarting it" in bridge.output()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone too (its parent is dead)
        return stat.read().split(") ")[-1][:1] != "Z"


@pytest.mark.timeout(240)  # two workers, a kill, a restart and two reconcile passes
async def test_a_killed_workers_rooms_move_to_the_other_worker_without_a_double_join(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    """Two workers, a room on each; one is SIGKILLed: its room gets a new agent on the surviving
    worker (not waiting for the restart), and the restarted worker never joins it again."""
    async with serve(
        livekit_server, emulator, workers=2, max_sessions="4", reconcile_interval="1"
    ) as bridge:
        first, second = room_name("kill-a"), room_name("kill-b")
        async with humans(livekit_server, first, "alice"), humans(livekit_server, second, "bob"):

            async def both_served() -> bool:
                workers = (await bridge.status())["workers"]
                served = {r for w in workers for r in w["rooms"]}
                return served == {first, second} and all(w["ready"] for w in workers)

            # Rooms go to the least-loaded ready worker: one each, or (a worker still starting
            # on a loaded machine) both on one. Either way the victim's rooms must move.
            await eventually(both_served, timeout=30)
            workers = (await bridge.status())["workers"]
            (victim,) = [w for w in workers if first in w["rooms"]]
            (survivor,) = [w for w in workers if w is not victim]
            moving = sorted(victim["rooms"])
            ghosts = {room: await _agent_sids(livekit_server, room) for room in moving}
            calls_before = len(emulator.emulator.calls)
            os.kill(victim["pid"], signal.SIGKILL)

            async def moved() -> bool:
                now = {w["index"]: w for w in (await bridge.status())["workers"]}
                return set(moving) <= set(now[survivor["index"]]["rooms"])

            await eventually(moved, timeout=30)
            # A new agent (new participant) with the room's identity, the ghost gone, a new call.
            for room in moving:
                await eventually(
                    functools.partial(_replaced, livekit_server, room, ghosts[room]), timeout=20
                )
            await eventually(
                lambda: _calls_grew(emulator, calls_before + len(moving) - 1), timeout=20
            )

            async def restarted() -> bool:
                now = {w["index"]: w for w in (await bridge.status())["workers"]}
                back = now[victim["index"]]
                return bool(back["alive"] and back["ready"] and back["pid"] != victim["pid"])

            await eventually(restarted, timeout=30)
            # Let reconcile (1 s) pass over both rooms at least twice: nothing goes to the
            # restarted worker and each room keeps exactly one agent.
            runs = metric((await bridge.get("/metrics")).text, "bridge_reconcile_runs_total")
            await eventually(lambda: _reconciled_since(bridge, runs + 2), timeout=20)
            now = {w["index"]: w for w in (await bridge.status())["workers"]}
            assert now[victim["index"]]["rooms"] == {}
            assert now[victim["index"]]["joining"] == []
            assert set(now[survivor["index"]]["rooms"]) == {first, second}
            assert now[survivor["index"]]["pid"] == survivor["pid"]
            for room in (first, second):
                assert await agents_in(livekit_server, room) == [f"room-bridge-{room}"]
        assert f"exited with -9; {len(moving)} rooms re-homed; restarting it" in bridge.output()


async def _agent_sids(server: LiveKitServer, room: str) -> list[str]:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    return [p.sid for p in listed.participants if p.identity.startswith("room-bridge-")]


async def _replaced(server: LiveKitServer, room: str, ghost: list[str]) -> bool:
    sids = await _agent_sids(server, room)
    return len(sids) == 1 and sids != ghost


async def _reconciled_since(bridge: ServeProcess, runs: float) -> bool:
    text = (await bridge.get("/metrics")).text
    return metric(text, "bridge_reconcile_runs_total") >= runs


async def _room_on_worker(bridge: ServeProcess, room: str) -> bool:
    return any(room in w["rooms"] for w in (await bridge.status())["workers"])


async def _calls_grew(emulator: EmulatorServer, before: int) -> bool:
    return len(emulator.emulator.calls) > before


async def test_dispatch_api(emulator: EmulatorServer, livekit_server: LiveKitServer) -> None:
    token = "dispatch-token-for-tests-0123456789"
    known = set(emulator.emulator.calls)
    async with serve(
        livekit_server,
        emulator,
        reconcile_interval="600",
        rooms="pattern",
        room_patterns="never-*",
        dispatch_token=token,
    ) as bridge:
        room = room_name()
        async with humans(livekit_server, room, "alice") as (alice,):
            no_auth = await post(bridge, "/dispatch", json={"room": room})
            assert no_auth.status_code == 401
            bad = await post(
                bridge,
                "/dispatch",
                json={"room": room, "overrides": {"voice": "robot"}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert bad.status_code == 400 and "voice" in bad.json()["error"]
            # Overrides may only select configured tools (none are configured here).
            tool = await post(
                bridge,
                "/dispatch",
                json={"room": room, "overrides": {"tools": ["get_order"]}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert tool.status_code == 400
            assert "'get_order' is not a configured tool" in tool.json()["error"]
            ok = await post(
                bridge,
                "/dispatch",
                json={"room": room, "overrides": {"voice": "coral"}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert ok.status_code == 202, ok.text
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)

            async def call_up() -> bool:
                return bool(set(emulator.emulator.calls) - known)

            await eventually(call_up)
            (new,) = set(emulator.emulator.calls) - known
            assert emulator.emulator.calls[new].model.session["audio"]["output"]["voice"] == "coral"
            async with httpx.AsyncClient() as client:
                gone = await client.delete(
                    f"{bridge.url}/dispatch/{room}", headers={"Authorization": f"Bearer {token}"}
                )
            assert gone.status_code == 202
            await eventually(lambda: _no_agent(livekit_server, room))
        assert token not in bridge.output()


async def _no_agent(server: LiveKitServer, room: str) -> bool:
    return not await agents_in(server, room)


async def test_late_room_finished_does_not_stop_the_newer_room(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    async with serve(livekit_server, emulator, reconcile_interval="1") as bridge:
        room = room_name()
        async with humans(livekit_server, room, "alice") as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            stale = participant_joined(room, "alice", event_id="EV_finished_old")
            stale.event = "room_finished"
            stale.room.sid = "RM_an_older_instance"
            stale.ClearField("participant")
            body, headers = signed_webhook(livekit_server, stale)
            # We only learn our room's sid from webhooks; teach it first with room_started.
            started = participant_joined(room, "alice", event_id="EV_started_new")
            started.event = "room_started"
            started.room.sid = await _room_sid(livekit_server, room)
            started.ClearField("participant")
            body2, headers2 = signed_webhook(livekit_server, started)
            await post(bridge, "/webhook", content=body2, headers=headers2)
            response = await post(bridge, "/webhook", content=body, headers=headers)
            assert response.json()["outcome"] in ("stale", "ignored"), response.text
            await asyncio.sleep(1.5)
            assert await agents_in(livekit_server, room) == [f"room-bridge-{room}"]


async def _room_sid(server: LiveKitServer, room: str) -> str:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))
    return listed.rooms[0].sid


async def test_chunked_webhooks_are_read_whole_and_capped(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    async with serve(livekit_server, emulator, reconcile_interval="600") as bridge:
        event = participant_joined(room_name(), "alice", event_id="EV_chunked")
        event.room.metadata = "x" * 40_000  # large, but under the 64 KiB cap
        body, headers = signed_webhook(livekit_server, event)

        async def chunks(data: bytes) -> AsyncIterator[bytes]:
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]
                await asyncio.sleep(0)

        whole = await post(bridge, "/webhook", content=chunks(body), headers=headers)
        # Read whole and verified (not a 401 from half a body); no humans there, so no join.
        assert whole.status_code == 200, whole.text
        too_big = await post(bridge, "/webhook", content=chunks(b" " * 100_000), headers=headers)
        assert too_big.status_code == 413
