"""Side by side with the peer: the bridge and livekit-agents (livekit-plugins-openai's
``RealtimeModel``) on the same livekit-server and the same emulator, in one run.

Systems, each started as deployed and measured alone while it runs (they take turns, in an
order that alternates from one N to the next):

- ``bridge``: ``room-bridge serve --workers 2`` (agent dispatch, WebRTC to the model);
- ``peer_process``: tests/bench/peer_agent.py in ``.venv-peer`` (WebSocket to the model), the
  default executor: one job process per session, warm ones from a forkserver;
- ``peer_thread``: the same with the thread executor (jobs in the worker process).

For N humans (``--humans 1,5,10``), each in a room of their own, every system is dispatched
explicitly by agent name once its human is in (``CreateDispatch``), then:

- **join → ready**: the human's join returned (connected, microphone published) → the agent's
  ``lk.agent.state`` reached ``listening`` at the human;
- **steady window** (``--seconds``): every human speaks the same script (1.5 s of a tone, 2.5 s
  of silence; the emulator echoes it back), and every third turn barges in 0.4 s into the
  answer. Measured: CPU per session (CPU seconds of the system's whole process tree — serve
  and its workers; or the agent worker, its forkserver and job processes — per session-second;
  the emulator and the humans are other processes), PSS per session ((tree PSS with N sessions
  - the idle tree's) / N, and the tree's total), **barge-in** (speech onset → the answer's last
  loud frame at the human, as tests/bench/latency_bench.py does);
- **what works**: user and agent transcripts on ``lk.transcription`` (final segments per
  human), the agent states seen, answers heard; and with two humans in one room, what each
  hears and whom the model answers when each speaks;
- **added latency** with the loopback voice: in N fresh rooms, one clicker sends a click every
  0.5 s through the system and the emulator's ``loopback`` voice while the N-1 others talk
  through it (subscribed to nothing, so the bench's own process stays light), and a baseline
  clicker does the same through an SDK republisher (tests/bench/republisher.py); added =
  pX(round trip) - p50(baseline) - p50(emulator residence), p50/p95/p99.

    python -m tests.bench.peer_bench [--humans 1,5,10] [--seconds 20] [--systems ...]

Prints one JSON object; ``make bench-peers`` installs the peer's locked virtualenv first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from livekit import api

from bridge.local.livekit_server import LiveKitServer
from bridge.processes import stop_process
from bridge.realtime.session_config import build_session
from bridge.settings.config import load_settings
from tests.bench.latency_bench import Child, Clicker, _emulator_calls, _summary, _warm_up
from tests.bench.realtime_bench import _cpu_seconds
from tests.support.clicks import percentile
from tests.support.dispatch_harness import ServeProcess, serve
from tests.support.emulator_process import emulator_process
from tests.support.env import EMULATOR_KEY, LOOPBACK_ENV
from tests.support.room_harness import Human, TrackAudio

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
PEER_AGENT = ROOT / "tests" / "bench" / "peer_agent.py"
SYSTEMS = ("bridge", "peer_process", "peer_thread")
BRIDGE_AGENT = "bench-bridge"
PEER_AGENT_NAME = "bench-peer"
SPEECH_S, PAUSE_S = 1.5, 2.5


# ---- the systems under test ---------------------------------------------------------------------


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def tree_cpu(root: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in tree(root):
        with contextlib.suppress(OSError):
            out[pid] = _cpu_seconds(pid)
    return out


def tree_pss_mb(root: int) -> float:
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
    return total / 1024


@dataclass
class System:
    name: str
    agent_name: str
    prefix: str  # the agent's identity starts with this
    pid: int = 0
    processes: int = 0


@contextlib.asynccontextmanager
async def run_system(name: str, server: LiveKitServer, base: str, n: int) -> AsyncIterator[System]:
    if name == "bridge":
        async with serve(
            server,
            base,
            workers=2,
            agent_name=BRIDGE_AGENT,
            rooms="metadata",  # dispatch only: no webhook or reconcile brings it anywhere
            max_sessions=str(max(16, 2 * n + 4)),
            empty_room_grace="2",
            reconcile_interval="600",
            log_level="WARNING",
        ) as bridge:
            await wait_registered(bridge)
            yield System(name, BRIDGE_AGENT, "room-bridge-", bridge.proc.pid)
        return
    async with peer_process(server, base, name.removeprefix("peer_")) as proc:
        yield System(name, PEER_AGENT_NAME, "agent-", proc.pid)


async def wait_registered(bridge: ServeProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await bridge.status()
        if (status.get("agent_dispatch") or {}).get("state") == "registered":
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"serve did not register as an agent worker:\n{bridge.output()}")


def peer_session() -> dict[str, Any]:
    """The session the bridge sends, from its own settings (instructions, voice, transcription,
    server VAD), for the peer to use the same."""
    settings = load_settings(overrides={"openai_api_key": EMULATOR_KEY})
    return build_session(settings)


@contextlib.asynccontextmanager
async def peer_process(
    server: LiveKitServer, base: str, executor: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    if not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON} missing: run `make bench-peers` (it installs the peer)")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "PYTHON"))},
        **LOOPBACK_ENV,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "OPENAI_API_KEY": EMULATOR_KEY,
        "PEER_BASE_URL": base,
        "PEER_AGENT_NAME": PEER_AGENT_NAME,
        "PEER_EXECUTOR": executor,
        "PEER_IDLE_PROCESSES": "1",
        "PEER_SESSION": json.dumps(peer_session()),
        "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0",
    }
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        log = Path(tmp) / "peer.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                str(PEER_PYTHON),
                str(PEER_AGENT),
                "start",
                env=env,
                cwd=tmp,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + 60
            while "registered worker" not in log.read_text(errors="replace"):
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"peer did not register:\n{log.read_text()[-3000:]}")
                await asyncio.sleep(0.1)
            yield proc
        finally:
            await stop_process(proc, timeout=20)


async def dispatch(server: LiveKitServer, agent_name: str, room: str) -> None:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lkapi:
        await lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )


async def set_options(base: str, **options: Any) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.patch(f"{base}/_emulator/options", json=options)
        response.raise_for_status()


# ---- the humans ---------------------------------------------------------------------------------


async def wait_ready(human: Human, timeout: float = 60.0) -> float | None:
    """When the agent's ``lk.agent.state`` first read ``listening`` at ``human`` (a change event,
    or the attributes the agent joined with), in ``time.monotonic()``; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        changed = next((at for state, at in human.state_at if state == "listening"), None)
        if changed is not None:
            return changed
        if human.agent_attributes().get("lk.agent.state") == "listening":
            return time.monotonic()
        await asyncio.sleep(0.01)
    return None


async def join_and_dispatch(
    server: LiveKitServer, system: System, humans: list[Human]
) -> list[float | None]:
    """Every human joins (in parallel); each room is dispatched when its human is in; returns
    join → listening in seconds (None: not ready within 60 s)."""

    async def one(human: Human) -> float | None:
        await human.join()
        joined = time.monotonic()
        await dispatch(server, system.agent_name, human.room_name)
        ready = await wait_ready(human)
        return None if ready is None else ready - joined

    return list(await asyncio.gather(*(one(h) for h in humans)))


def loud_after(track: TrackAudio | None, since: float) -> list[float]:
    return [] if track is None else [t for t in track.loud if t > since]


def answer_track(human: Human) -> TrackAudio | None:
    tracks = human.agent_tracks()
    return tracks[0] if tracks else None


async def barge_in(human: Human, freq: float) -> float | None:
    """Speak, wait for the answer, speak into it: speech onset → the answer's last loud frame
    before it went quiet (None: no answer to interrupt)."""
    start = await human.say(SPEECH_S, freq=freq)
    deadline = time.monotonic() + 4.0
    while len(loud_after(answer_track(human), start + SPEECH_S)) < 5:
        if time.monotonic() > deadline:
            await asyncio.sleep(PAUSE_S)
            return None
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.4)  # the answer is playing
    onset = await human.say(0.6, freq=freq)
    await asyncio.sleep(PAUSE_S)
    stop = onset
    for t in loud_after(answer_track(human), onset):  # the last loud frame before the first gap
        if t - stop > 0.15 and stop > onset:
            break
        stop = t
    return stop - onset


async def talk(human: Human, freq: float, until: float, barge_ins: list[float]) -> None:
    turn = 0
    while time.monotonic() < until:
        turn += 1
        if turn % 3 == 0:
            took = await barge_in(human, freq)
            if took is not None:
                barge_ins.append(took)
        else:
            await human.say(SPEECH_S, freq=freq, pause=PAUSE_S)


def functional(human: Human) -> dict[str, Any]:
    finals = human.final_transcripts()
    user = [t for t in finals if t.sender == human.identity]
    agent = [t for t in finals if t.sender != human.identity]
    track = answer_track(human)
    return {
        "user_transcripts": len(user),
        "agent_transcripts": len(agent),
        "states": sorted(set(human.states)),
        "answer_audio_s": round(len(track.loud) * 0.01, 1) if track is not None else 0.0,
    }


# ---- the phases ---------------------------------------------------------------------------------


async def phase_steady(
    server: LiveKitServer, system: System, n: int, seconds: float
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    idle_pss = tree_pss_mb(system.pid)
    humans = [
        Human(server, f"peers-{system.name}-{tag}-{i}", f"h{i}", agent_prefix=system.prefix)
        for i in range(n)
    ]
    try:
        ready = await join_and_dispatch(server, system, humans)
        await asyncio.sleep(2.0)  # every session settled
        barge_ins: list[float] = []
        before = tree_cpu(system.pid)
        wall = time.monotonic()
        until = wall + seconds
        await asyncio.gather(
            *(talk(h, 300.0 + 40 * i, until, barge_ins) for i, h in enumerate(humans))
        )
        wall = time.monotonic() - wall
        after = tree_cpu(system.pid)
        pss = tree_pss_mb(system.pid)
        processes = len(after)
    finally:
        await asyncio.gather(*(h.leave() for h in humans), return_exceptions=True)
    cpu = sum(v - before.get(pid, 0.0) for pid, v in after.items())
    done = [r for r in ready if r is not None]
    checks = [functional(h) for h in humans]
    return {
        "ready": f"{len(done)}/{n}",
        "join_to_ready_ms": _summary(done),
        "cpu_cores_per_session": round(cpu / wall / n, 4),
        "cpu_seconds": round(cpu, 2),
        "window_s": round(wall, 1),
        "pss_mb_per_session": round((pss - idle_pss) / n, 1),
        "pss_mb_tree": round(pss, 1),
        "pss_mb_idle_tree": round(idle_pss, 1),
        "processes": processes,
        "barge_in_ms": _summary(barge_ins),
        "functional": {
            "user_transcripts_per_human": statistics.median(c["user_transcripts"] for c in checks),
            "agent_transcripts_per_human": statistics.median(
                c["agent_transcripts"] for c in checks
            ),
            "humans_with_both_transcripts": sum(
                1 for c in checks if c["user_transcripts"] and c["agent_transcripts"]
            ),
            "states_seen": sorted({s for c in checks for s in c["states"]}),
            "answer_audio_s_per_human": statistics.median(c["answer_audio_s"] for c in checks),
        },
    }


async def phase_two_humans(server: LiveKitServer, system: System) -> dict[str, Any]:
    """Two humans in one room; each speaks in turn: what each hears, whom the model answers."""
    room = f"peers-two-{system.name}-{uuid.uuid4().hex[:6]}"
    a, b = (Human(server, room, who, agent_prefix=system.prefix) for who in ("ada", "bob"))
    result: dict[str, Any] = {}
    try:
        await a.join()
        await b.join()
        await dispatch(server, system.agent_name, room)
        await asyncio.gather(wait_ready(a), wait_ready(b))
        await asyncio.sleep(1.0)
        for speaker in (a, b):
            agent_said = {h.identity: len(agent_finals(h)) for h in (a, b)}
            start = await speaker.say(SPEECH_S, freq=500.0, pause=PAUSE_S + 1.0)
            result[f"{speaker.identity}_speaks"] = {
                "ada_hears_answer_s": round(heard_s(a, start + SPEECH_S), 2),
                "bob_hears_answer_s": round(heard_s(b, start + SPEECH_S), 2),
                "user_transcript_for": [
                    t.sender
                    for t in a.final_transcripts()
                    if t.received_at > start and t.sender in ("ada", "bob")
                ],
                "agent_transcripts_new": {
                    h.identity: len(agent_finals(h)) - agent_said[h.identity] for h in (a, b)
                },
            }
    finally:
        await asyncio.gather(a.leave(), b.leave(), return_exceptions=True)
    return result


def agent_finals(human: Human) -> list[Any]:
    return [t for t in human.final_transcripts() if t.sender not in ("ada", "bob")]


def heard_s(human: Human, since: float) -> float:
    return sum(len(loud_after(t, since)) for t in human.agent_tracks()) * 0.01


async def phase_latency(
    server: LiveKitServer, base: str, system: System, n: int, clicks: int
) -> dict[str, Any]:
    """One clicker through the system with the loopback voice while N-1 other humans talk
    through it (their audio comes back too; they subscribe to nothing, so this process stays
    light), and a baseline clicker through the republisher at the same time."""
    tag = uuid.uuid4().hex[:6]
    earlier = {c["id"] for c in await _emulator_calls(base)}
    await set_options(base, voice_mode="loopback")
    env = {
        **os.environ,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
    }
    clicker = Clicker(server, f"peers-lat-{system.name}-{tag}", "c0", system.prefix)
    load = [
        Human(
            server,
            f"peers-lat-{system.name}-{tag}-{i}",
            f"l{i}",
            auto_subscribe=False,
            listen=False,
            agent_prefix=system.prefix,
        )
        for i in range(1, n)
    ]
    base_room = f"peers-lat-base-{tag}"
    try:
        async with Child.start(env, "-m", "tests.bench.republisher", "--room", base_room) as rep:
            baseline = Clicker(server, base_room, "c-base", "republisher")
            try:
                await asyncio.gather(
                    *(c.join() for c in (clicker, baseline)), *(h.join() for h in load)
                )
                rooms = [clicker.room_name, *(h.room_name for h in load)]
                await asyncio.gather(*(dispatch(server, system.agent_name, r) for r in rooms))
                await asyncio.gather(*(wait_ready(h) for h in load))
                await asyncio.gather(_warm_up(clicker), _warm_up(baseline))
                for c in (clicker, baseline):
                    c.sent.onsets.clear()
                    c.heard.onsets.clear()
                until = time.monotonic() + clicks * 0.5
                await asyncio.gather(
                    *(c.send(clicks, 0.5) for c in (clicker, baseline)),
                    *(talk(h, 300.0 + 40 * i, until, []) for i, h in enumerate(load)),
                )
                await asyncio.sleep(1.0)
                await rep.stop()
            finally:
                await asyncio.gather(
                    *(c.leave() for c in (clicker, baseline)),
                    *(h.leave() for h in load),
                    return_exceptions=True,
                )
    finally:
        await set_options(base, voice_mode="echo")
    trips = clicker.trips(0.45)
    base_trips = baseline.trips(0.45)
    residence = [
        c["loopback"]["residence_ms"]["p50"]
        for c in await _emulator_calls(base)
        if c["id"] not in earlier and c.get("loopback", {}).get("residence_ms", {}).get("p50")
    ]
    emulator_p50 = statistics.median(residence) if residence else 0.0
    base_p50 = percentile(base_trips, 0.5)
    added: dict[str, Any] = {}
    if base_p50 is not None and trips:
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value = percentile(trips, q)
            assert value is not None
            added[name] = round((value - base_p50) * 1000 - emulator_p50, 1)
    return {
        "clicks_back": f"{len(trips)}/{clicks}",
        "added_ms": added,
        "round_trip_ms": _summary(trips),
        "baseline_round_trip_ms": _summary(base_trips),
        "emulator_residence_ms_p50": emulator_p50,
    }


# ---- the run ------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"peer_bench {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


async def measure(
    name: str, server: LiveKitServer, base: str, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    log(f"{name}, {n} humans: starting")
    earlier = {c["id"] for c in await _emulator_calls(base)}
    async with run_system(name, server, base, n) as system:
        await asyncio.sleep(3.0)  # warm processes started, registration settled
        log(f"{name}, {n} humans: steady")
        result: dict[str, Any] = {"steady": await phase_steady(server, system, n, args.seconds)}
        if args.clicks:
            log(f"{name}, {n} humans: latency")
            try:
                result["latency"] = await phase_latency(server, base, system, n, args.clicks)
            except (RuntimeError, TimeoutError) as exc:  # a system that cannot keep up
                result["latency"] = {"error": str(exc)}
        if n == 1:
            log(f"{name}: two humans in one room")
            result["two_humans_one_room"] = await phase_two_humans(server, system)
        log(f"{name}, {n} humans: stopping")
    # What the emulator saw of this system's sessions: protocol errors would show here.
    calls = [c for c in await _emulator_calls(base) if c["id"] not in earlier]
    errors = [e for c in calls for e in c["errors"]]
    result["emulator"] = {
        "sessions": len(calls),
        "transports": sorted({c.get("transport", "") for c in calls}),
        "errors": len(errors),
        "first_errors": errors[:5],
    }
    return result


def _get(result: dict[str, Any], *path: str) -> float | None:
    value: Any = result
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) else None


# (label, where in a system's result): bridge / peer, and peer - bridge.
RATIOS: list[tuple[str, tuple[str, ...]]] = [
    ("cpu_per_session_ratio", ("steady", "cpu_cores_per_session")),
    ("pss_per_session_ratio", ("steady", "pss_mb_per_session")),
]
DIFFERENCES: list[tuple[str, tuple[str, ...]]] = [
    ("added_latency_p50_lower_by_ms", ("latency", "added_ms", "p50")),
    ("join_to_ready_p50_faster_by_ms", ("steady", "join_to_ready_ms", "p50")),
]


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The bridge against each peer executor at every N: the issue's targets."""
    out: dict[str, Any] = {}
    for n, by_system in results.items():
        bridge = by_system.get("bridge")
        if bridge is None:
            continue
        row: dict[str, Any] = {}
        for peer in ("peer_process", "peer_thread"):
            other = by_system.get(peer)
            if other is None:
                continue
            figures: dict[str, Any] = {}
            for label, path in RATIOS:
                ours, theirs = _get(bridge, *path), _get(other, *path)
                figures[label] = round(ours / theirs, 3) if ours is not None and theirs else None
            for label, path in DIFFERENCES:
                ours, theirs = _get(bridge, *path), _get(other, *path)
                if ours is not None and theirs is not None:
                    figures[label] = round(theirs - ours, 1)
            row[peer] = figures
        out[n] = row
    return out


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--humans", default="1,5,10")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clicks", type=int, default=20, help="per clicker; 0: no latency phase")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    args = parser.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    results: dict[str, dict[str, Any]] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    async with (
        LiveKitServer() as server,
        emulator_process(EMULATOR_KEY, {"voice_mode": "echo"}) as emulator,
    ):
        for index, n in enumerate(int(x) for x in args.humans.split(",") if x):
            order = systems if index % 2 == 0 else systems[::-1]
            results[str(n)] = {}
            for name in order:
                results[str(n)][name] = await measure(name, server, emulator.base_url, n, args)
                log(json.dumps(results[str(n)][name]))
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "bench": "peers",
                "started": started,
                "command": "python -m tests.bench.peer_bench " + " ".join(argv or sys.argv[1:]),
                "load_average_after": [round(x, 2) for x in load],
                "results": results,
                "bridge_vs_peer": ratios(results),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
