"""Dispatch benchmark: how fast the agent comes, by LiveKit agent dispatch and by webhook.

One ``serve`` (its own process, one worker) registered as agent worker, with a real
livekit-server whose webhooks point at it, and the emulator. Each round, a human alone in a room:

- **dispatch**: a room the ``rooms`` policy leaves out (``dispatch-*``); ``CreateDispatch`` is
  sent; measured: the call returned -> the human sees the agent participant connect;
- **webhook** (the baseline, same run, same machine): a room the policy takes (``hook-*``);
  measured: the human's connect returned (LiveKit sends ``participant_joined``) -> the human
  sees the agent connect.

One untimed warm-up room first; the two ways alternate which goes first; the human leaves
after each room (the next starts from an idle bridge). Also reported:

- job offer -> answer, measured inside ``serve`` from the offer frame's arrival to the answer
  written to the socket (GET /status), p50/p99 over every offer of the run;
- **termination** (``--terminations`` rooms, after the rounds): a human with a microphone and
  the dispatched agent (its answer track published) in a room; measured: ``DeleteDispatch`` sent
  -> the agent gone from LiveKit's participant list (target 2 s), and -> the human sees it
  disconnect. livekit-server itself removes an agent that has not left about 3 s after a
  termination, so the bridge's own count of rooms it left on one is reported beside it.

    python -m tests.bench.dispatch_bench [--rounds 15] [--terminations 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from livekit import api, rtc
from pydantic import SecretStr

from bridge.emulator.app import EmulatorServer
from bridge.emulator.options import EmulatorOptions
from bridge.local.livekit_server import LiveKitServer
from tests.bench.realtime_bench import _pct
from tests.support.dispatch_harness import ServeProcess, listeners, livekit_with_webhooks, serve
from tests.support.env import EMULATOR_KEY, test_settings
from tests.support.livekit import human_token, room_options
from tests.support.room_harness import Human

AGENT = "bench-assistant"


async def _agent_arrival(
    server: LiveKitServer, room: str, start: asyncio.Future[float], *, joined_is_start: bool
) -> float:
    """Join ``room`` as a human; seconds from ``start`` (set by the caller, or the moment the
    connect returned) to the agent connecting."""
    arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_participant(participant: rtc.RemoteParticipant) -> None:
        if participant.identity.startswith("room-bridge-") and not arrived.done():
            arrived.set_result(time.monotonic())

    lk_room = rtc.Room()
    lk_room.on("participant_connected", on_participant)
    token = human_token(server, room, "human")
    await asyncio.wait_for(lk_room.connect(server.url, token, room_options()), 15)
    try:
        if joined_is_start:
            start.set_result(time.monotonic())
        return await asyncio.wait_for(arrived, 60) - await start
    finally:
        await asyncio.wait_for(lk_room.disconnect(), 10)


async def _dispatched(server: LiveKitServer, room: str) -> float:
    start: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    human = asyncio.ensure_future(_agent_arrival(server, room, start, joined_is_start=False))
    try:
        # Wait until the human is in (the room exists), then dispatch.
        async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
            while True:
                listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
                if listed.participants:
                    break
                await asyncio.sleep(0.02)
            await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT, room=room)
            )
            start.set_result(time.monotonic())
        return await human
    finally:
        if not human.done():
            human.cancel()
        await asyncio.gather(human, return_exceptions=True)


async def _hooked(server: LiveKitServer, room: str) -> float:
    start: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    return await _agent_arrival(server, room, start, joined_is_start=True)


async def _terminated(server: LiveKitServer, room: str) -> tuple[float, float]:
    """A human with a microphone and the dispatched agent (answer track published) in ``room``;
    seconds from ``DeleteDispatch`` sent to the agent gone (LiveKit's participant list, polled
    every 20 ms) and to the human seeing it disconnect."""
    human = Human(server, room, "human", listen=False)
    seen: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_disconnected(participant: rtc.RemoteParticipant) -> None:
        if participant.identity.startswith("room-bridge-") and not seen.done():
            seen.set_result(time.monotonic())

    human.room.on("participant_disconnected", on_disconnected)
    await human.join()
    try:
        async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
            made = await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT, room=room)
            )
            await human.wait_until(lambda: bool(human.agent_tracks()), timeout=60)
            start = time.monotonic()
            await lkapi.agent_dispatch.delete_dispatch(made.id, room)
            request = api.ListParticipantsRequest(room=room)
            while any(
                p.identity.startswith("room-bridge-")
                for p in (await lkapi.room.list_participants(request)).participants
            ):
                if time.monotonic() - start > 30:
                    raise TimeoutError("the agent did not leave")
                await asyncio.sleep(0.02)
            gone = time.monotonic() - start
            return gone, await asyncio.wait_for(seen, 30) - start
    finally:
        await human.leave()


def _counter(metrics: str, sample: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def _idle(bridge: ServeProcess) -> None:
    for _ in range(300):
        if not (await bridge.status())["rooms"]:
            return
        await asyncio.sleep(0.1)


def _ms(values: list[float], q: float) -> float | None:
    return round(_pct(values, q) * 1000, 1) if values else None


async def main(rounds: int, terminations: int) -> dict[str, Any]:
    options = EmulatorOptions(api_key=SecretStr(EMULATOR_KEY))
    async with (
        listeners() as (listener,),
        livekit_with_webhooks(listener) as server,
        EmulatorServer(test_settings(), options) as emulator,
        serve(
            server,
            emulator,
            listener=listener,
            agent_name=AGENT,
            rooms="pattern",
            room_patterns="hook-*",
            reconcile_interval="600",
            empty_room_grace="0.5",
        ) as bridge,
    ):
        for _ in range(300):
            if (await bridge.status())["agent_dispatch"]["state"] == "registered":
                break
            await asyncio.sleep(0.1)
        # Warm-up (untimed): the worker process's first room pays its one-off start-up costs.
        await _hooked(server, "hook-warmup")
        await _idle(bridge)
        by_dispatch: list[float] = []
        by_webhook: list[float] = []
        for i in range(rounds):
            # Alternate which way goes first, so neither always follows the other's leaving.
            order = [("dispatch", _dispatched), ("hook", _hooked)]
            for kind, way in order if i % 2 == 0 else order[::-1]:
                took = await way(server, f"{kind}-{i}")
                (by_dispatch if kind == "dispatch" else by_webhook).append(took)
                await _idle(bridge)
        gone: list[float] = []
        seen: list[float] = []
        for i in range(terminations):
            left, noticed = await _terminated(server, f"dispatch-end-{i}")
            gone.append(left)
            seen.append(noticed)
            await _idle(bridge)
        answers = (await bridge.status())["agent_dispatch"]["offer_answer_ms"]
        metrics = (await bridge.get("/metrics")).text
    return {
        "rounds": rounds,
        "offer_to_answer_ms": {"p50": answers["p50"], "p99": answers["p99"], "n": answers["count"]},
        "dispatch_to_agent_in_room_ms": {
            "p50": _ms(by_dispatch, 0.5),
            "p95": _ms(by_dispatch, 0.95),
        },
        "webhook_to_agent_in_room_ms": {
            "p50": _ms(by_webhook, 0.5),
            "p95": _ms(by_webhook, 0.95),
        },
        "delete_dispatch_to_agent_gone_ms": {
            "p50": _ms(gone, 0.5),
            "p99": _ms(gone, 0.99),
            "n": len(gone),
            "left_by_the_bridge": _counter(
                metrics, 'bridge_agent_terminations_total{outcome="left"}'
            ),
        },
        "delete_dispatch_to_human_sees_it_gone_ms": {"p50": _ms(seen, 0.5), "p99": _ms(seen, 0.99)},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--terminations", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rounds, args.terminations))), flush=True)
