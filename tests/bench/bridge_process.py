"""The bridge under benchmark, in a process of its own so its CPU and memory are measured alone.

Joins each room given, waits for ``--seconds``, then prints one JSON line of what its sessions
measured (call ready times, per-direction residence inside the bridge) and leaves.

    python -m tests.bench.bridge_process --rooms a,b,c --seconds 30   (settings from env)

``--probe`` also records click onsets at the bridge's boundaries, ``--impair`` loses and jitters
the model's packets (both passed to the room workers as ``Instruments``). Without ``--seconds``
it reports when a line arrives on stdin: ``peek`` reports and goes on, any other line reports
and leaves. Each report also says what every room spent by the bridge's own accounting (its
``Spend``, and ``bridge_cost_usd_total``) and the ids of the model calls its sessions used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from bridge.audio import Pcm
from bridge.logs import setup_logging
from bridge.metrics import COST_USD
from bridge.realtime.instruments import Instruments
from bridge.realtime.playout import Impairment
from bridge.room import supervisor
from bridge.room.worker import RoomWorker
from bridge.settings.config import load_settings
from bridge.tracing.export import start_tracing
from tests.support.clicks import OnsetDetector


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Probe:
    """Click onsets at each boundary of the bridge (see bridge/realtime/instruments.py), in
    ``time.perf_counter()`` (CLOCK_MONOTONIC: the same clock in every process on the machine)."""

    def __init__(self) -> None:
        self.detectors: dict[str, OnsetDetector] = {}

    def __call__(self, point: str, pcm: Pcm, at: float) -> None:
        detector = self.detectors.get(point)
        if detector is None:
            detector = self.detectors[point] = OnsetDetector()
        detector.push(pcm, at)


def _cost_usd_metric() -> float:
    """``bridge_cost_usd_total`` over every model, as this process counted it."""
    return sum(
        sample.value
        for metric in COST_USD.collect()
        for sample in metric.samples
        if sample.name == "bridge_cost_usd_total"
    )


class CallsUsed(logging.Filter):
    """The model calls each room's sessions used, from the sessions' own "session call ready"
    records (one per call a session takes up, also of sessions that have ended since); other
    records below WARNING are dropped as before."""

    def __init__(self) -> None:
        super().__init__()
        self.by_room: dict[str, list[str]] = defaultdict(list)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "session call ready":
            room, call_id = getattr(record, "room", None), getattr(record, "call_id", None)
            if isinstance(room, str) and isinstance(call_id, str):
                self.by_room[room].append(call_id)
        return record.levelno >= logging.WARNING

    def install(self) -> None:
        session_logger = logging.getLogger(supervisor.__name__)
        session_logger.setLevel(logging.INFO)
        session_logger.addFilter(self)


def _rooms(workers: list[RoomWorker], calls: CallsUsed) -> dict[str, dict[str, Any]]:
    """Each room's spend by the bridge's own accounting, and the model calls it used."""
    return {
        w.room_name: {
            "cost_usd": w.cost.spend.cost_usd,  # unrounded, to compare with the bill
            **{k: v for k, v in w.cost.spend.summary().items() if k != "cost_usd"},
            "transcriptions": w.cost.spend.transcriptions,
            "call_ids": list(calls.by_room.get(w.room_name, [])),
        }
        for w in workers
    }


def _report(
    workers: list[RoomWorker], offset: float, probe: Probe | None, calls: CallsUsed
) -> dict[str, Any]:
    """What the sessions measured (times in perf_counter, ``*_wall`` with ``offset`` added)."""
    ready: dict[str, float] = {}
    steps: dict[str, dict[str, float | None]] = {}
    uplink: list[float] = []
    downlink: list[float] = []
    dropped = 0
    for worker in workers:
        for identity, session in worker.sessions.items():
            marks = session.stats
            if marks.first_ready_at is not None:
                ready[identity] = marks.first_ready_at + offset
            steps[identity] = {
                "started": marks.started_at,
                "published": marks.published_at,
                "connected": marks.first_connected_at,
                "ready": marks.first_ready_at,
            }
            uplink += [s * 1000 for s in session.media.uplink_residence()]
            downlink += [s * 1000 for s in session.media.downlink_residence()]
            dropped += session.media.dropped_frames()
    playout = {"packets": 0, "concealed": 0, "late": 0, "held_packets": 0, "held_ms": 0.0}
    source_queue: list[float] = []
    for worker in workers:
        for session in worker.sessions.values():
            pump = session.media.pump
            if pump is not None:
                source_queue += [s * 1000 for s in pump.source_queue]
            call = session.call
            if call is not None and call.playout is not None:
                stats = call.playout.stats
                playout["packets"] += stats.packets
                playout["concealed"] += stats.concealed
                playout["late"] += stats.late
                playout["held_packets"] += stats.held_packets
                playout["held_ms"] += round(stats.held_seconds * 1000, 1)
    result = {
        "ready_wall": ready,
        "ready_perf": {k: v - offset for k, v in ready.items()},
        "start_steps_perf": steps,
        "onsets": {k: d.onsets for k, d in probe.detectors.items()} if probe else {},
        "playout": playout,
        "source_queue_ms": {
            "p50": _pct(source_queue, 0.5),
            "p99": _pct(source_queue, 0.99),
            "samples": len(source_queue),
        },
        "uplink_ms": {
            "p50": _pct(uplink, 0.5),
            "p99": _pct(uplink, 0.99),
            "mean": statistics.fmean(uplink) if uplink else None,
            "samples": len(uplink),
        },
        "downlink_ms": {
            "p50": _pct(downlink, 0.5),
            "p99": _pct(downlink, 0.99),
            "mean": statistics.fmean(downlink) if downlink else None,
            "samples": len(downlink),
        },
        "frames_dropped": dropped,
        "model_calls": sum(s.stats.calls for w in workers for s in w.sessions.values()),
        "responses": sum(w.usage.responses for w in workers),
        "tokens": dict(sum((w.usage.tokens for w in workers), Counter())),  # by price kind
        "context_items_added": sum(
            s.conversation.added for w in workers for s in w.sessions.values()
        ),
        "context_items_trimmed": sum(
            s.conversation.trimmed for w in workers for s in w.sessions.values()
        ),
        "rooms": _rooms(workers, calls),
        "cost_usd_metric": _cost_usd_metric(),
    }
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rooms", required=True)
    parser.add_argument("--seconds", type=float, help="run this long (default: until stdin says)")
    parser.add_argument("--probe", action="store_true", help="record click onsets at boundaries")
    parser.add_argument("--impair", help="LOSS,JITTER_S on the model's audio, e.g. 0.05,0.02")
    args = parser.parse_args()
    settings = load_settings(overrides={"log_level": "WARNING"})
    setup_logging(settings.log_level)
    calls = CallsUsed()
    calls.install()
    probe = Probe() if args.probe else None
    impairment = None
    if args.impair:
        loss, jitter = (float(x) for x in args.impair.split(","))
        impairment = Impairment(loss, jitter, seed=1)
    instruments = Instruments(probe=probe, impairment=impairment)
    # perf_counter() inside the sessions -> wall clock, to compare with the humans' join times.
    offset = time.time() - time.perf_counter()
    workers = [
        RoomWorker(settings, room, instruments=instruments) for room in args.rooms.split(",")
    ]
    await asyncio.gather(*(w.start() for w in workers))
    print(json.dumps({"ready": True}), flush=True)
    if args.seconds is not None:
        await asyncio.sleep(args.seconds)
    else:
        while (await asyncio.to_thread(sys.stdin.readline)).strip() == "peek":
            print(json.dumps(_report(workers, offset, probe, calls)), flush=True)
    print(json.dumps(_report(workers, offset, probe, calls)), flush=True)
    await asyncio.gather(*(w.aclose() for w in workers))


if __name__ == "__main__":
    # Traces when the environment names an OTLP endpoint (room_bench --traces), as `join` does.
    tracing = start_tracing("bench")
    asyncio.run(main())
    tracing.shutdown()
    sys.exit(0)
