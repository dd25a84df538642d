"""Latency benchmark: what the bridge adds between a person's mouth and the model, and back.

Everything real, on loopback: a livekit-server, the emulator in ``voice_mode = "loopback"``
(every packet straight back) in its own process, the bridge in its own process
(tests/bench/bridge_process.py), and SDK "humans" in this one.

- **Round trip**: a human sends a click every ``--spacing`` s into a room with the bridge and
  times each click's return on the agent's track. At the same time a second human does the same
  in a room with the **baseline** (tests/bench/republisher.py: an SDK participant that republishes
  what it hears: LiveKit's two legs and the SDK's buffers, once each way). ``bridge_added_ms``
  pX = pX(bridge round trip) - p50(baseline round trip) - p50(emulator residence).
- **Split**: the bridge process records each click's onset at its boundaries (mic frame in, to
  the Opus encoder, back from our RTP playout, handed to LiveKit's source); all processes use
  CLOCK_MONOTONIC (``time.perf_counter``), so each stage is a difference of onsets.
- **Barge-in** (emulator in tone mode): while an answer plays the human speaks; time from their
  speech onset to the answer's last audio in the room, minus the baseline round trip; and minus
  the emulator's detection time (``min_speech_ms``) as ``beyond_detection_ms``.
- **Join -> call ready** at 1 and ``--join-humans`` humans joining at once, each in their room.

    python -m tests.bench.latency_bench [--clicks 40] [--impair 0.05,0.02]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
from livekit import rtc

from bridge.local.livekit_server import LiveKitServer
from tests.bench.realtime_bench import KEY
from tests.support.clicks import OnsetDetector, click_frames, match, percentile
from tests.support.emulator_process import emulator_process
from tests.support.env import LOOPBACK_ENV
from tests.support.livekit import human_token, room_options
from tests.support.room_harness import Human, TrackAudio

SAMPLE_RATE = 48_000
FRAME_10MS = SAMPLE_RATE // 100
BOUNDARIES = ["uplink_in", "uplink_out", "downlink_in", "downlink_out"]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "p50": _ms(percentile(values, 0.5)),
        "p95": _ms(percentile(values, 0.95)),
        "p99": _ms(percentile(values, 0.99)),
        "n": len(values),
    }


class Clicker:
    """A human that sends clicks (10 ms frames, real-time pace) and finds them again on the
    tracks of ``listen_to``."""

    def __init__(self, server: LiveKitServer, room: str, identity: str, listen_to: str) -> None:
        self.server = server
        self.room_name = room
        self.identity = identity
        self.listen_to = listen_to
        self.room = rtc.Room()
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
        self.sent = OnsetDetector()
        self.heard = OnsetDetector()
        self.answer_track = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def join(self) -> None:
        self.room.on("track_subscribed", self._on_track)
        token = human_token(self.server, self.room_name, self.identity)
        await asyncio.wait_for(self.room.connect(self.server.url, token, room_options()), 15)
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)

    def _on_track(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
    ) -> None:
        if isinstance(track, rtc.RemoteAudioTrack) and who.identity.startswith(self.listen_to):
            self._tasks.append(asyncio.create_task(self._listen(track)))
            self.answer_track.set()

    async def _listen(self, track: rtc.RemoteAudioTrack) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=10)
        try:
            async for event in stream:
                pcm = np.frombuffer(event.frame.data, dtype=np.int16)
                self.heard.push(pcm, time.perf_counter())
        finally:
            await stream.aclose()

    async def send(self, clicks: int, spacing: float) -> None:
        """``clicks`` clicks ``spacing`` s apart, silence between, paced by the clock."""
        per_click = round(spacing * 100)
        click = click_frames(FRAME_10MS)
        quiet = np.zeros(FRAME_10MS, dtype=np.int16)
        start = time.perf_counter()
        for i in range(clicks * per_click):
            pcm = click[i % per_click] if i % per_click < len(click) else quiet
            await self.source.capture_frame(rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, len(pcm)))
            self.sent.push(pcm, time.perf_counter())
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.01 - time.perf_counter()))

    def trips(self, window: float) -> list[float]:
        return match(self.sent.onsets, self.heard.onsets, window)

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.wait_for(self.room.disconnect(), 10)
        await self.source.aclose()


def _env(server: LiveKitServer, base: str) -> dict[str, str]:
    return {
        **os.environ,
        **LOOPBACK_ENV,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": base,
        "BRIDGE_EMPTY_ROOM_GRACE": "600",
        "BRIDGE_VIDEO_ENABLED": "false",
    }


class Child:
    """A bench child process that prints {"ready": true}, then reports when told (stdin)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, env: dict[str, str], *argv: str) -> AsyncIterator[Child]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = cls(proc)
        try:
            assert proc.stdout is not None
            await asyncio.wait_for(proc.stdout.readline(), 60)
            yield child
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            await proc.wait()

    async def stop(self, timeout: float = 15.0) -> None:
        """For children that only stop on the line (the republisher)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        await asyncio.wait_for(self.proc.wait(), timeout)

    async def report(self, timeout: float = 60.0, *, peek: bool = False) -> dict[str, Any]:
        """What the child measured; with ``peek`` it goes on (asked again later)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"peek\n" if peek else b"report\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        result: dict[str, Any] = json.loads(line)
        return result


async def _emulator_calls(base: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{base}/_emulator/calls", timeout=5)
        calls: list[dict[str, Any]] = response.json()
        return calls


async def _set_voice(base: str, mode: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.patch(f"{base}/_emulator/options", json={"voice_mode": mode})
        response.raise_for_status()


async def _warm_up(clicker: Clicker) -> None:
    """Until a click comes back: the call (or republisher) is up and the path is warm."""
    await asyncio.wait_for(clicker.answer_track.wait(), 90)
    for _ in range(30):
        before = len(clicker.heard.onsets)
        await clicker.send(1, 0.5)
        if len(clicker.heard.onsets) > before:
            return
    raise RuntimeError(f"{clicker.room_name}: no click came back")


def _stages(sent: list[float], onsets: dict[str, list[float]], heard: list[float]) -> Any:
    """Per-stage times: each click followed from one boundary to the next."""
    points = [("human_send", sent)] + [(p, onsets.get(p, [])) for p in BOUNDARIES]
    points.append(("human_hear", heard))
    out: dict[str, Any] = {}
    for (a, ta), (b, tb) in itertools.pairwise(points):
        out[f"{a}->{b}"] = _summary(match(ta, tb, 0.3))
    return out


async def bench_round_trip(
    server: LiveKitServer,
    base: str,
    *,
    clicks: int,
    spacing: float,
    impair: str | None,
) -> dict[str, Any]:
    tag = f"{int(time.time() * 1000) % 10**8}"
    bridge_room, base_room = f"lat-bridge-{tag}", f"lat-base-{tag}"
    env = _env(server, base)
    argv = ["-m", "tests.bench.bridge_process", "--rooms", bridge_room, "--probe"]
    if impair:
        argv += ["--impair", impair]
    window = spacing * 0.9
    async with (
        Child.start(env, *argv) as bridge,
        Child.start(env, "-m", "tests.bench.republisher", "--room", base_room) as republisher,
    ):
        via_bridge = Clicker(server, bridge_room, "human-b", "room-bridge-")
        via_base = Clicker(server, base_room, "human-r", "republisher")
        try:
            await asyncio.gather(via_bridge.join(), via_base.join())
            await asyncio.gather(_warm_up(via_bridge), _warm_up(via_base))
            for c in (via_bridge, via_base):
                c.sent.onsets.clear()
                c.heard.onsets.clear()
            await asyncio.gather(via_bridge.send(clicks, spacing), via_base.send(clicks, spacing))
            await asyncio.sleep(1.0)
            inside = await bridge.report()
            await republisher.stop()
        finally:
            await asyncio.gather(via_bridge.leave(), via_base.leave())
    bridge_trips = via_bridge.trips(window)
    base_trips = via_base.trips(window)
    loopback = [c["loopback"] for c in await _emulator_calls(base) if "loopback" in c]
    emulator_p50 = statistics.median(
        [c["residence_ms"]["p50"] for c in loopback if c["residence_ms"]["p50"] is not None]
        or [0.0]
    )
    base_p50 = percentile(base_trips, 0.5)
    added: dict[str, Any] = {}
    if base_p50 is not None and bridge_trips:
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value = percentile(bridge_trips, q)
            assert value is not None
            added[name] = round((value - base_p50) * 1000 - emulator_p50, 1)
    sent = list(via_bridge.sent.onsets)
    return {
        "impairment": impair,
        "clicks_sent": clicks,
        "clicks_back": {"bridge": len(bridge_trips), "baseline": len(base_trips)},
        "bridge_added_ms": added,
        "round_trip_ms": {"bridge": _summary(bridge_trips), "baseline": _summary(base_trips)},
        "emulator_residence_ms_p50": emulator_p50,
        "split_ms": _stages(sent, inside["onsets"], via_bridge.heard.onsets),
        "source_queue_ms": inside["source_queue_ms"],
        "playout": inside["playout"],
        "frames_dropped": inside["frames_dropped"],
    }


def _has_answer_track(human: Human) -> bool:
    return bool(human.agent_tracks())


def _louder(track: TrackAudio, frames: int) -> bool:
    return len(track.loud) > frames


async def bench_barge_in(
    server: LiveKitServer, base: str, rounds: int, baseline_ms: float | None
) -> dict[str, Any]:
    room = f"lat-barge-{int(time.time() * 1000) % 10**8}"
    await _set_voice(base, "tone")
    argv = ["-m", "tests.bench.bridge_process", "--rooms", room]
    times: list[float] = []
    try:
        async with Child.start(_env(server, base), *argv) as bridge:
            human = Human(server, room, "barger")
            try:
                await human.join()
                await human.wait_until(lambda: bool(human.agent_tracks()), 30)
                await asyncio.sleep(1.0)
                await human.say(0.8, freq=440)
                for _ in range(rounds):
                    track = human.agent_tracks()[0]
                    seen = len(track.loud)
                    await human.wait_until(functools.partial(_louder, track, seen + 5), 15)
                    await asyncio.sleep(0.4)  # the answer is playing
                    onset = await human.say(0.6, freq=440)
                    await asyncio.sleep(1.0)
                    loud = [t for t in track.loud if t > onset]
                    stop = onset
                    for t in loud:  # the last loud frame before the first gap
                        if t - stop > 0.15 and stop > onset:
                            break
                        stop = t
                    times.append(stop - onset)
            finally:
                await human.leave()
            await bridge.report()
    finally:
        await _set_voice(base, "loopback")
    values = [t * 1000 for t in times]
    median = statistics.median(values) if values else None
    minus = None if median is None or baseline_ms is None else round(median - baseline_ms, 1)
    detection = 60  # the emulator's min_speech_ms (its default)
    return {
        "rounds": len(values),
        "speech_to_silence_ms_p50": round(median, 1) if median is not None else None,
        "minus_baseline_ms": minus,
        "beyond_detection_ms": None if minus is None else round(minus - detection, 1),
        "all_ms": [round(v, 1) for v in values],
    }


async def bench_join(server: LiveKitServer, base: str, n: int) -> dict[str, Any]:
    """``n`` humans join at once, each in their own room: human joined (mic published) -> their
    call is ready, and where the time went inside the bridge (perf_counter, the same clock in
    both processes): joined -> session started (the microphone subscribed), -> agent track
    published, -> first call connected, -> ready (the later of the two, and the mic attached)."""
    tag = f"{int(time.time() * 1000) % 10**8}"
    rooms = [f"lat-join-{n}-{tag}-{i}" for i in range(n)]
    argv = ["-m", "tests.bench.bridge_process", "--rooms", ",".join(rooms)]
    async with Child.start(_env(server, base), *argv) as bridge:
        await asyncio.sleep(1.0)
        people = [Human(server, room, f"joiner-{i}") for i, room in enumerate(rooms)]
        joined: dict[str, float] = {}

        async def join(person: Human) -> None:
            await person.join()
            joined[person.identity] = time.perf_counter()

        async def listening(person: Human) -> None:
            with contextlib.suppress(TimeoutError):  # counted as not ready below
                await person.wait_until(lambda: "listening" in person.states, 30)

        try:
            await asyncio.gather(*(join(p) for p in people))
            await asyncio.gather(*(listening(p) for p in people))
            # `listening` comes at the first microphone frame, while the first call may still
            # be connecting: wait (bounded) for every call to be ready.
            deadline = time.monotonic() + 30
            inside = await bridge.report(peek=True)
            while len(inside["ready_perf"]) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                inside = await bridge.report(peek=True)
            inside = await bridge.report()
        finally:
            await asyncio.gather(*(p.leave() for p in people))
    ready = [
        inside["ready_perf"][who] - at for who, at in joined.items() if who in inside["ready_perf"]
    ]
    steps: dict[str, list[float]] = {}
    for who, at in joined.items():
        marks = inside["start_steps_perf"].get(who, {})
        for step in ("started", "ready"):
            if marks.get(step) is not None:
                steps.setdefault(f"joined->{step}", []).append(marks[step] - at)
        for step in ("published", "connected"):
            if marks.get("started") is not None and marks.get(step) is not None:
                steps.setdefault(f"started->{step}", []).append(marks[step] - marks["started"])
    return {
        "humans": n,
        "ready": len(ready),
        **_summary(ready),
        "split_ms_p50": {k: round(statistics.median(v) * 1000, 1) for k, v in steps.items()},
    }


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--spacing", type=float, default=0.5)
    parser.add_argument("--impair", help="LOSS,JITTER_S on the model's audio (e.g. 0.05,0.02)")
    parser.add_argument("--barge-ins", type=int, default=5)
    parser.add_argument("--join-humans", default="1,10")
    args = parser.parse_args(argv)
    async with (
        LiveKitServer() as server,
        emulator_process(KEY, {"voice_mode": "loopback"}) as emulator,
    ):
        trip = await bench_round_trip(
            server,
            emulator.base_url,
            clicks=args.clicks,
            spacing=args.spacing,
            impair=args.impair,
        )
        baseline = trip["round_trip_ms"]["baseline"]["p50"]
        result: dict[str, Any] = {"round_trip": trip}
        if args.barge_ins:
            result["barge_in"] = await bench_barge_in(
                server, emulator.base_url, args.barge_ins, baseline
            )
        result["join_to_ready_ms"] = [
            await bench_join(server, emulator.base_url, int(n))
            for n in args.join_humans.split(",")
            if n
        ]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
