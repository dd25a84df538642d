"""The bridge under benchmark, in a process of its own so its CPU and memory are measured alone.

Joins each room given, waits for ``--seconds``, then prints one JSON line of what its sessions
measured (call ready times, per-direction residence inside the bridge) and leaves.

    python -m tests.bench.bridge_process --rooms a,b,c --seconds 30   (settings from env)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from bridge.config import load_settings
from bridge.logs import setup_logging
from bridge.room.worker import RoomWorker


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rooms", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    settings = load_settings(overrides={"log_level": "WARNING"})
    setup_logging(settings.log_level)
    # perf_counter() inside the sessions -> wall clock, to compare with the humans' join times.
    offset = time.time() - time.perf_counter()
    workers = [RoomWorker(settings, room) for room in args.rooms.split(",")]
    await asyncio.gather(*(w.start() for w in workers))
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.sleep(args.seconds)
    ready: dict[str, float] = {}
    uplink: list[float] = []
    downlink: list[float] = []
    dropped = 0
    for worker in workers:
        for identity, session in worker.sessions.items():
            if session.stats.first_ready_at is not None:
                ready[identity] = session.stats.first_ready_at + offset
            uplink += [s * 1000 for s in session.uplink_residence()]
            downlink += [s * 1000 for s in session.downlink_residence()]
            dropped += session.dropped_frames()
    result = {
        "ready_wall": ready,
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
    }
    print(json.dumps(result), flush=True)
    await asyncio.gather(*(w.aclose() for w in workers))


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
