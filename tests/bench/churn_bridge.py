"""The bridge under the churn benchmark, in a process of its own: joins one room and, for each
line ``stats`` on stdin, prints one JSON line of what could leak (tasks, file descriptors,
threads, live peer connections, RSS) and its sessions' state. ``quit`` leaves.

    python -m tests.bench.churn_bridge --room R   (settings from env)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
from collections import Counter
from typing import Any

from aiortc import RTCPeerConnection

from bridge.logs import setup_logging
from bridge.room.worker import RoomWorker
from bridge.settings.config import load_settings


def proc_status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def thread_names() -> dict[str, int]:
    """Threads by name (native ones too: the kernel's view), to tell which kind grows."""
    names: Counter[str] = Counter()
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/comm") as fh:
            names[fh.read().strip()] += 1
    return dict(sorted(names.items()))


def stats(worker: RoomWorker) -> dict[str, Any]:
    gc.collect()
    states = Counter(
        o.connectionState for o in gc.get_objects() if isinstance(o, RTCPeerConnection)
    )
    live_pcs = sum(n for state, n in states.items() if state != "closed")
    sessions = {
        identity: {"calls": s.stats.calls, "failures": dict(s.stats.failures)}
        for identity, s in worker.sessions.items()
    }
    return {
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": proc_status("Threads"),
        "threads_by_name": thread_names(),
        "peer_connections": live_pcs,
        "peer_connection_states": dict(states),
        "rss_mb": round(proc_status("VmRSS") / 1024, 1),
        "sessions": sessions,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--room", required=True)
    args = parser.parse_args()
    settings = load_settings(overrides={"log_level": "WARNING"})
    setup_logging(settings.log_level)
    worker = RoomWorker(settings, args.room)
    await worker.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "quit":
                break
            print(json.dumps(stats(worker)), flush=True)
    finally:
        await worker.aclose()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
