"""Cost benchmark: what a meeting costs, measured on the real bridge against the emulator.

Four variants run at the same time, each in a room of its own on one local livekit-server, each
in a process of its own (its three humans) with its own bridge process
(tests/bench/bridge_process.py, settings as ``BRIDGE_*`` variables), all against one emulator
process. The variants set up one after the other, then their meetings start together:

- ``per_participant`` (one call per human, meeting context on), ``truncation: auto``;
- the same with ``retention_ratio`` (default 0.5);
- ``shared`` (one call for the room), ``truncation: auto``;
- the same with ``retention_ratio``.

In every room three SDK humans follow the same seeded script (tests/bench/scripted_meeting.py)
for ``--minutes`` of real time: turns in rotation of 3-12 s of speech, 1 s apart; every third
utterance a call hears addresses the agent ("Assistant, ..."), which answers under the
``addressed`` policy (about 10 s of speech) while nobody talks over it. The humans watch the
agent's state (``lk.agent.state``) to wait for the end of an answer; they do not subscribe to its
audio (the bridge sends it all the same; the machine is spared decoding it four times over).

Per variant it prints the bridge's own accounting (the room's ``Spend``: cost, cost per minute,
responses, tokens by kind, cached share of the model's input) and checks it against the
emulator's bill: every response's and transcription's usage from
``GET /v1/_emulator/calls/{id}`` for the calls the room used, priced by the same ``Pricer``, and
``bridge_cost_usd_total`` of the bridge process. They must agree to 1e-6 USD, or the bench exits
non-zero. The last line is a summary with the load average seen during the run.

    python -m tests.bench.cost_bench [--minutes 10] [--retention-ratio 0.5] [--seed 17]
                                     [--modes per_participant,shared] [--one-at-a-time]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bridge.billing.cost import Pricer, Spend
from bridge.billing.prices import PRICES_READ
from bridge.local.livekit_server import LiveKitServer, LiveKitServerConfig
from bridge.settings.config import Settings
from tests.bench.scripted_meeting import (
    ANSWER,
    KEY,
    BridgeProcess,
    Tally,
    bridge_env,
    cpu_seconds,
    hold,
    joined,
    script,
    transcripts,
)
from tests.support.emulator_process import emulator_process

TOLERANCE_USD = 1e-6
ADDRESS_EVERY = 3
SETUP_TIMEOUT_S = 240.0
FINISH_TIMEOUT_S = 300.0
# How a variant's process finds the livekit-server and the emulator the parent started.
SERVER_ENV = "COST_BENCH_LIVEKIT"
EMULATOR_ENV = "COST_BENCH_EMULATOR"


@dataclass(frozen=True)
class Variant:
    mode: str  # per_participant | shared
    retention_ratio: float | None

    @classmethod
    def parse(cls, spec: str) -> Variant:
        mode, _, ratio = spec.partition(":")
        return cls(mode, float(ratio) if ratio else None)

    @property
    def spec(self) -> str:
        return self.mode if self.retention_ratio is None else f"{self.mode}:{self.retention_ratio}"

    @property
    def name(self) -> str:
        truncation = "auto" if self.retention_ratio is None else f"ratio{self.retention_ratio}"
        return f"{self.mode}-{truncation}"

    def settings(self) -> dict[str, str]:
        env = {
            "mode": self.mode,
            "response_policy": "addressed",
            "meeting_context": "true",
        }
        if self.retention_ratio is not None:
            env["retention_ratio"] = str(self.retention_ratio)
        return env


async def bill(base_url: str, call_ids: list[str], pricer: Pricer) -> Spend:
    """The emulator's bill for these calls, priced by ``pricer``."""
    spend = Spend()
    async with httpx.AsyncClient(timeout=10) as client:
        for call_id in call_ids:
            response = await client.get(f"{base_url}/_emulator/calls/{call_id}")
            response.raise_for_status()
            call = response.json()
            for response_billed in call["responses"]:
                pricer.response(response_billed["usage"], spend)
            for usage in call["transcriptions"]:
                pricer.transcription(usage, spend)
    return spend


def _check(room: dict[str, Any], metric: float, billed: Spend) -> dict[str, Any]:
    bridge_usd, billed_usd = room["cost_usd"], billed.cost_usd
    agree = (
        bridge_usd is not None
        and billed_usd is not None
        and abs(bridge_usd - billed_usd) <= TOLERANCE_USD
        and abs(metric - billed_usd) <= TOLERANCE_USD
        and room["responses"] == billed.responses
        and room["tokens"] == dict(billed.tokens)
    )
    return {
        "bridge_usd": bridge_usd,
        "bridge_cost_usd_total": metric,
        "emulator_bill_usd": billed_usd,
        "bill_responses": billed.responses,
        "agree": agree,
    }


async def cross_check(
    bridge: BridgeProcess, room: str, base_url: str, pricer: Pricer, *, attempts: int = 15
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The room's spend by the bridge against the emulator's bill, once both are at rest (the
    last turn's transcript or answer may still be on its way): up to ``attempts`` looks, 1 s
    apart. Returns (the bridge's report, the check)."""
    for attempt in range(attempts):
        report = await bridge.peek()
        found = report["rooms"][room]
        check = _check(
            found, report["cost_usd_metric"], await bill(base_url, found["call_ids"], pricer)
        )
        if check["agree"] or attempt == attempts - 1:
            return report, {**check, "looks": attempt + 1}
        await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def run_variant(
    server: LiveKitServer, base_url: str, variant: Variant, args: argparse.Namespace
) -> dict[str, Any]:
    """One variant, in a process of its own: set up, say ready, wait for "go" on stdin, hold the
    meeting, cross-check, return the figures."""
    room = f"cost-{variant.name}-{uuid.uuid4().hex[:6]}"
    env = bridge_env(server, base_url, **variant.settings())
    settings = Settings()  # the same prices and models the bridge process loads
    pricer = Pricer(settings.prices, settings.model, settings.transcription_model)
    async with contextlib.AsyncExitStack() as stack:
        bridge = await stack.enter_async_context(BridgeProcess.start(env, room))
        humans = await stack.enter_async_context(contextlib.AsyncExitStack())
        # The humans speak and watch the agent's state; they need not decode its audio.
        people = await humans.enter_async_context(joined(server, room, listen=False))
        await bridge.calls_ready(1 if variant.mode == "shared" else len(people))
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        turns = script(
            seed=args.seed,
            people=len(people),
            shortest=3.0,
            longest=12.0,
            pause=1.0,
            address_every=ADDRESS_EVERY,
            shared=variant.mode == "shared",
        )
        cpu_before = cpu_seconds(bridge.pid)
        tally: Tally = await hold(people, turns, args.minutes * 60)
        cpu = cpu_seconds(bridge.pid) - cpu_before
        report, check = await cross_check(bridge, room, base_url, pricer)
        await humans.aclose()  # they leave, then the bridge does
        await bridge.stop()
    return summarize(variant, tally=tally, check=check, cpu=cpu, report=report, room=room)


class VariantProcess:
    """A variant's process (this module with ``--variant``): its humans and its bridge."""

    def __init__(self, variant: Variant, proc: asyncio.subprocess.Process) -> None:
        self.variant = variant
        self.proc = proc

    @classmethod
    async def start(
        cls, variant: Variant, server: LiveKitServer, base_url: str, args: argparse.Namespace
    ) -> VariantProcess:
        env = {
            **os.environ,
            SERVER_ENV: json.dumps(
                {"port": server.config.port, "key": server.api_key, "secret": server.api_secret}
            ),
            EMULATOR_ENV: base_url,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.cost_bench",
            "--variant",
            variant.spec,
            "--minutes",
            str(args.minutes),
            "--seed",
            str(args.seed),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(variant, proc)

    async def line(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        return json.loads(line) if line else None

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def aclose(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        await self.proc.wait()


async def run_all(
    server: LiveKitServer, base_url: str, variants: list[Variant], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The variants' processes set up one at a time (on a loaded machine, four bridges and
    twelve humans starting at once make joins time out), then their meetings start together;
    with ``--one-at-a-time`` each variant's meeting runs alone, the next after it."""
    if args.one_at_a_time:
        results = []
        for variant in variants:
            results += await run_all(server, base_url, [variant], _together(args))
        return results
    children: list[VariantProcess] = []
    try:
        for variant in variants:
            child = await VariantProcess.start(variant, server, base_url, args)
            children.append(child)
            if await child.line(SETUP_TIMEOUT_S) is None:
                raise RuntimeError(f"{variant.name}: could not set up (see its errors above)")
        for child in children:
            child.go()
        results = []
        for child in children:
            result = await child.line(args.minutes * 60 + FINISH_TIMEOUT_S)
            if result is None:
                raise RuntimeError(f"{child.variant.name}: ended without a result")
            results.append(result)
        return results
    finally:
        for child in children:
            await child.aclose()


def _together(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "one_at_a_time": False})


def summarize(
    variant: Variant,
    *,
    tally: Tally,
    check: dict[str, Any],
    cpu: float,
    report: dict[str, Any],
    room: str,
) -> dict[str, Any]:
    spent = report["rooms"][room]
    tokens: dict[str, int] = spent["tokens"]
    cached = tokens.get("audio_in_cached", 0) + tokens.get("text_in_cached", 0)
    uncached = tokens.get("audio_in", 0) + tokens.get("text_in", 0)
    minutes = tally.seconds / 60
    cost = spent["cost_usd"]
    return {
        "variant": variant.name,
        "mode": variant.mode,
        "meeting_context": variant.mode == "per_participant",
        "truncation": "auto"
        if variant.retention_ratio is None
        else f"retention_ratio {variant.retention_ratio}",
        "meeting_minutes": round(minutes, 2),
        "turns": tally.turns,
        "addressed": tally.addressed,
        "answered": tally.answered,
        "model_calls": len(spent["call_ids"]),
        "responses": spent["responses"],
        "transcriptions": spent["transcriptions"],
        "cost_usd": None if cost is None else round(cost, 4),
        "cost_per_minute_usd": None if cost is None else round(cost / minutes, 4),
        "cost_per_response_usd": None
        if cost is None
        else round(cost / max(1, spent["responses"]), 4),
        "cached_input_share": round(cached / max(1, cached + uncached), 3),
        "tokens": tokens,
        "cross_check": check,
        "context_items_added": report["context_items_added"],
        "context_items_trimmed": report["context_items_trimmed"],
        "bridge_cpu_cores": round(cpu / max(tally.seconds, 1e-9), 3),
    }


async def sample_load(samples: list[float], every: float = 15.0) -> None:
    while True:
        samples.append(os.getloadavg()[0])
        await asyncio.sleep(every)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--retention-ratio", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--modes", default="per_participant,shared")
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="run the variants' meetings one after the other (2 per-participant meetings at "
        "once need more than two cores)",
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # MODE[:RATIO], in a child process
    args = parser.parse_args(argv)
    if args.variant:
        # Stopped by the parent (SIGTERM): clean up (the bridge process, the humans) on the way.
        main_task = asyncio.current_task()
        assert main_task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
        where = json.loads(os.environ[SERVER_ENV])
        config = LiveKitServerConfig(api_key=where["key"], api_secret=where["secret"])
        config.port = where["port"]
        server = LiveKitServer(config)  # a handle on the parent's server: never started here
        result = await run_variant(
            server, os.environ[EMULATOR_ENV], Variant.parse(args.variant), args
        )
        print(json.dumps(result), flush=True)
        return 0
    variants = [
        Variant(mode, ratio)
        for mode in args.modes.split(",")
        for ratio in (None, args.retention_ratio)
    ]
    options = {"answers": [ANSWER], "transcripts": transcripts(ADDRESS_EVERY)}
    load: list[float] = []
    started = time.monotonic()
    sampler = asyncio.create_task(sample_load(load))
    try:
        async with LiveKitServer() as server, emulator_process(KEY, options) as emulator:
            results = await run_all(server, emulator.base_url, variants, args)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    for result in results:
        print(json.dumps(result), flush=True)
    disagree = [r["variant"] for r in results if not r["cross_check"]["agree"]]
    summary = {
        "minutes": args.minutes,
        "people": 3,
        "prices_read": PRICES_READ,
        "wall_s": round(time.monotonic() - started, 1),
        "load_average_1m": {
            "min": min(load),
            "max": max(load),
            "mean": round(sum(load) / len(load), 2),
        },
        "cost_usd": {r["variant"]: r["cost_usd"] for r in results},
        "bridge_equals_bill": not disagree,
    }
    print(json.dumps(summary, indent=2), flush=True)
    if disagree:
        print(f"bridge accounting differs from the emulator's bill: {disagree}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
