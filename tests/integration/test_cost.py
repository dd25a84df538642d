"""Cost end to end: the bridge's bookkeeping against the emulator's bill, and room budgets."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from bridge.billing.cost import price, response_tokens, transcription_tokens
from bridge.billing.models import DEFAULT_MODEL
from bridge.billing.prices import price_of
from bridge.emulator.app import EmulatorServer
from bridge.local.livekit_server import LiveKitServer
from bridge.room.identity import NOTICE_ATTRIBUTE
from bridge.settings.config import Settings
from tests.support.dispatch_harness import ServeProcess, serve
from tests.support.env import BridgeSettings
from tests.support.room_harness import Human, humans
from tests.support.room_worker import call_ready, wait_for, worker
from tests.support.waits import eventually, metric

pytestmark = pytest.mark.timeout(120)

TOKEN = "cost-dispatch-token-0123456789abcdef"


def room_name() -> str:
    return f"cost-{uuid.uuid4().hex[:8]}"


def bill_usd(emulator: EmulatorServer, call_ids: set[str], settings: Settings) -> float:
    """The emulator's per-response and per-transcription usage, priced by the price table."""
    total = 0.0
    model = price_of(settings.prices, settings.model)
    transcribe = price_of(settings.prices, settings.transcription_model)
    for call_id in call_ids:
        snapshot = emulator.emulator.calls[call_id].snapshot()
        for response in snapshot["responses"]:
            usd = price(response_tokens(response["usage"]), 0.0, model)
            assert usd is not None
            total += usd
        for usage in snapshot["transcriptions"]:
            tokens, seconds = transcription_tokens(usage)
            usd = price(tokens, seconds, transcribe)
            assert usd is not None
            total += usd
    return total


def responses_billed(emulator: EmulatorServer, call_ids: set[str]) -> int:
    return sum(len(emulator.emulator.calls[c].model.bill.responses) for c in call_ids)


async def rooms(bridge: ServeProcess, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(bridge.url + "/rooms", headers=headers)


async def converse(alice: Human, turns: int) -> None:
    for n in range(1, turns + 1):
        await alice.say(1.0, pause=0.7)
        await converse_wait_for_answers(alice, n)


async def test_room_cost_equals_the_emulator_bill(
    emulator: EmulatorServer, livekit_server: LiveKitServer
) -> None:
    known = set(emulator.emulator.calls)
    room = room_name()
    async with serve(livekit_server, emulator, reconcile_interval="1", dispatch_token=TOKEN) as (
        bridge
    ):
        assert (await rooms(bridge, token=None)).status_code == 401
        async with humans(livekit_server, room, "alice") as (alice,):
            await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
            await converse(alice, 2)
            await alice.chat("And what does this cost?")  # a text turn, billed as text
            await converse_wait_for_answers(alice, 3)
            calls = set(emulator.emulator.calls) - known
            await wait_for(lambda: responses_billed(emulator, calls) >= 3, timeout=20)
            settings = Settings()
            expected = bill_usd(emulator, calls, settings)
            assert expected > 0

            async def reported() -> bool:
                report: dict[str, Any] = (await rooms(bridge)).json()["rooms"].get(room, {})
                cost = float(report.get("cost_usd") or 0)
                return bool(report.get("responses") == responses_billed(emulator, calls)) and (
                    abs(cost - bill_usd(emulator, calls, settings)) < 1e-6
                )

            await eventually(reported, timeout=10)
            report = (await rooms(bridge)).json()["rooms"][room]
            assert report["humans"] == 1 and report["state"] in ("listening", "speaking")
            assert report["tokens"]["audio_in_cached"] > 0  # the second turn reused the prefix
            expected = bill_usd(emulator, calls, settings)
            metrics = (await bridge.get("/metrics")).text
            in_metrics = metric(metrics, "bridge_cost_usd_total")
            assert in_metrics == pytest.approx(expected, abs=1e-6)
            # The default model, priced: its calls ran on it and every response had a price.
            assert settings.model == DEFAULT_MODEL == "gpt-realtime-2.1"
            for call_id in calls:
                session = emulator.emulator.calls[call_id].snapshot()["session"]
                assert session["model"] == DEFAULT_MODEL
            assert metric(metrics, "bridge_cost_usd_total", model=DEFAULT_MODEL) > 0
            # The default transcription model is billed by the minute of audio it heard.
            assert settings.transcription_model == "gpt-transcribe"
            assert metric(metrics, "bridge_cost_usd_total", model="gpt-transcribe") > 0
        # The human left: the agent leaves after the grace period and logs what the room cost.
        ended = re.compile(rf"agent left .*room={room}.*")

        async def logged() -> bool:
            return bool(ended.search(bridge.output()))

        await eventually(logged, timeout=20)
        line = ended.search(bridge.output())
        assert line is not None
        logged_cost = float(re.search(r"cost_usd=([0-9.]+)", line.group(0)).group(1))  # type: ignore[union-attr]
        assert logged_cost == pytest.approx(bill_usd(emulator, calls, settings), abs=1e-6)
        assert "cost_per_minute_usd=" in line.group(0) and "duration_s=" in line.group(0)
        assert re.search(r"session ended .*cost \$", bridge.output())


async def converse_wait_for_answers(alice: Human, answers: int) -> None:
    await alice.wait_until(
        lambda: len([t for t in alice.final_transcripts() if t.sender != "alice"]) >= answers,
        timeout=20,
    )


def texts_in(emulator: EmulatorServer, call_id: str | None) -> list[str]:
    assert call_id is not None
    return [item["text"] for item in emulator.emulator.calls[call_id].model.conversation.listing()]


def answers_in(emulator: EmulatorServer, call_id: str | None) -> int:
    assert call_id is not None
    responses = emulator.emulator.calls[call_id].model.bill.responses
    return len([r for r in responses if r["status"] == "completed"])


async def test_a_tiny_budget_stops_one_room_and_not_the_other(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    spent, free = room_name(), room_name()
    async with (
        humans(livekit_server, spent, "alice") as (alice,),
        humans(livekit_server, free, "bob") as (bob,),
        worker(bridge_settings(max_room_cost_usd=0.0001), spent) as tight,
        worker(bridge_settings(), free) as loose,
    ):
        for human, room in ((alice, tight), (bob, loose)):
            await human.wait_until(lambda h=human: bool(h.agent_tracks()), timeout=20)  # type: ignore[misc]
            await call_ready(room, human.identity)
        # One answer each: the tight room passes its budget with the first one.
        await alice.say(1.0, pause=0.7)
        await bob.say(1.0, pause=0.7)
        await converse_wait_for_answers(alice, 1)
        await converse_wait_for_answers(bob, 1)
        await alice.wait_until(lambda: bool(alice.chats), timeout=15)
        ((sender, told),) = alice.chats
        assert sender == tight.identity
        assert "budget" in told and "stop answering" in told, told
        agent = alice.room.remote_participants[tight.identity]
        await alice.wait_until(lambda: agent.attributes.get(NOTICE_ATTRIBUTE) == told)
        assert tight.cost.exceeded and not loose.cost.exceeded
        # Speaking (and writing) again: the tight room only listens, the other answers.
        tight_call = tight.sessions["alice"].call_id
        before = answers_in(emulator, tight_call)
        await alice.say(1.0, pause=0.7)
        await alice.chat("Are you still there?")
        await bob.say(1.0, pause=0.7)
        # Alice's turn was heard (transcribed: its price is known) and her chat reached the
        # model; Bob spoke after her and has had his answer, so hers would have come by now.
        await alice.wait_until(lambda: len(alice.final_transcripts("alice")) >= 2, timeout=15)
        await wait_for(lambda: "Are you still there?" in texts_in(emulator, tight_call))
        await converse_wait_for_answers(bob, 2)
        assert answers_in(emulator, tight_call) == before
        assert len(alice.final_transcripts(tight.identity)) == 1
        assert len(alice.chats) == 1  # told once
        assert (
            not bob.chats
            and NOTICE_ATTRIBUTE not in bob.room.remote_participants[loose.identity].attributes
        )
        status: dict[str, Any] = tight.status()
        assert status["budget"] == "exceeded" and status["budget_usd"] == 0.0001


async def test_a_room_over_budget_can_leave(
    bridge_settings: BridgeSettings, livekit_server: LiveKitServer, emulator: EmulatorServer
) -> None:
    room = room_name()
    settings = bridge_settings(max_room_cost_usd=0.0001, budget_action="leave")
    async with (
        humans(livekit_server, room, "alice") as (alice,),
        worker(settings, room) as bridge,
    ):
        await alice.wait_until(lambda: bool(alice.agent_tracks()), timeout=20)
        await alice.say(1.0, pause=0.7)
        await alice.wait_until(lambda: bool(alice.chats), timeout=20)
        assert "leaving the room" in alice.chats[0][1]
        assert await bridge.wait() == "budget exceeded"
